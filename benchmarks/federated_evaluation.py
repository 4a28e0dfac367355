r"""Seconds per federated evaluation: one call for all clients against one per client.

`--evaluation=federated` reports the metrics over all clients and their
spread (min, median, max of the clients' own values). Before, that was one
`build_fed_eval` call for all clients plus one per client (`before` below,
the code as it was, composed with the dataset computation as the binary
ran it); now one call maps `build_fed_eval`'s client computation over the
clients and returns each client's unfinalized metrics
(`evaluation.build_federated_evaluation_fn_by_id`).

Both on the binary's path: the paper's FC model (random weights, seeded),
`--sizes` clients of `--examples_per_client` FashionMNIST training
examples each (a `tensor_dir` the worker reads, as the built-in data are
given to the workers), served by id by one local worker, evaluation batch
256. Per size, the two are run in turn `--repeats` times; reported: median
seconds and spread of each, the ratio of the medians, and the largest
difference between their metrics (same weights, same examples).

  python -m benchmarks.federated_evaluation

Results: benchmarks/results/federated_evaluation.{json,md}.
"""

import collections
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from benchmarks import runs
from tff_sparsify import files
from tff_sparsify.learning import models
from tff_sparsify.simulation import client_ids
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import evaluation
from tff_sparsify.simulation import execution
from tff_sparsify.simulation import run_data as data
from tff_sparsify.simulation import sources
from tff_sparsify.simulation.sources import tensor_dir

execution.drop_import_time_default_context()

_SIZES = flags.DEFINE_list('sizes', ['10', '100', '1000'], 'Numbers of clients.')
_EXAMPLES = flags.DEFINE_integer('examples_per_client', 60, 'Examples per client.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed evaluations of each kind per size.')
_OUTPUT = flags.DEFINE_string(
    'output', os.path.join(os.path.dirname(__file__), 'results', 'federated_evaluation'),
    'Output path prefix (.json and .md are appended).')
SEED = 1990


def _before(model_fn, federation, context, dataset_computation, split):
  """The evaluation as it was: `build_fed_eval` on all clients, then on each alone."""
  process = tff.learning.algorithms.build_fed_eval(model_fn)
  composed = tff.simulation.compose_dataset_computation_with_learning_process(
      dataset_computation, process)
  ids = list(federation.clients(split))

  def current(clients, weights):
    arguments, counts = federation.arguments(clients, [0] * len(clients), split)
    state = process.set_model_weights(process.initialize(), weights)
    with context.clients_per_worker(counts):
      metrics = composed.next(state, arguments).metrics
    return collections.OrderedDict(metrics['client_work']['eval']['current_round_metrics'])

  def evaluation_fn(weights):
    found = collections.OrderedDict(
        (name, float(value)) for name, value in current(ids, weights).items())
    found.update(evaluation.spread([current([c], weights) for c in ids]))
    found['num_clients'] = len(ids)
    return found

  return evaluation_fn


def _measure(size, centralized, keras_model_fn, weights):
  rng = np.random.default_rng(SEED)
  picks = rng.integers(0, len(centralized.train_labels), (size, _EXAMPLES.value))
  model_fn = models.model_fn_from(keras_model_fn)
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, 'clients')
    tensor_dir.write({sources.TRAIN: collections.OrderedDict(
        (data_sources.client_id(i), (centralized.train_images[p],
                                     centralized.train_labels[p].astype(np.int64)))
        for i, p in enumerate(picks))}, root)
    with execution.worker_pool_context(num_local_workers=1,
                                       client_data=f'tensor_dir:{root}') as context:
      federation = client_ids.discover(context, shared=True)
      computation = client_ids.build_dataset_computation(
          federation, dict(x='x', y='y'), lambda d, seed: d.batch(256).map(data.normalize))
      kinds = collections.OrderedDict(
          before=_before(model_fn, federation, context, computation, sources.TRAIN),
          one_call=evaluation.build_federated_evaluation_fn_by_id(
              model_fn, federation, context, computation, split=sources.TRAIN))
      seconds = {k: [] for k in kinds}
      found = {}
      for repeat in range(_REPEATS.value + 1):  # The first: TFF compiles; not timed.
        for kind, evaluate in kinds.items():
          start = time.perf_counter()
          found[kind] = evaluate(weights)
          elapsed = time.perf_counter() - start
          if repeat:
            seconds[kind].append(elapsed)
          print(f'{size} clients, {kind}: {elapsed:.2f} s', flush=True)
  difference = max(abs(found['before'][k] - found['one_call'][k]) for k in found['before'])
  medians = {k: statistics.median(v) for k, v in seconds.items()}
  return dict(clients=size, seconds=seconds, median_s=medians,
              ratio=medians['one_call'] / medians['before'],
              max_abs_metric_difference=difference,
              accuracy=found['one_call']['sparse_categorical_accuracy'],
              metric_names=sorted(found['one_call']))


def _markdown(rows, meta):
  lines = ['# Seconds per federated evaluation: one call against one per client', '',
           f'{meta["cpus"]} CPUs. Command: `python -m benchmarks.federated_evaluation '
           f'{meta["args"]}`. The paper\'s FC model (seeded random weights), FashionMNIST '
           f'training examples, {meta["examples_per_client"]} per client, one local worker '
           'reading them by id; the two kinds run in turn, after one untimed run each.', '']
  lines += files.markdown_table(
      ['clients', 'before: s (median)', 'before min-max', 'one call: s (median)',
       'one call min-max', 'one call / before', 'max abs metric difference'],
      [{'clients': r['clients'],
        'before: s (median)': f'{r["median_s"]["before"]:.2f}',
        'before min-max': f'{min(r["seconds"]["before"]):.2f}-{max(r["seconds"]["before"]):.2f}',
        'one call: s (median)': f'{r["median_s"]["one_call"]:.2f}',
        'one call min-max': (f'{min(r["seconds"]["one_call"]):.2f}-'
                             f'{max(r["seconds"]["one_call"]):.2f}'),
        'one call / before': f'{r["ratio"]:.3f}x',
        'max abs metric difference': f'{r["max_abs_metric_difference"]:.1e}'} for r in rows])
  lines += ['', '`before`: `build_fed_eval` on all clients, then on each client alone (the '
            'spread), as `--evaluation=federated` did; `one call`: its client computation '
            'mapped over all clients once, each client\'s unfinalized metrics returned, '
            'summed and finalized at the coordinator. The difference is over every reported '
            'metric (weighted means, min, median, max, counts).']
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  tf.keras.utils.set_random_seed(SEED)
  centralized = data_sources.load_centralized('fashion_mnist')
  keras_model_fn = lambda: models.fashion_mnist_fc(seed=SEED)  # pylint: disable=unnecessary-lambda-assignment
  weights = tff.learning.models.ModelWeights.from_model(keras_model_fn())
  rows = [_measure(int(size), centralized, keras_model_fn, weights) for size in _SIZES.value]
  meta = dict(cpus=os.cpu_count(), machine=platform.processor() or platform.machine(),
              examples_per_client=_EXAMPLES.value,
              args=runs.flag_args(('sizes', 'examples_per_client', 'repeats')))
  runs.write_results(_OUTPUT.value, dict(meta=meta, rows=rows), _markdown(rows, meta))


if __name__ == '__main__':
  app.run(main)
