r"""Exports a training run's final model to SavedModel, ONNX and TFLite, with checks.

  python -m binaries.export --run_dir=output/results/global_090
  python -m binaries.export --checkpoint=output/checkpoints/global_090/program_state_100
  python -m binaries.export --run_dir=output/results/global_090 --formats=onnx,tflite --int8

Writes {output_dir}/saved_model/, {output_dir}/model.onnx and
{output_dir}/export_report.{json,md} (default output_dir: {run_dir}/export);
`--formats=onnx,tflite` adds model.tflite, `--int8` model_int8.onnx (and
model_int8.tflite), calibrated on training examples of the run's dataset.
The ONNX and TFLite outputs are checked against Keras (max abs diff <= 1e-4),
the ONNX initializers against the pruned kernels' zeros, and with `--int8`
each INT8 model's test accuracy against Keras' (at most
--max_int8_accuracy_drop below).
"""

import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from tff_sparsify.binaries import flag_utils
from tff_sparsify import files
from tff_sparsify.deploy import export_configs as configs



_RUN_DIR = flags.DEFINE_string(
    'run_dir', None, 'A run\'s results directory ({root_output_dir}/results/'
    '{experiment}) holding final_model.keras, or the .keras file itself.')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'Instead of --run_dir: a training checkpoint, '
    '{root_output_dir}/checkpoints/{experiment}[/program_state_N] (latest if no N).')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Where to write; default {run_dir}/export, or '
    '{root_output_dir}/results/{experiment}/export_{N} for --checkpoint.')
# The export options: one flag per field of `ExportConfig` (declared once, there).
flag_utils.define_flags(configs.ExportConfig, module_name=__name__)


def write_report(report, output_dir: str):
  """Writes `export_report.{json,md}` of an `export.ExportReport` (atomically)."""
  files.atomic_write_text(os.path.join(output_dir, 'export_report.json'),
                          json.dumps(report.as_dict(), indent=2))
  lines = [
      '# Export report', '',
      f'- ONNX: `{report.onnx_path}`: {report.onnx_bytes} bytes, '
      f'{report.onnx_gzip_bytes} gzip\'d',
      f'- parameters: {report.total_params}, non-zero {report.nonzero_params}, '
      f'sparsity of the kernels {report.sparsity:.4f}',
      f'- max |ONNX - Keras| on random inputs: {report.max_abs_diff:.3g}',
      f'- ONNX input layout: {report.input_layout}',
      *([f'- compact model: {report.total_params} parameters (masked model: '
         f'{report.masked_params}), max |compact - masked| {report.compact_max_abs_diff:.3g}']
        if report.masked_params is not None else []),
      *([f'- test accuracy: Keras {report.keras_test_accuracy:.4f}, ONNX '
         f'{report.onnx_test_accuracy:.4f}'] if report.keras_test_accuracy is not None else []),
      '', *_files_table(report.files),
      '| layer | shape | size | zeros (Keras) | zeros (ONNX) | sparsity |', '|---|---|---|---|---|---|',
      *[f'| {l.name} | {l.shape} | {l.size} | {l.keras_zeros} | {l.onnx_zeros} | '
        f'{l.sparsity:.4f} |' for l in report.layers]]
  files.atomic_write_text(os.path.join(output_dir, 'export_report.md'),
                          '\n'.join(lines) + '\n')


def _files_table(model_files) -> list[str]:
  if not model_files:
    return []
  fmt = lambda v: '' if v is None else f'{v:.4g}' if isinstance(v, float) else str(v)
  header = ['path', 'format', 'precision', 'bytes', 'gzip_bytes', 'max_abs_diff',
            'test_accuracy', 'sparse_encoding']
  rows = [{k: getattr(f, k) for k in header} for f in model_files]
  return files.markdown_table(header, rows, fmt) + ['']


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  logging.set_verbosity(logging.WARNING)
  if bool(_RUN_DIR.value) == bool(_CHECKPOINT.value):
    flag_utils.fail(_RUN_DIR, 'give exactly one of --run_dir and --checkpoint')
  export_config = flag_utils.config_from_flags(
      configs.ExportConfig, formats=tuple(flags.FLAGS['formats'].value))
  for holder in (_RUN_DIR, _CHECKPOINT):
    if holder.value and not os.path.exists(holder.value):
      flag_utils.fail(holder, 'does not exist')
  if _OUTPUT_DIR.value is not None and (
      not _OUTPUT_DIR.value or os.path.isfile(_OUTPUT_DIR.value)):
    flag_utils.fail(_OUTPUT_DIR, 'must be a directory path')
  # pylint: disable=g-import-not-at-top
  from tff_sparsify.simulation import execution
  from tff_sparsify.simulation import run_reader
  from tff_sparsify.deploy import model_export as export
  # pylint: enable=g-import-not-at-top
  execution.drop_import_time_default_context()
  model, config_holder, results_dir, output_dir = _load_model(export, run_reader)
  if export_config.inputs_as_nchw:
    try:
      export.check_inputs_as_nchw(model)
    except export.ExportError as e:
      flag_utils.fail_flag('inputs_as_nchw', str(e))
  calibration = test_set = None
  if export_config.int8:
    try:
      calibration, test_set = run_reader.run_data(run_reader.load_run_config(results_dir),
                                                  export_config.calibration_examples)
    except run_reader.RunReadError as e:
      flag_utils.fail(config_holder, f'--int8 needs the run\'s data: {e}')
  try:
    report = export.export_model(model, output_dir, export_config,
                                 int8_calibration=calibration, test_set=test_set)
  except export.ExportError as e:
    flag_utils.fail_with(f'{flag_utils.program_name()}: error: {e}')
  write_report(report, output_dir)
  _print_report(report)


def _load_model(export, run_reader):
  """(the Keras model, the flag that named it, the run's results directory, the output directory)."""
  if _RUN_DIR.value:
    try:
      model = export.load_run_model(_RUN_DIR.value)
    except export.ExportError as e:
      flag_utils.fail(_RUN_DIR, str(e))
    run_dir = _RUN_DIR.value if os.path.isdir(_RUN_DIR.value) else os.path.dirname(_RUN_DIR.value)
    return model, _RUN_DIR, run_dir, _OUTPUT_DIR.value or os.path.join(run_dir, 'export')
  try:
    model = run_reader.load_checkpoint_model(_CHECKPOINT.value)
  except run_reader.RunReadError as e:
    flag_utils.fail(_CHECKPOINT, str(e))
  experiment_dir, version = run_reader.split_checkpoint_path(_CHECKPOINT.value)
  results_dir = run_reader.run_results_dir(experiment_dir)
  return model, _CHECKPOINT, results_dir, _OUTPUT_DIR.value or os.path.join(
      results_dir, f'export_{version if version is not None else "latest"}')


def _print_report(report):
  print(f'exported: {report.onnx_path} ({report.onnx_bytes} bytes, '
        f'{report.onnx_gzip_bytes} gzip\'d), sparsity {report.sparsity:.4f}, '
        f'max abs diff {report.max_abs_diff:.3g}', flush=True)
  for found in report.files:
    accuracy = ('' if found.test_accuracy is None
                else f', test accuracy {found.test_accuracy:.4f}')
    print(f'exported: {found.path} ({found.bytes} bytes, {found.gzip_bytes} gzip\'d){accuracy}',
          flush=True)


def run():
  flag_utils.run_main(main)


if __name__ == '__main__':
  run()
