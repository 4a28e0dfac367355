r"""Times exported models on DeepSparse, ONNX Runtime, TFLite and TensorFlow, side by side.

  python -m binaries.benchmark_inference \
    --onnx=output/results/dense/export/model.onnx,output/results/global_090/export/model.onnx \
    --budget_seconds=60 --warmup_seconds=10 --output=/tmp/inference

TensorFlow runs the `saved_model/` next to each float `model.onnx` when there
is one, TFLite the `.tflite` file of the same name (`model_int8.onnx` ->
`model_int8.tflite`, written by `binaries/export --formats=onnx,tflite`). A channels-first export (`binaries/export.py --inputs_as_nchw`) gets the
same batch, transposed. The batch size defaults to the paper's: 32 for 28x28 inputs
(FashionMNIST), 128 otherwise (CIFAR-10). Writes {output}.json and .md.
"""

import dataclasses
import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('NM_DISABLE_ANALYTICS', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from tff_sparsify.binaries import flag_utils
from tff_sparsify import files
from tff_sparsify.deploy import inference  # Light: each runtime is imported when used.
from tff_sparsify.deploy import layouts

_ONNX = flags.DEFINE_list('onnx', None, 'ONNX model paths (comma separated).')
_RUNTIMES = flags.DEFINE_multi_enum(
    'runtime', list(inference.RUNTIMES), list(inference.RUNTIMES), 'Runtimes to time.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None, 'Batch size (default: the paper\'s).')
_BUDGET = flags.DEFINE_float('budget_seconds', 60.0, 'Timed seconds per model and runtime.')
_WARMUP = flags.DEFINE_float('warmup_seconds', 10.0, 'Untimed warm-up seconds.')
_NUM_THREADS = flags.DEFINE_integer('num_threads', None, 'Threads (default: all cores).')
_OUTPUT = flags.DEFINE_string('output', 'inference', 'Output path prefix (.json, .md).')


def _load_onnx(path: str):
  """The ONNX model at `path`; fails naming the flag and file if it is not one."""
  import onnx  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    flag_utils.fail(_ONNX, f'{path!r} does not exist')
  try:
    model = onnx.load(path)
    onnx.checker.check_model(model)
  except Exception as e:  # onnx raises DecodeError, ValidationError, ...
    flag_utils.fail(_ONNX, f'{path!r} is not a valid ONNX model ({type(e).__name__})')
  if not model.graph.input:
    flag_utils.fail(_ONNX, f'{path!r} has no graph input')
  return model


def _input_shape(model, export) -> tuple:
  """The model's input shape without the batch dimension, channels last."""
  shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
  if layouts.input_layout(model) == 'NCHW':  # Back to Keras' channels-last shape.
    shape = shape[1:] + shape[:1]
  return shape


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)
  if not _ONNX.value:
    flag_utils.fail(_ONNX, 'give at least one ONNX model')
  if _BATCH_SIZE.value is not None and _BATCH_SIZE.value < 1:
    flag_utils.fail(_BATCH_SIZE, 'must be >= 1')
  if not _BUDGET.value > 0:
    flag_utils.fail(_BUDGET, 'must be > 0')
  if not _WARMUP.value >= 0:
    flag_utils.fail(_WARMUP, 'must be >= 0')
  if _NUM_THREADS.value is not None and _NUM_THREADS.value < 1:
    flag_utils.fail(_NUM_THREADS, 'must be >= 1')
  if not _OUTPUT.value or _OUTPUT.value.endswith(os.sep):
    flag_utils.fail(_OUTPUT, 'must be a path prefix such as results/inference')
  models = [_load_onnx(path) for path in _ONNX.value]
  # pylint: disable=g-import-not-at-top
  from tff_sparsify.deploy import export
  # pylint: enable=g-import-not-at-top
  shapes = [_input_shape(model, export) for model in models]
  rows = []
  for path, shape in zip(_ONNX.value, shapes):
    batch_size = _BATCH_SIZE.value or (
        inference.DEFAULT_BATCH_SIZES['fashion_mnist'] if shape == (28, 28)
        else inference.DEFAULT_BATCH_SIZES['cifar10'])
    saved_model = os.path.join(os.path.dirname(path), 'saved_model')
    timings = inference.benchmark(
        path, saved_model_dir=saved_model if os.path.isdir(saved_model) else None,
        runtimes=inference.runtimes_for(
            path, saved_model if os.path.isdir(saved_model) else None, _RUNTIMES.value),
        batch_size=batch_size, input_shape=shape, budget_seconds=_BUDGET.value,
        warmup_seconds=_WARMUP.value, num_threads=_NUM_THREADS.value)
    for t in timings:
      rows.append(dict(model=path, **dataclasses.asdict(t)))
      status = t.unavailable or (f'{t.ms_median:.3f} ms/batch median, {t.iterations} '
                                 f'iterations, {t.items_per_second:.0f} items/s')
      print(f'{path} [{t.runtime}, batch {t.batch_size}]: {status}', flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  files.atomic_write_text(_OUTPUT.value + '.json', json.dumps(rows, indent=2))
  header = ['model', 'runtime', 'batch_size', 'ms_mean', 'ms_median', 'ms_p90', 'ms_p99',
            'iterations', 'items_per_second', 'unavailable']
  lines = files.markdown_table(
      header, rows, lambda value: f'{value:.3f}' if isinstance(value, float) else str(value))
  files.atomic_write_text(_OUTPUT.value + '.md', '\n'.join(lines) + '\n')


def run():
  flag_utils.run_main(main)


if __name__ == '__main__':
  run()
