r"""BatchNormalization's moving statistics aggregated, against never updated (issue 33).

A small CNN with BatchNormalization, ours (not the paper's, defined here:
`small_bn_cnn`), on FashionMNIST (shards partition, 10 clients, 5 sampled
per round, 1 local epoch, batch 32, client learning rate 0.05), trained
`--rounds` rounds with FedAvg and with FedSparsify-Global at 0.9, each
twice from the same initial weights and on the same clients:

- `aggregated`: this package (the clients' moving statistics averaged, like
  the update; `learning.statistics`);
- `never_updated`: the behaviour before, and TFF's own: FedAvg is
  `tff.learning.algorithms.build_weighted_fed_avg`, FedSparsify is built with
  `aggregate_statistics=False`; the global model keeps its initial moving
  mean 0 and variance 1.

Test accuracy of the global model (central FashionMNIST test set, Keras
`evaluate`, inference mode: the moving statistics normalize) every 5
rounds. Each variant's result is written when it finishes and a rerun skips
the finished ones.

  python -m benchmarks.batch_norm --rounds=20

Results: benchmarks/results/batch_norm.{json,md}.
"""

import collections
import json
import os
import platform

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import files
from tff_sparsify.binaries import flag_utils
from tff_sparsify.learning import configs
from tff_sparsify.learning import registry
from tff_sparsify.learning import models
from tff_sparsify.learning import pruning
from tff_sparsify.simulation import run_data as data
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import execution
from tff_sparsify.simulation import training

_ROUNDS = flags.DEFINE_integer('rounds', 20, 'Federated rounds per variant.')
_OUTPUT = flags.DEFINE_string(
    'output', os.path.join(os.path.dirname(__file__), 'results', 'batch_norm'),
    'Output path prefix (.json and .md are appended).')
SEED = 1990
LEARNING_RATE = 0.05
VARIANTS = ('fedavg/aggregated', 'fedavg/never_updated',
            'fedsparsify_global_0.9/aggregated', 'fedsparsify_global_0.9/never_updated')


def small_bn_cnn(seed: int = SEED) -> tf.keras.Model:
  """Ours: Conv16-BN-ReLU-MaxPool-Conv32-BN-ReLU-MaxPool-Flatten-Dense64-ReLU-Dense10 (3x3, same)."""
  layers = tf.keras.layers
  init = lambda i: tf.keras.initializers.GlorotUniform(seed + i)
  inputs = tf.keras.Input((28, 28))
  x = layers.Reshape((28, 28, 1))(inputs)
  for i, filters in enumerate((16, 32)):
    x = layers.Conv2D(filters, 3, padding='same', kernel_initializer=init(i))(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.MaxPool2D()(x)
  x = layers.Dense(64, activation='relu', kernel_initializer=init(2))(layers.Flatten()(x))
  return tf.keras.Model(inputs, layers.Dense(10, kernel_initializer=init(3))(x),
                        name='small_bn_cnn')


def _process(variant: str):
  algorithm, statistics = variant.split('/')
  aggregated = statistics == 'aggregated'
  if algorithm == 'fedavg' and not aggregated:
    return tff.learning.algorithms.build_weighted_fed_avg(
        models.model_fn_from(small_bn_cnn),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(LEARNING_RATE),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0)), small_bn_cnn
  sparsity = 0.9 if algorithm.startswith('fedsparsify') else 0.0
  keras_model_fn = ((lambda: pruning.wrap_for_pruning(small_bn_cnn())) if sparsity
                    else small_bn_cnn)
  config = configs.FedSparsifyConfig(
      client_learning_rate=LEARNING_RATE,
      schedule=configs.ScheduleConfig(sparsity, max(_ROUNDS.value, 2)))
  return registry.build_process(
      models.model_fn_from(keras_model_fn), config,
      aggregate_statistics=aggregated), keras_model_fn


def _run(variant, client_data, test_data):
  tf.keras.utils.set_random_seed(SEED)
  process, keras_model_fn = _process(variant)
  select = training.build_training_selection_fn(
      client_data, clients_per_round=5, batch_size=32, epochs=1, seed=SEED)
  keras_model = keras_model_fn()
  keras_model.compile(loss=models.loss_fn(), metrics=['accuracy'])
  accuracy = collections.OrderedDict()
  with execution.worker_pool_context(num_local_workers=1):
    state = process.initialize()
    for round_num in range(1, _ROUNDS.value + 1):
      state = process.next(state, select(round_num)).state
      if round_num % 5 == 0 or round_num == _ROUNDS.value:
        process.get_model_weights(state).assign_weights_to(keras_model)
        accuracy[str(round_num)] = float(keras_model.evaluate(test_data, verbose=0)[1])
        print(f'{variant} round {round_num}: test accuracy {accuracy[str(round_num)]:.4f}',
              flush=True)
  moving_variance = [w.numpy() for w in keras_model.weights if 'moving_variance' in w.name]
  return dict(test_accuracy=accuracy,
              moving_variance_mean=[float(np.mean(v)) for v in moving_variance])


def main(argv):
  del argv
  execution.drop_import_time_default_context()
  centralized = data_sources.load_centralized('fashion_mnist')
  shards = data_sources.partition(centralized.train_labels, partition_type='shards',
                                  num_clients=10, seed=SEED)
  run_data = data.builtin_run_data(centralized, shards)
  path = _OUTPUT.value + '.json'
  results = {}
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)['variants']
  for variant in VARIANTS:
    if str(_ROUNDS.value) in results.get(variant, {}).get('test_accuracy', {}):
      continue
    results[variant] = _run(variant, run_data.train, run_data.test_batches())
    _write(results)


def _write(results):
  result = dict(command=f'python -m benchmarks.batch_norm --rounds={_ROUNDS.value}',
                machine=f'{platform.machine()}, {os.cpu_count()} cores',
                variants=results)
  files.atomic_write_text(_OUTPUT.value + '.json', json.dumps(result, indent=2) + '\n')
  rounds = sorted({int(r) for v in results.values() for r in v['test_accuracy']})
  lines = ['# BatchNormalization: moving statistics aggregated against never updated', '',
           f'`{result["command"]}` ({result["machine"]}). `small_bn_cnn` (ours, in '
           '`benchmarks/batch_norm.py`), FashionMNIST shards, 10 clients, 5 per round, 1 local '
           'epoch, batch 32, lr 0.05; test accuracy on the 10,000 test images.', '',
           '| variant | ' + ' | '.join(f'round {r}' for r in rounds)
           + ' | mean moving variance per BN layer |',
           '|---|' + '---|' * (len(rounds) + 1)]
  for name, v in results.items():
    cells = [f'{v["test_accuracy"][str(r)]:.4f}' if str(r) in v['test_accuracy'] else ''
             for r in rounds]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' | '
                 + ', '.join(f'{m:.3f}' for m in v['moving_variance_mean']) + ' |')
  files.atomic_write_text(_OUTPUT.value + '.md', '\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  flag_utils.run_main(main)
