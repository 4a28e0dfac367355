r"""Times exported models on DeepSparse, ONNX Runtime, TFLite and TensorFlow, side by side.

  python -m binaries.benchmark_inference \
    --onnx=output/results/dense/export/model.onnx,output/results/global_090/export/model.onnx \
    --budget_seconds=60 --warmup_seconds=10 --output=/tmp/inference

TensorFlow runs the `saved_model/` next to each float `model.onnx` when there
is one, TFLite the `.tflite` file of the same name (`model_int8.onnx` ->
`model_int8.tflite`, written by `binaries/export --formats=onnx,tflite`). A channels-first export (`binaries/export.py --inputs_as_nchw`) gets the
same batch, transposed. The batch size defaults to the paper's: 32 for 28x28 inputs
(FashionMNIST), 128 otherwise (CIFAR-10). With `--repeats`, every model and
runtime is timed that many times, in turn, and the repeat of median throughput
is reported with the spread of all. Writes {output}.json and .md.
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
from tff_sparsify.deploy import export_configs as configs
from tff_sparsify.deploy import inference  # Light: each runtime is imported when used.
from tff_sparsify.deploy import input_layouts as layouts

_ONNX = flags.DEFINE_list('onnx', None, 'ONNX model paths (comma separated).')
_RUNTIMES = flags.DEFINE_multi_enum(
    'runtime', list(inference.RUNTIMES), list(inference.RUNTIMES), 'Runtimes to time.')
# The timing options: one flag per field of `TimingConfig` (declared once, there).
flag_utils.define_flags(configs.TimingConfig, module_name=__name__)
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


def _input_shape(model) -> tuple:
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
  timing_config = flag_utils.config_from_flags(configs.TimingConfig)
  if not _OUTPUT.value or _OUTPUT.value.endswith(os.sep):
    flag_utils.fail(_OUTPUT, 'must be a path prefix such as results/inference')
  models = [_load_onnx(path) for path in _ONNX.value]
  shapes = [_input_shape(model) for model in models]
  rows = []
  for path, shape in zip(_ONNX.value, shapes):
    saved_model = os.path.join(os.path.dirname(path), 'saved_model')
    saved_model = saved_model if os.path.isdir(saved_model) else None
    repeats = inference.benchmark(
        path, timing_config, input_shape=shape, saved_model_dir=saved_model,
        runtimes=inference.runtimes_for(path, saved_model, _RUNTIMES.value))
    for timings in repeats:
      t = inference.median_timing(timings)
      speeds = [r.items_per_second for r in timings if not r.unavailable]
      spread = (max(speeds) - min(speeds)) / t.items_per_second if speeds else float('nan')
      rows.append(dict(model=path, **dataclasses.asdict(t), repeats=len(timings),
                       spread=spread))
      status = t.unavailable or (f'{t.ms_median:.3f} ms/batch median, {t.iterations} '
                                 f'iterations, {t.items_per_second:.0f} items/s' + (
                                     f' (median of {len(timings)}, spread {spread:.1%})'
                                     if len(timings) > 1 else ''))
      print(f'{path} [{t.runtime}, batch {t.batch_size}]: {status}', flush=True)
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  files.atomic_write_text(_OUTPUT.value + '.json', json.dumps(rows, indent=2))
  header = ['model', 'runtime', 'batch_size', 'ms_mean', 'ms_median', 'ms_p90', 'ms_p99',
            'iterations', 'items_per_second', 'repeats', 'spread', 'unavailable']
  lines = files.markdown_table(
      header, rows, lambda value: f'{value:.3f}' if isinstance(value, float) else str(value))
  files.atomic_write_text(_OUTPUT.value + '.md', '\n'.join(lines) + '\n')


def run():
  flag_utils.run_main(main)


if __name__ == '__main__':
  run()
