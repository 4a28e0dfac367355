r"""Global channel ranking on the paper's FashionMNIST network: does a layer collapse?

Issue 37 measured, before the ranking was made relative to each layer
(`core.masks.channel_masks`): `--sparsity_granularity=channel
--final_sparsity=0.5` with the default global placement (10 IID clients,
15 rounds) kept 1 of the first layer's 128 units, test accuracy 0.2920,
against FedAvg's 0.8416 and uniform placement's 0.8362. This runs the
same three through the training binary, as a user would, and reports per
run the units each hidden layer keeps, the non-zero parameters and the test
accuracy:

  python -m benchmarks.channel_collapse --output=benchmarks/results/channel_collapse.md
"""

import json
import os
import tempfile

from absl import app
from absl import flags
import numpy as np
# At import, not inside `app.run`'s main: TensorFlow imported there builds
# Keras models wrongly (a Flatten layer sees eager mode; flag_utils.run_main).
import tensorflow as tf

from benchmarks import runs
COMMON = dict(dataset='fashion_mnist', partition='iid', num_clients=10, clients_per_round=10,
              total_rounds=15, seed=1990, progress=False, rounds_per_eval=15)
RUNS = {
    'fedavg': dict(algorithm='fedavg'),
    'channel_global': dict(algorithm='fedsparsify_global', sparsity_granularity='channel',
                           final_sparsity=0.5),
    'channel_uniform': dict(algorithm='fedsparsify_global', sparsity_granularity='channel',
                            final_sparsity=0.5, sparsity_placement='uniform'),
}

_OUTPUT = flags.DEFINE_string('output', None, 'Markdown file for the table.')
_EPOCHS = flags.DEFINE_integer('client_epochs_per_round', 4, 'Local epochs per round.')


def _kept_units(model_path: str) -> list[int]:
  model = tf.keras.models.load_model(model_path, compile=False)
  kernels = [w.numpy() for w in model.trainable_weights if len(w.shape) == 2]
  return [int(np.sum(np.any(k != 0, axis=0))) for k in kernels[:-1]]


def run_one(name: str, out: str) -> dict:
  values = dict(COMMON, **RUNS[name], client_epochs_per_round=_EPOCHS.value,
                root_output_dir=out, experiment_name=name)
  done = runs.train(values, name)
  results = os.path.join(out, 'results', name)
  with open(os.path.join(results, 'summary.json')) as f:
    summary = json.load(f)
  warned = [line for line in done.stderr.splitlines() if line.startswith('warning: round')]
  return dict(summary, kept_units=_kept_units(os.path.join(results, 'final_model.keras')),
              warning=warned[0] if warned else '')


def main(argv):
  del argv
  rows = []
  with tempfile.TemporaryDirectory() as out:
    for name in RUNS:
      found = run_one(name, out)
      rows.append((name, found))
      print(name, found, flush=True)
  flags_line = ' '.join(f'--{k}={v}' for k, v in COMMON.items())
  lines = [
      '# Global channel ranking on the paper\'s FashionMNIST network',
      '',
      f'`python -m benchmarks.channel_collapse` (common flags: `{flags_line} '
      f'--client_epochs_per_round={_EPOCHS.value}`).',
      '',
      '| run | units kept (hidden layers, of 128) | non-zero parameters | test accuracy | '
      'warning |',
      '|---|---|---|---|---|',
  ]
  for name, found in rows:
    lines.append(f'| {name} | {", ".join(map(str, found["kept_units"]))} | '
                 f'{found["nonzero_params"]} | {found["test_accuracy"]:.4f} | '
                 f'{found["warning"] or "-"} |')
  runs.write_report(lines, _OUTPUT.value)


if __name__ == '__main__':
  app.run(main)
