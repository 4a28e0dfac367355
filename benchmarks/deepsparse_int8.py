r"""Why INT8 does not stack on sparsity on DeepSparse here (issue 14's 10x target).

For the CIFAR-10 CNN (random init, seed 1990, compute placement, channels-
first ONNX, batch 128) dense and at `--sparsity`, and the FashionMNIST FC
model (global placement, batch 32): the float32 export and its INT8 exports
by ONNX Runtime's quantization tool in four variants (QDQ or QOperator
format; int8 or uint8 activations; per-tensor weights, plus QDQ per-channel)
are timed on DeepSparse and ONNX Runtime (repeats in turn), then each is
profiled with DeepSparse's `DebugAnalysisEngine`: a model DeepSparse could
not compile shows as one `Naive Subgraph` (its ONNX Runtime fallback), and a
compiled kernel shows its kernel sparsity (0 for a dense kernel).

  python -m benchmarks.deepsparse_int8 --repeats=3 --budget_seconds=3

Results: {output}.csv and {output}.md (default output:
benchmarks/results/deepsparse_int8).
"""

import collections
import csv
import os
import platform

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('NM_DISABLE_ANALYTICS', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

from tff_sparsify import files
from tff_sparsify.binaries import flag_utils
from tff_sparsify.deploy import export_configs as configs
from tff_sparsify.deploy import model_export as export
from tff_sparsify.deploy import inference
from tff_sparsify.deploy import onnx_int8
from benchmarks.inference_models import pruned_model
from benchmarks.inference_models import SEED
from tff_sparsify.learning import models
from tff_sparsify.simulation import execution

# Before absl parses the flags: a flag it refuses exits at once, and TFF's
# import-time context would then print a traceback at shutdown.
execution.drop_import_time_default_context()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (quant_format, activation_type, per_channel).
VARIANTS = collections.OrderedDict([
    ('qdq_int8', ('qdq', 'int8', False)),  # What binaries/export writes.
    ('qdq_uint8', ('qdq', 'uint8', False)),
    ('qdq_int8_per_channel', ('qdq', 'int8', True)),
    ('qoperator_uint8', ('qoperator', 'uint8', False)),
])
_SPARSITY = flags.DEFINE_float('sparsity', 0.95, 'Sparsity of the pruned models.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timings per model and runtime, in turn.')
_BUDGET = flags.DEFINE_float('budget_seconds', 3.0, 'Timed seconds per model and runtime.')
_WARMUP = flags.DEFINE_float('warmup_seconds', 1.0, 'Warm-up seconds (first repeat).')
_WORK_DIR = flags.DEFINE_string('work_dir', os.path.join(REPO, 'output', 'deepsparse_int8'),
                                'Where the exports go.')
_OUTPUT = flags.DEFINE_string('output', os.path.join(REPO, 'benchmarks', 'results',
                                                     'deepsparse_int8'), 'Output prefix.')
# (dataset, placement, channels-first ONNX input, batch).
_MODELS = (('cifar10', 'compute', True, 128), ('fashion_mnist', 'global', False, 32))


def _exports(dataset, placement, nchw, sparsity):
  """[(variant, path)] of the float32 export and its INT8 variants."""
  out = os.path.join(_WORK_DIR.value, f'{dataset}_{placement}_{sparsity}')
  report = export.export_model(pruned_model(dataset, sparsity, placement), out,
                               inputs_as_nchw=nchw)
  calibration = np.random.default_rng(SEED).random(
      (64,) + tuple(models.INPUT_SHAPES[dataset]), np.float32)
  found = [('float32', report.onnx_path)]
  for name, (quant_format, activation_type, per_channel) in VARIANTS.items():
    path = os.path.join(out, f'model_{name}.onnx')
    onnx_int8.quantize(report.onnx_path, path, calibration, quant_format=quant_format,
                       activation_type=activation_type, per_channel=per_channel)
    found.append((name, path))
  return found


def main(argv):
  execution.drop_import_time_default_context()  # Before any exit (see its docstring).
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if not 0 < _SPARSITY.value < 1:
    raise app.UsageError(f'--sparsity must be in (0, 1), got {_SPARSITY.value}')
  timing = flag_utils.config_from_flags(configs.TimingConfig)
  cases, prefixes, profiled = [], [], []
  for dataset, placement, nchw, batch_size in _MODELS:
    for sparsity in (0.0, _SPARSITY.value):
      for variant, path in _exports(dataset, placement, nchw, sparsity):
        batch, onnx_batch = inference.make_batches(path, batch_size,
                                                   models.INPUT_SHAPES[dataset])
        profiled.append((dataset, sparsity, variant, path, onnx_batch))
        for runtime in ('deepsparse', 'onnxruntime'):
          try:
            run = inference.build_runner(runtime, onnx_path=path, saved_model_dir=None,
                                         batch_size=batch_size)
          except inference.RuntimeUnavailable as e:
            run = str(e)
          cases.append((runtime, run, onnx_batch))
          prefixes.append(collections.OrderedDict(
              dataset=dataset, sparsity=sparsity, variant=variant, runtime=runtime,
              batch_size=batch_size))
  log = lambda repeat, i, t: print(f'repeat {repeat}: {dict(prefixes[i])}: ' + (
      t.unavailable or f'{t.items_per_second:,.0f} items/s'), flush=True)
  timings = inference.time_in_turn(cases, timing, log=log)
  kernels = {}
  for dataset, sparsity, variant, path, onnx_batch in profiled:
    try:
      layers = inference.deepsparse_layer_profile(path, onnx_batch, iterations=5,
                                                  warmup_iterations=2)
      total = sum(layer.ms for layer in layers) or 1.0
      kernels[(dataset, sparsity, variant)] = ' '.join(
          f'{layer.kernel} ({layer.ms / total:.0%})' for layer in layers)
    except inference.RuntimeUnavailable as e:
      kernels[(dataset, sparsity, variant)] = str(e)
  rows = []
  for prefix, found in zip(prefixes, timings):
    t = inference.median_timing(found)
    rows.append(collections.OrderedDict(
        prefix, items_per_second=t.items_per_second,
        items_per_second_all=' '.join(f'{x.items_per_second:.0f}' for x in found),
        unavailable=t.unavailable))
  base = {r['dataset']: r['items_per_second'] for r in rows if (
      r['sparsity'], r['variant'], r['runtime']) == (0.0, 'float32', 'onnxruntime')}
  for r in rows:
    r['speedup_vs_dense_float32_onnxruntime'] = r['items_per_second'] / base[r['dataset']]
    r['deepsparse_kernels'] = kernels[(r['dataset'], r['sparsity'], r['variant'])] if (
        r['runtime'] == 'deepsparse') else ''
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  with open(_OUTPUT.value + '.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  fmt = lambda v: f'{v:.2f}' if isinstance(v, float) else str(v)
  lines = ['# INT8 on DeepSparse: what it compiles', '',
           f'Command: `python -m benchmarks.deepsparse_int8 --sparsity={_SPARSITY.value} '
           f'--repeats={_REPEATS.value} --budget_seconds={_BUDGET.value} '
           f'--warmup_seconds={_WARMUP.value}`; {platform.machine()}, {os.cpu_count()} CPUs; '
           f'random-init weights, seed {SEED}; INT8 calibrated on 64 uniform random inputs '
           f'(speed only). Medians of {_REPEATS.value} repeats taken in turn. '
           '`deepsparse_kernels`: the kernels DeepSparse\'s `DebugAnalysisEngine` reports '
           'with their shares of its time (`Naive Subgraph` = not compiled, run by its ONNX '
           'Runtime fallback; `ks_*` = a sparse kernel, `gemm`/`pyramid` dense ones).', '',
           *files.markdown_table(list(rows[0]), rows, fmt)]
  with open(_OUTPUT.value + '.md', 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print(f'wrote {_OUTPUT.value}.csv, .md', flush=True)


if __name__ == '__main__':
  app.run(main)
