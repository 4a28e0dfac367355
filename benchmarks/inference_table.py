r"""The paper's inference tables (Table 1 CIFAR-10 CNN, Table 2 FashionMNIST FC).

For each model and sparsity (0, 0.8, 0.85, 0.9, 0.95, 0.99): magnitude-
pruned weights (random init, seed 1990; the sparsity placed `global`ly,
`uniform`ly or by `compute`, see `pruned_model`), stripped, exported to
ONNX and TensorFlow Lite and timed on DeepSparse, ONNX Runtime, TFLite
(`tf.lite.Interpreter`, XNNPACK) and TensorFlow with the paper's method (fixed budget after a warm-up; batch 128 for CIFAR-10, 32 for
FashionMNIST); then each DeepSparse model is profiled per fused kernel.
Speed-ups are against the dense model on the same runtime and against dense
ONNX Runtime, measured in the same run. Where the test set is at hand
(FashionMNIST's IDX files; CIFAR-10 only if TFDS has it prepared), the
exported model's accuracy (ONNX Runtime) is checked against Keras' to 1e-4.
`--precisions=float32,int8` adds each model's INT8 exports (ONNX Runtime's
static QDQ, timed on DeepSparse and ONNX Runtime; TFLite full-integer),
calibrated on 256 training images where the training set is at hand, else on
uniform random inputs (said in the table); their test accuracy is reported,
not checked, since random-init weights have none worth keeping.

  python -m benchmarks.inference_table --budget_seconds=60 --warmup_seconds=10
  # NHWC against channels-first ONNX inputs, 5 repeats taken in turn:
  python -m benchmarks.inference_table --datasets=cifar10 \
    --runtimes=deepsparse,onnxruntime --placements=uniform --layouts=NHWC,NCHW \
    --repeats=5 --budget_seconds=5 --warmup_seconds=3 \
    --output=benchmarks/results/inference_layouts_repeats
  # Float32 against INT8 on every runtime, channels-first, 3 repeats of 5 s:
  python -m benchmarks.inference_table --datasets=cifar10 --placements=uniform \
    --layouts=NCHW --precisions=float32,int8 --repeats=3 --budget_seconds=5 \
    --warmup_seconds=2 --sparsities=0,0.9,0.95,0.99 --noprofile \
    --output=benchmarks/results/inference_int8
  # Uniform against compute placement, channels-first, 3 repeats of 30 s:
  python -m benchmarks.inference_table --datasets=cifar10 \
    --runtimes=deepsparse,onnxruntime --placements=uniform,compute \
    --layouts=NCHW --repeats=3 --budget_seconds=30 --warmup_seconds=10 \
    --output=benchmarks/results/inference_placement

Results: {output}_{model}.{csv,md}, {output}_{model}_profile.{csv,md} and
{output}_speedup.png (default output: benchmarks/results/inference).
"""

import collections
import csv
import os
import platform
from typing import Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('NM_DISABLE_ANALYTICS', '1')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from tff_sparsify import files
from tff_sparsify.binaries import flag_utils
from tff_sparsify.core import masks
from tff_sparsify.deploy import export_configs as configs
from tff_sparsify.deploy import model_export as export
from tff_sparsify.deploy import inference
from tff_sparsify.learning import models
from tff_sparsify.simulation import execution

from benchmarks.inference_models import PLACEMENTS
from benchmarks.inference_models import SEED
from benchmarks.inference_models import accuracy_check
from benchmarks.inference_models import load_test_set
from benchmarks.inference_models import pruned_model

# Before absl parses the flags: a flag it refuses exits at once, and TFF's
# import-time context would then print a traceback at shutdown.
execution.drop_import_time_default_context()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'benchmarks', 'results')
# The paper's Table 1: DeepSparse throughput over dense, CIFAR-10 CNN.
PAPER_SPEEDUPS = {0.8: 1.88, 0.9: 2.65, 0.95: 3.54, 0.99: 4.28}

_DATASETS = flags.DEFINE_list('datasets', ['cifar10', 'fashion_mnist'], 'Models to time.')
_SPARSITIES = flags.DEFINE_list('sparsities', ['0', '0.8', '0.85', '0.9', '0.95', '0.99'],
                                'Global magnitude sparsities.')
_RUNTIMES = flags.DEFINE_list('runtimes', list(inference.RUNTIMES), 'Runtimes.')
_PLACEMENTS = flags.DEFINE_list(
    'placements', ['global', 'uniform'],
    'Where the sparsity goes: global (one magnitude ranking over all kernels), '
    'uniform (every kernel at the same sparsity) and/or compute (per-layer '
    'sparsities that minimise multiply-adds, see --compute_floor).')
_COMPUTE_FLOOR = flags.DEFINE_float(
    'compute_floor', masks.COMPUTE_FLOOR, 'compute placement: the least density of any layer, as a '
    'fraction of the uniform density; in (0, 1], 1 is uniform.')
_LAYOUTS = flags.DEFINE_list(
    'layouts', ['NHWC'],
    'ONNX input layouts of the CIFAR-10 exports: NHWC (Keras\', tf2onnx '
    'inserts a transpose before the first convolution) and/or NCHW '
    '(tf2onnx inputs_as_nchw: no transpose; batches are fed channels-first). '
    'FashionMNIST (no channels) is always NHWC.')
_PRECISIONS = flags.DEFINE_list(
    'precisions', ['float32'], 'float32 and/or int8 (the INT8 ONNX and TFLite exports).')
_PROFILE = flags.DEFINE_bool(
    'profile', True, 'After the timings, profile every DeepSparse model per fused '
    'kernel (DeepSparse\'s DebugAnalysisEngine) into {output}_{dataset}_profile.csv/.md.')
_OPSET = flags.DEFINE_integer('opset', configs.ExportConfig.opset, 'ONNX opset of the exports.')
_REPEATS = flags.DEFINE_integer(
    'repeats', 1, 'Timings per model and runtime, taken in turn over all models; '
    'the row is the repeat of median throughput (the warm-up runs once).')
_BUDGET = flags.DEFINE_float('budget_seconds', 60.0, 'Timed seconds per model and runtime.')
_WARMUP = flags.DEFINE_float('warmup_seconds', 10.0, 'Warm-up seconds.')
_WORK_DIR = flags.DEFINE_string('work_dir', os.path.join(REPO, 'output', 'inference'),
                                'Where the exported models go.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'FashionMNIST IDX directory.')
_TFDS_DATA_DIR = flags.DEFINE_string(
    'tfds_data_dir', None, 'TFDS data directory with CIFAR-10 prepared (default: TFDS\'s).')
_OUTPUT = flags.DEFINE_string(
    'output', os.path.join(RESULTS, 'inference'),
    'Output prefix: {output}_{dataset}.csv/.md and {output}_speedup.png.')


def _write_profile(stem: str, dataset: str, profiled):
  """Per-kernel DeepSparse times of each model, after all the timings."""
  rows = []
  for prefix, onnx_path, batch in profiled:
    try:
      layers = inference.deepsparse_layer_profile(onnx_path, batch, iterations=20,
                                                  warmup_iterations=5)
    except inference.RuntimeUnavailable as e:  # The timings are written already.
      print(f'{dataset} profile {dict(prefix)}: {e}', flush=True)
      continue
    total = sum(layer.ms for layer in layers)
    for layer in layers:
      rows.append(collections.OrderedDict(
          layout=prefix['layout'], placement=prefix['placement'], sparsity=prefix['sparsity'],
          kernel=layer.kernel, ops=layer.ops, kernel_sparsity=layer.kernel_sparsity,
          ms=layer.ms, share=layer.ms / total if total else 0.0))
    print(f'{dataset} profile {dict(prefix)}: {total:.2f} ms in {len(layers)} kernels',
          flush=True)
  if not rows:
    return
  with open(stem + '.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  lines = [f'# DeepSparse per-kernel profile, {dataset}', '',
           'DeepSparse\'s `DebugAnalysisEngine` (20 iterations after 5), run after the '
           'timings of the same command. A kernel is DeepSparse\'s fused unit: `pyramid` '
           'runs the listed convolutions and poolings in tiles, `ks_*` is a sparse kernel '
           'with its kernel sparsity, `winograd_fused`/`convolution` dense ones.', '',
           '| layout | placement | sparsity | kernel | ops | kernel sparsity | ms | share |',
           '|---|---|---|---|---|---|---|---|']
  for r in rows:
    ops = r['ops'].replace(f'{dataset}_cnn/', '').replace(':0', '') if r['ops'] != '<none>' else ''
    lines.append(f'| {r["layout"]} | {r["placement"]} | {r["sparsity"]} | {r["kernel"]} | '
                 f'{ops} | {r["kernel_sparsity"]:.3f} | {r["ms"]:.2f} | {r["share"]:.0%} |')
  with open(stem + '.md', 'w') as f:
    f.write('\n'.join(lines) + '\n')


def _scaled(test_set):
  images, labels = test_set
  return images.astype('float32') / 255.0, labels


def _calibration(dataset: str, examples: int = 256):
  """(INT8 calibration inputs, where they come from): training images, or random."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tff_sparsify.simulation import data_sources  # pylint: disable=g-import-not-at-top
  try:
    if dataset == 'cifar10':  # No download: TFDS would try the network.
      train = data_sources.load_tfds('cifar10', data_dir=_TFDS_DATA_DIR.value,
                                     download=False).train_images
    else:
      train = data_sources.load_centralized(dataset, _DATA_DIR.value).train_images
    picked = np.random.default_rng(SEED).choice(len(train), examples, replace=False)
    return train[np.sort(picked)].astype(np.float32) / 255.0, f'{examples} training images'
  except Exception:  # pylint: disable=broad-except  (offline: no CIFAR-10)
    shape = (examples,) + tuple(models.INPUT_SHAPES[dataset])
    return (np.random.default_rng(SEED).random(shape, np.float32),
            f'{examples} uniform random inputs (no {dataset} training set here)')


def download_bytes(report, precision: str, runtime: str) -> Optional[int]:
  """The bytes of the file `runtime` runs at `precision`, gzip'd where that is smaller: what
  a device downloads (TFLite's sparse encoding where it made the file smaller)."""
  model_format = inference.model_format(runtime)
  if (model_format, precision) == ('onnx', 'float32'):
    return min(report.onnx_bytes, report.onnx_gzip_bytes)
  for f in report.files:
    if (f.format, f.precision) == (model_format, precision):
      return min(f.bytes, f.gzip_bytes)
  return None


def main(argv):
  execution.drop_import_time_default_context()
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  unknown = set(_PLACEMENTS.value) - set(PLACEMENTS)
  if unknown:
    raise app.UsageError(f'--placements: unknown {sorted(unknown)}; allowed: '
                         f'{", ".join(PLACEMENTS)}')
  if not 0.0 < _COMPUTE_FLOOR.value <= 1.0:
    raise app.UsageError(f'--compute_floor must be in (0, 1], got {_COMPUTE_FLOOR.value}')
  # The cases' batches set the batch size; the seconds and repeats are checked here.
  timing = flag_utils.config_from_flags(configs.TimingConfig, batch_size=None)
  unknown = set(_PRECISIONS.value) - {'float32', 'int8'}
  if unknown or not _PRECISIONS.value:
    raise app.UsageError(f'--precisions: unknown {sorted(unknown)}; allowed: float32, int8')
  unknown = set(_LAYOUTS.value) - {'NHWC', 'NCHW'}
  if unknown or not _LAYOUTS.value:
    raise app.UsageError(f'--layouts: unknown {sorted(unknown)}; allowed: NHWC, NCHW')
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  fig, ax = plt.subplots(figsize=(6, 4))
  for dataset in _DATASETS.value:
    batch_size = inference.DEFAULT_BATCH_SIZES[dataset]
    test_set, why = load_test_set(dataset, _DATA_DIR.value, _TFDS_DATA_DIR.value)
    if test_set is None:
      print(f'{dataset}: {why}; accuracy check skipped', flush=True)
    calibration, calibration_source = _calibration(dataset)
    rows = []
    layouts = _LAYOUTS.value if dataset == 'cifar10' else ['NHWC']
    cases = [(p, s) for p in _PLACEMENTS.value for s in _SPARSITIES.value if float(s) > 0]
    if any(float(s) == 0 for s in _SPARSITIES.value):
      cases.insert(0, ('dense', '0'))
    cases = [(layout, p, s) for layout in layouts for p, s in cases]
    timed = []  # (row prefix, key, runner or reason, batch), timed below.
    profiled = []  # (row prefix, ONNX path, batch) of the DeepSparse models.
    for layout, placement, s in cases:
      model = pruned_model(dataset, float(s), 'global' if placement == 'dense' else placement,
                           _COMPUTE_FLOOR.value)
      int8 = 'int8' in _PRECISIONS.value
      report = export.export_model(
          model, os.path.join(_WORK_DIR.value, f'{dataset}_{layout}_{placement}_{s}'),
          formats=('onnx', 'tflite'), opset=_OPSET.value, inputs_as_nchw=layout == 'NCHW',
          int8=int8, int8_calibration=calibration if int8 else None,
          test_set=_scaled(test_set) if int8 and test_set else None,
          max_int8_accuracy_drop=None)
      accuracy = None
      if test_set is not None:
        accuracy = accuracy_check(report, model, *test_set)
      int8_onnx = [f for f in report.files if (f.format, f.precision) == ('onnx', 'int8')]
      exports = [('float32', report.onnx_path, report.onnx_gzip_bytes, accuracy)] * (
          'float32' in _PRECISIONS.value) + [
              ('int8', f.path, f.gzip_bytes, f.test_accuracy) for f in int8_onnx]
      batch, onnx_batch = inference.make_batches(
          report.onnx_path, batch_size, models.INPUT_SHAPES[dataset])
      for precision, onnx_path, gzip_bytes, found_accuracy in exports:
        for runtime in inference.runtimes_for(onnx_path, report.saved_model_dir,
                                              _RUNTIMES.value):
          try:
            run = inference.build_runner(
                runtime, onnx_path=onnx_path, saved_model_dir=report.saved_model_dir,
                batch_size=batch_size)
          except inference.RuntimeUnavailable as e:
            run = str(e)
          prefix = collections.OrderedDict(
              layout=layout, placement=placement, sparsity=float(s), precision=precision,
              runtime=runtime, params=report.total_params, nonzero_params=report.nonzero_params,
              gzip_mb=gzip_bytes / 1e6,
              download_bytes=download_bytes(report, precision, runtime),
              kernel_sparsities=' '.join(f'{layer.sparsity:.4f}' for layer in report.layers))
          timed.append((prefix, found_accuracy, run,
                        onnx_batch if inference.takes_onnx(runtime) else batch))
          if (runtime == 'deepsparse' and precision == 'float32' and _PROFILE.value
              and not isinstance(run, str)):
            profiled.append((prefix, onnx_path, onnx_batch))
    # Repeats go round all models in turn (`inference.time_in_turn`); each
    # row is the repeat of median throughput.
    log = lambda repeat, i, t: print(f'{dataset} repeat {repeat}: {dict(timed[i][0])}: '
                                     f'{t.ms_median:.3f} ms/batch', flush=True)
    repeats = inference.time_in_turn(
        [(prefix['runtime'], run, batch) for prefix, _, run, batch in timed],
        timing, log=log)
    for (prefix, accuracy, _, _), found in zip(timed, repeats):
      t = inference.median_timing(found)
      rows.append(collections.OrderedDict(
          prefix, ms_per_batch_mean=t.ms_mean, ms_per_batch_median=t.ms_median,
          ms_p90=t.ms_p90, ms_p99=t.ms_p99, iterations=t.iterations,
          items_per_second=t.items_per_second, repeats=len(found),
          items_per_second_all=' '.join(f'{x.items_per_second:.1f}' for x in found),
          onnx_accuracy=accuracy, unavailable=t.unavailable))
    # Against the dense model of the same layout (and precision), measured in
    # the same run; and against dense float32 ONNX Runtime.
    dense = {(r['layout'], r['precision'], r['runtime']): r for r in rows
             if r['sparsity'] == 0.0}
    for r in rows:
      base = dense.get((r['layout'], r['precision'], r['runtime']))
      ort = dense.get((r['layout'], 'float32', 'onnxruntime'))
      r['gzip_reduction'] = base['gzip_mb'] / r['gzip_mb'] if base else None
      r['speedup_vs_dense_same_runtime'] = (
          r['items_per_second'] / base['items_per_second'] if base else None)
      r['speedup_vs_dense_onnxruntime'] = (
          r['items_per_second'] / ort['items_per_second'] if ort else None)
    stem = f'{_OUTPUT.value}_{dataset}'
    with open(stem + '.csv', 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)
    header = list(rows[0])
    fmt = lambda v: f'{v:.3f}' if isinstance(v, float) else str(v)
    lines = [f'# Inference, {dataset} (batch {batch_size})', '',
             f'Command: `python -m benchmarks.inference_table --datasets={dataset} '
             f'--budget_seconds={_BUDGET.value} --warmup_seconds={_WARMUP.value} '
             f'--placements={",".join(_PLACEMENTS.value)} --layouts={",".join(layouts)} '
             f'--opset={_OPSET.value} --repeats={_REPEATS.value}' + (
                 f' --precisions={",".join(_PRECISIONS.value)}'
                 if _PRECISIONS.value != _PRECISIONS.default else '') + (
                 ' --noprofile' if not _PROFILE.value else '') + (
                 f' --runtimes={",".join(_RUNTIMES.value)}'
                 if _RUNTIMES.value != _RUNTIMES.default else '') + (
                 f' --sparsities={",".join(_SPARSITIES.value)}'
                 if _SPARSITIES.value != _SPARSITIES.default else '') + (
                 f' --output={os.path.relpath(_OUTPUT.value, REPO)}'
                 if _OUTPUT.value != _OUTPUT.default else '') + (
                 f' --compute_floor={_COMPUTE_FLOOR.value}'
                 if 'compute' in _PLACEMENTS.value else '') + '`; '
             f'{platform.machine()}, {os.cpu_count()} CPUs; random-init weights, seed {SEED}, '
             'magnitude pruning (placement: see the script\'s docstring). Speed-ups are '
             'throughput ratios against the dense model of the same run.', '',
             'Accuracy of each exported model on the test set (ONNX Runtime) against '
             'Keras\', to 1e-4: ' + ('checked, all equal (`onnx_accuracy`).' if test_set
                                     else f'not checked: {why}.'),
             *([f'INT8 models: calibrated on {calibration_source}; their `onnx_accuracy` '
                'is the INT8 ONNX model\'s test accuracy (random-init weights: reported, '
                'not checked); their TFLite rows time `model_int8.tflite`.']
               if 'int8' in _PRECISIONS.value else []), '',
             *files.markdown_table(header, rows, fmt)]
    if dataset == 'cifar10':
      lines += ['', 'Targets (CIFAR-10): DeepSparse speed-up over dense DeepSparse at least '
                "the paper's, and at least 6x over dense ONNX Runtime at 0.99:"]
      for r in rows:
        if r['runtime'] == 'deepsparse' and r['sparsity'] in PAPER_SPEEDUPS and (
            r['speedup_vs_dense_same_runtime']) and r['precision'] == 'float32':
          paper = PAPER_SPEEDUPS[r['sparsity']]
          found = r['speedup_vs_dense_same_runtime']
          lines.append(f'- {r["layout"]} {r["placement"]} {r["sparsity"]}: {found:.2f}x (paper {paper}): '
                       f'{"met" if found >= paper else "NOT met"}')
          if r['sparsity'] == 0.99 and r['speedup_vs_dense_onnxruntime']:
            ort = r['speedup_vs_dense_onnxruntime']
            lines.append(f'- {r["layout"]} {r["placement"]} 0.99 over dense ONNX Runtime: {ort:.2f}x: '
                         f'{"met" if ort >= 6 else "NOT met"}')
    with open(stem + '.md', 'w') as f:
      f.write('\n'.join(lines) + '\n')
    if profiled:
      _write_profile(f'{stem}_profile', dataset, profiled)
    for layout in layouts:
      for placement in _PLACEMENTS.value:
        for precision in _PRECISIONS.value:
          for runtime in _RUNTIMES.value:
            points = [(r['sparsity'], r['speedup_vs_dense_same_runtime']) for r in rows
                      if r['runtime'] == runtime and r['placement'] in (placement, 'dense')
                      and r['layout'] == layout and r['precision'] == precision
                      and r['speedup_vs_dense_same_runtime']]
            if points:
              ax.plot(*zip(*points), marker='o',
                      label=f'{dataset} {layout} {placement} {precision} {runtime}')
  ax.set_xlabel('sparsity')
  ax.set_ylabel('throughput speed-up over dense (same runtime)')
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(f'{_OUTPUT.value}_speedup.png', dpi=120)


if __name__ == '__main__':
  app.run(main)
