r"""What unstructured sparsity buys on LiteRT 2 (issue 37's probes, reproduced).

Two probes, each timed side by side in one process, in turn, with the
median and spread of `--repeats` repeats (batch 1 unless stated, 2 threads):

1. XNNPACK's sparse inference path (float, meant for MobileNet-like
   networks: a first 3x3 stride-2 convolution on 3 channels, 1x1
   convolutions with at least 2/3 zeros, a final mean): a MobileNet-like
   network at 96x96 whose 1x1 convolutions are 80% or 90% zero (by
   magnitude), converted with `Optimize.EXPERIMENTAL_SPARSITY`, against the
   same network dense; with their file sizes.
2. LiteRT's own block-sparse fully connected kernel (float 1x4 blocks,
   XNNPACK off: `BUILTIN_WITHOUT_DEFAULT_DELEGATES`) on the paper's
   FashionMNIST network (784-128-128-10) and a 1024-wide one, 90% of the
   1x4 blocks of each hidden kernel zero, against the dense model on
   XNNPACK (what one would ship) and on LiteRT's own dense kernel.

Random weights (speed does not depend on training). Run:

  python -m benchmarks.litert_sparse_probes --repeats=5 \
      --output=benchmarks/results/litert_sparse_probes.md
"""

import os
import platform
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf  # At import: not inside app.run's main (flag_utils.run_main).

from benchmarks import runs

_REPEATS = flags.DEFINE_integer('repeats', 5, 'Repeats of each timing, in turn.')
_SECONDS = flags.DEFINE_float('seconds', 2.0, 'Timed seconds per model and repeat.')
_THREADS = flags.DEFINE_integer('threads', 2, 'Interpreter threads.')
_OUTPUT = flags.DEFINE_string('output', None, 'Markdown file for the tables.')


def mobilenet_like(width: int = 64, blocks: int = 4, size: int = 96) -> tf.keras.Model:
  layers = tf.keras.layers
  inputs = tf.keras.Input((size, size, 3))
  x = layers.Conv2D(32, 3, strides=2, padding='same', activation='relu')(inputs)
  channels = 32
  for i in range(blocks):
    x = layers.DepthwiseConv2D(3, strides=2 if i % 2 else 1, padding='same',
                               activation='relu')(x)
    channels = width * (2 ** (i // 2))
    x = layers.Conv2D(channels, 1, activation='relu')(x)
  x = layers.GlobalAveragePooling2D()(x)
  return tf.keras.Model(inputs, layers.Dense(10)(x))


def fc_model(width: int) -> tf.keras.Model:
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(784,)),
      tf.keras.layers.Dense(width, activation='relu'),
      tf.keras.layers.Dense(width, activation='relu'),
      tf.keras.layers.Dense(10)])


def prune_pointwise(model: tf.keras.Model, sparsity: float) -> tf.keras.Model:
  """A copy whose 1x1 convolutions have the `sparsity` smallest |w| zero."""
  pruned = tf.keras.models.clone_model(model)
  pruned.set_weights(model.get_weights())
  for layer in pruned.layers:
    if isinstance(layer, tf.keras.layers.Conv2D) and layer.kernel_size == (1, 1):
      kernel = layer.kernel.numpy()
      threshold = np.quantile(np.abs(kernel), sparsity)
      layer.kernel.assign(np.where(np.abs(kernel) <= threshold, 0.0, kernel))
  return pruned


def prune_blocks(model: tf.keras.Model, sparsity: float, block: int = 4) -> tf.keras.Model:
  """A copy whose hidden Dense kernels have `sparsity` of their 1 x `block` blocks zero.

  Blocks run along the output dimension of the (in, out) kernel, which TFLite
  stores as (out, in): 1x4 blocks there are 4 consecutive inputs of one
  output, so blocks are taken along the kernel's first axis here.
  """
  pruned = tf.keras.models.clone_model(model)
  pruned.set_weights(model.get_weights())
  for layer in pruned.layers[:-1]:
    kernel = layer.kernel.numpy()  # (in, out)
    blocks = kernel.reshape(kernel.shape[0] // block, block, kernel.shape[1])
    norms = np.abs(blocks).sum(axis=1)
    threshold = np.quantile(norms, sparsity)
    keep = (norms > threshold)[:, None, :]
    layer.kernel.assign((blocks * keep).reshape(kernel.shape))
  return pruned


def convert(model: tf.keras.Model, sparse: bool, batch: int) -> bytes:
  spec = tf.TensorSpec((batch,) + tuple(model.input_shape[1:]), tf.float32)
  function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
  converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
  if sparse:
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
  return converter.convert()


def runner(flatbuffer: bytes, xnnpack: bool = True):
  from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
  resolver = (litert.OpResolverType.AUTO if xnnpack
              else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
  interp = litert.Interpreter(model_content=flatbuffer, num_threads=_THREADS.value,
                              experimental_op_resolver_type=resolver)
  interp.allocate_tensors()
  inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
  batch = np.random.default_rng(0).random(inp['shape'], np.float32)

  def run():
    interp.set_tensor(inp['index'], batch)
    interp.invoke()
    return interp.get_tensor(out['index'])
  return run


def ms_per_batch(run, seconds: float) -> float:
  run()
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    run()
    count += 1
  return 1000 * (time.perf_counter() - start) / count


def time_in_turn(runners: dict) -> dict:
  """{name: [ms per batch, one per repeat]}, the runners timed in turn each repeat."""
  found = {name: [] for name in runners}
  for _ in range(_REPEATS.value):
    for name, run in runners.items():
      found[name].append(ms_per_batch(run, _SECONDS.value))
  return found


def row(name, times, reference, size=None):
  median = float(np.median(times))
  spread = f'{min(times):.3f}-{max(times):.3f}'
  ratio = float(np.median(reference)) / median
  size = '' if size is None else f' {size:,} |'
  return f'| {name} | {median:.3f} | {spread} | {ratio:.2f}x |{size}'


def probe_xnnpack_sparse_inference(lines):
  tf.keras.utils.set_random_seed(0)
  dense = mobilenet_like()
  files = {'dense': convert(dense, False, 1)}
  for sparsity in (0.8, 0.9):
    files[f'1x1 convolutions {sparsity:.0%} zero, sparse encoding'] = convert(
        prune_pointwise(dense, sparsity), True, 1)
  times = time_in_turn({name: runner(f) for name, f in files.items()})
  lines += ['## XNNPACK sparse inference: MobileNet-like, 96x96, batch 1', '',
            '| model | ms/batch (median) | min-max | speed vs dense | file bytes |',
            '|---|---|---|---|---|']
  lines += [row(name, t, times['dense'], len(files[name])) for name, t in times.items()]
  lines.append('')


def probe_block_sparse_fc(lines):
  for width in (128, 1024):
    tf.keras.utils.set_random_seed(0)
    dense = fc_model(width)
    sparse = prune_blocks(dense, 0.9)
    for batch in (1, 32):
      dense_file = convert(dense, False, batch)
      sparse_file = convert(sparse, True, batch)
      times = time_in_turn({
          'dense, XNNPACK': runner(dense_file, True),
          'dense, LiteRT kernels (XNNPACK off)': runner(dense_file, False),
          '0.9 of 1x4 blocks zero, sparse encoding, XNNPACK off': runner(sparse_file, False),
          '0.9 of 1x4 blocks zero, sparse encoding, XNNPACK': runner(sparse_file, True),
      })
      lines += [f'## Block-sparse fully connected: 784-{width}-{width}-10, batch {batch}', '',
                '| model | ms/batch (median) | min-max | speed vs dense XNNPACK | file bytes |',
                '|---|---|---|---|---|']
      sizes = [len(dense_file)] * 2 + [len(sparse_file)] * 2
      lines += [row(name, t, times['dense, XNNPACK'], size)
                for (name, t), size in zip(times.items(), sizes)]
      lines.append('')


def main(argv):
  del argv
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  lines = ['# LiteRT 2: what unstructured and block sparsity buy on this CPU', '',
           f'`python -m benchmarks.litert_sparse_probes --repeats={_REPEATS.value} '
           f'--seconds={_SECONDS.value:g} --threads={_THREADS.value}`; ai-edge-litert '
           f'{importlib.metadata.version("ai-edge-litert")}, TF {tf.__version__} converter, '
           f'{platform.machine()}, {os.cpu_count()} cores. Medians of the repeats, models '
           'timed in turn each repeat.', '']
  probe_xnnpack_sparse_inference(lines)
  probe_block_sparse_fc(lines)
  runs.write_report(lines, _OUTPUT.value)


if __name__ == '__main__':
  app.run(main)
