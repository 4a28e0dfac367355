r"""How fast a channel-pruned model of ours runs once compact, before any training.

Random-init weights (seeded), channels pruned as FedSparsify-Global prunes
them (`PruningLayout.placed_masks`, uniform placement, kept channels rounded
to a multiple), exported `--compact` to ONNX and TFLite, and timed against
the dense model on ONNX Runtime and LiteRT 2, repeats in turn, medians.
Speed depends on the kept channel counts, not on the trained values, so this
picks a setting to train (`benchmarks.channel_targets`) in minutes.

  python -m benchmarks.compact_speed --model=mobilenet \
    --settings=0.5:8,0.5:16,0.6:8,0.6:16 --repeats=3

Results: {output}.md and .json (default output:
benchmarks/results/compact_speed_{model}).
"""

import collections
import json
import os
import platform

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# pylint: disable=g-import-not-at-top
from absl import app
from absl import flags
import numpy as np

from benchmarks import runs
from tff_sparsify.deploy import export_configs
from tff_sparsify.deploy import inference
from tff_sparsify.deploy import model_export
from tff_sparsify.learning import models
from tff_sparsify.learning import pruning_layout
from tff_sparsify.simulation import execution
# pylint: enable=g-import-not-at-top

# Before absl parses the flags: a flag it refuses exits at once, and TFF's
# import-time context would then print a traceback at shutdown.
execution.drop_import_time_default_context()

RUNTIMES = ('onnxruntime', 'litert')
_MODEL = flags.DEFINE_enum('model', 'mobilenet', [m for m in models.MODELS if m != 'paper'],
                           'Our FashionMNIST model.')
_SETTINGS = flags.DEFINE_list('settings', ['0.5:8', '0.5:16', '0.6:8', '0.6:16'],
                              'channel sparsity:multiple pairs.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Timed batch.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timings per file and runtime, in turn.')
_BUDGET = flags.DEFINE_float('budget_seconds', 1.5, 'Timed seconds per file and runtime.')
_WARMUP = flags.DEFINE_float('warmup_seconds', 0.5, 'Warm-up seconds (first repeat).')
_WORK_DIR = flags.DEFINE_string('work_dir', os.path.join(runs.REPO, 'output', 'compact_speed'),
                                'Where the exports go.')
_OUTPUT = flags.DEFINE_string('output', None, 'Output prefix (default: '
                              'benchmarks/results/compact_speed_{model}).')


def _export(layout, sparsity: float, multiple: int):
  """The model with channels pruned at `sparsity`, exported (compact unless dense)."""
  keras_model = models.create_keras_model('fashion_mnist', 0, prunable=True, model=_MODEL.value)
  if sparsity > 0:
    layout.prune_variables(keras_model.trainable_variables, keras_model.non_trainable_variables,
                           sparsity, 'uniform', channel_multiple=multiple)
  return model_export.export_model(
      keras_model, os.path.join(_WORK_DIR.value, f'{_MODEL.value}_{sparsity}_{multiple}'),
      formats=('onnx', 'tflite'), compact=sparsity > 0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  settings = [(0.0, 1)] + runs.channel_settings(_SETTINGS.value)
  layout = pruning_layout.layout_from_model_fn(
      models.build_model_fn('fashion_mnist', model=_MODEL.value, prunable=True), 'channel')
  batch = np.random.default_rng(0).random((_BATCH_SIZE.value, 28, 28), np.float32)
  cases, keys, params = [], [], {}
  for sparsity, multiple in settings:
    report = _export(layout, sparsity, multiple)
    params[(sparsity, multiple)] = report.total_params
    for runtime in RUNTIMES:
      cases.append((runtime, inference.build_runner(
          runtime, onnx_path=report.onnx_path, saved_model_dir=None,
          batch_size=len(batch)), batch))
      keys.append((sparsity, multiple, runtime))
  config = export_configs.TimingConfig(budget_seconds=_BUDGET.value,
                                       warmup_seconds=_WARMUP.value, repeats=_REPEATS.value)
  timings = inference.time_in_turn(cases, config)
  speed = {k: [t.items_per_second for t in found] for k, found in zip(keys, timings)}
  median = lambda values: sorted(values)[len(values) // 2]
  rows = []
  for sparsity, multiple in settings:
    row = collections.OrderedDict(sparsity=sparsity, multiple=multiple,
                                  params=f'{params[(sparsity, multiple)]:,}')
    for runtime in RUNTIMES:
      found, dense = speed[(sparsity, multiple, runtime)], speed[(0.0, 1, runtime)]
      row[f'{runtime} items/s'] = f'{median(found):,.0f}'
      row[f'{runtime} speed-up'] = f'{median(found) / median(dense):.2f}x'
    rows.append(row)
  output = _OUTPUT.value or os.path.join(runs.REPO, 'benchmarks', 'results',
                                         f'compact_speed_{_MODEL.value}')
  with open(output + '.json', 'w') as f:
    json.dump({' '.join(map(str, k)): v for k, v in speed.items()}, f, indent=1)
  from tff_sparsify import files  # pylint: disable=g-import-not-at-top
  runs.write_report([
      f'# Compact channel-pruned {_MODEL.value}, random-init weights: speed before training',
      '', f'Command: `python -m benchmarks.compact_speed --model={_MODEL.value} '
      f'--settings={",".join(_SETTINGS.value)} --repeats={_REPEATS.value} '
      f'--budget_seconds={_BUDGET.value} --warmup_seconds={_WARMUP.value}`; '
      f'{platform.machine()}, {os.cpu_count()} CPUs; batch {_BATCH_SIZE.value}, float32, '
      f'medians of {_REPEATS.value} repeats in turn (every repeat in the .json); uniform '
      'placement, kept channels rounded to the multiple; speed-up against the dense model '
      'on the same runtime.', '', *files.markdown_table(list(rows[0]), rows, str)],
      output + '.md')


if __name__ == '__main__':
  app.run(main)
