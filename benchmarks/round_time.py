r"""Time per round: TFF FedAvg against plain Keras and against FedSparsify.

Same model (the paper's FashionMNIST FC), same clients, same local training
(1 epoch of SGD, batch 32, per client, then a weighted average): once as a TFF
FedAvg round on the owned C++ worker, once as `model.fit` per client in this
process followed by a NumPy average. Each variant runs `--warmup_rounds`
untimed rounds, then `--rounds` timed ones; the median is reported. Variants
are interleaved round by round so that machine noise hits them alike.

  python -m benchmarks.round_time --rounds=5

FedSparsify-Global and -Local (S_T = 0.9 over the warm-up plus timed rounds,
so they prune every round) against TFF's FedAvg, same clients, same rounds:

  python -m benchmarks.round_time --rounds=15 \
    --variants=tff_reduce,fedsparsify_global,fedsparsify_local \
    --output=benchmarks/results/round_time_fedsparsify

Results: benchmarks/results/round_time{,_fedsparsify}.{json,md}.
"""

import collections
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify.learning import models
from tff_sparsify.learning import registry
from tff_sparsify.simulation import run_data as data
from tff_sparsify.simulation import execution
from tff_sparsify.simulation import training

# Before absl parses the flags: a flag it refuses exits at once, and TFF's
# import-time context would then print a traceback at shutdown.
execution.drop_import_time_default_context()

_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds per variant.')
_WARMUP_ROUNDS = flags.DEFINE_integer('warmup_rounds', 1, 'Untimed rounds.')
_NUM_CLIENTS = flags.DEFINE_integer('num_clients', 10, 'Clients (all train).')
_BATCH_SIZE = flags.DEFINE_integer('client_batch_size', 32, 'Batch size.')
_EPOCHS = flags.DEFINE_integer('client_epochs_per_round', 1, 'Local epochs.')
_LR = flags.DEFINE_float('client_learning_rate', 0.02, 'Client SGD lr.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'FashionMNIST IDX dir.')
_VARIANTS = flags.DEFINE_list(
    'variants', ['keras', 'tff_reduce', 'tff_iterator'],
    'Which to time: keras, tff_reduce (TFF FedAvg, default dataset.reduce '
    'loop), tff_iterator (iterator loop), fedsparsify_global, '
    'fedsparsify_local (S_T=0.9).')
_OUTPUT = flags.DEFINE_string(
    'output', os.path.join(os.path.dirname(__file__), 'results', 'round_time'),
    'Output path prefix (.json and .md are appended).')
SEED = 1990


class KerasRound:
  """FedAvg round in plain Keras: fit each client from the global weights."""

  def __init__(self):
    self.model = models.create_model('fashion_mnist', seed=SEED)
    self.model.compile(
        optimizer=tf.keras.optimizers.SGD(_LR.value),
        loss=models.loss_fn())
    self.weights = self.model.get_weights()

  def __call__(self, datasets, counts):
    local_weights = []
    for ds in datasets:
      self.model.set_weights(self.weights)
      self.model.fit(ds.map(lambda e: (e['x'], e['y'])), epochs=1, verbose=0)
      local_weights.append(self.model.get_weights())
    self.weights = [np.average(layer, axis=0, weights=counts)
                    for layer in zip(*local_weights)]


class TffRound:

  def __init__(self, name, loop=tff.learning.LoopImplementation.DATASET_REDUCE):
    algorithm = registry.get(name)
    config = algorithm.from_flags(dict(
        client_learning_rate=_LR.value, final_sparsity=0.9,
        total_rounds=_WARMUP_ROUNDS.value + _ROUNDS.value))
    model_fn = models.build_model_fn(
        'fashion_mnist', seed=SEED, prunable=registry.uses_prunable_model(config))
    self.process = algorithm.build(model_fn, config, loop_implementation=loop)
    self.state = self.process.initialize()

  def __call__(self, datasets, counts):
    del counts  # TFF weights clients by the examples it trains on.
    self.state = self.process.next(self.state, datasets).state


def num_examples(dataset: tf.data.Dataset) -> int:
  return int(dataset.reduce(0, lambda n, batch: n + tf.shape(batch['y'])[0]))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  tf.keras.utils.set_random_seed(SEED)
  execution.drop_import_time_default_context()
  federated = data.load_federated(
      'fashion_mnist', partition_type='non_iid', num_clients=_NUM_CLIENTS.value,
      seed=SEED, classes_per_client=2, data_dir=_DATA_DIR.value)
  selection_fn = training.build_training_selection_fn(
      federated.train, clients_per_round=_NUM_CLIENTS.value,
      batch_size=_BATCH_SIZE.value, epochs=_EPOCHS.value, seed=SEED)

  tff_variants = {
      'tff_reduce': ('fedavg', tff.learning.LoopImplementation.DATASET_REDUCE),
      'tff_iterator': ('fedavg', tff.learning.LoopImplementation.DATASET_ITERATOR),
      'fedsparsify_global': ('fedsparsify_global',),
      'fedsparsify_local': ('fedsparsify_local',),
  }
  times = collections.defaultdict(list)
  with execution.local_cpp_execution_context():
    unknown = set(_VARIANTS.value) - set(tff_variants) - {'keras'}
    if unknown:
      raise app.UsageError(f'--variants: unknown variants {sorted(unknown)}')
    # TFF traces its models in graphs; a Keras model built before that
    # tracing is left in an invalid state for `fit`, so Keras comes last.
    runners = {n: TffRound(*tff_variants[n]) for n in _VARIANTS.value if n in tff_variants}
    if 'keras' in _VARIANTS.value:
      runners['keras'] = KerasRound()
    total_rounds = _WARMUP_ROUNDS.value + _ROUNDS.value
    for round_num in range(1, total_rounds + 1):
      datasets = selection_fn(round_num)
      counts = [num_examples(ds) for ds in datasets]  # Outside the timing.
      for name, runner in runners.items():
        start = time.perf_counter()
        runner(datasets, counts)
        elapsed = time.perf_counter() - start
        if round_num > _WARMUP_ROUNDS.value:
          times[name].append(elapsed)
        print(f'round {round_num} {name}: {elapsed:.3f} s', flush=True)

  medians = {name: statistics.median(t) for name, t in times.items()}
  result = collections.OrderedDict(
      command='python -m benchmarks.round_time ' + ' '.join(sys.argv[1:]),
      setup=dict(model='fashion_mnist_fc', num_clients=_NUM_CLIENTS.value,
                 batch_size=_BATCH_SIZE.value, epochs=_EPOCHS.value,
                 examples_per_round=int(sum(counts)),
                 machine=f'{platform.machine()}, {os.cpu_count()} cores'),
      seconds_per_round=times, median_seconds=medians,
      ratio_to_keras={n: medians[n] / medians['keras'] for n in medians}
      if 'keras' in medians else {},
      ratio_to_tff_fedavg={n: medians[n] / medians['tff_reduce'] for n in medians}
      if 'tff_reduce' in medians else {},
  )
  os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
  with open(_OUTPUT.value + '.json', 'w') as f:
    json.dump(result, f, indent=2)
  lines = [
      '# Time per round', '',
      f'Command: `{result["command"]}`', '',
      f'Setup: {json.dumps(result["setup"])}', '',
      '| variant | median s/round | ratio to keras | ratio to TFF FedAvg |',
      '|---|---|---|---|',
  ]
  for name, median in medians.items():
    to_keras = result['ratio_to_keras'].get(name, float('nan'))
    to_fedavg = result['ratio_to_tff_fedavg'].get(name, float('nan'))
    lines.append(f'| {name} | {median:.3f} | {to_keras:.2f} | {to_fedavg:.2f} |')
  with open(_OUTPUT.value + '.md', 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  app.run(main)
