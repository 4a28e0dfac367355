"""Federated evaluation: TFF's `build_fed_eval` on each client's held-out examples.

People federating on non-IID data care about the worst client as much as
the mean. `build_federated_evaluation_fn` reports, for the global model,

- each metric over all clients' test examples as TFF aggregates it
  (`build_fed_eval` with its default `SumThenFinalizeFactory`: sums of the
  clients' unfinalized metrics, finalized at the server, so accuracy and
  loss are weighted by the clients' example counts);
- its spread across clients: `{metric}_min`, `{metric}_median`,
  `{metric}_max` of the clients' own values, each from the same
  `build_fed_eval` process on that client alone.

That is one call of the evaluation process per client and one for all.
TFF's `FinalizeThenSampleFactory`, which would collect the clients' values
in one call, does not compose with `build_fed_eval` in TFF 0.87 (its state
type changes shape between `initialize` and `next`: `TemplateStateNotAssignableError`,
measured), so the per-client values are taken client by client.

The clients' test examples are a file's `test` split or, with
`--client_test_fraction`, examples held out of each client's own data
(`held_out_split`).
"""

import collections
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)

# Counts, not rates: no spread is reported for them.
_COUNTS = ('num_examples', 'num_batches')


def spread(values_by_client: list[dict]) -> collections.OrderedDict:
  """`{metric}_min|_median|_max` over the clients' own metric values (counts excluded)."""
  found = collections.OrderedDict()
  for name in values_by_client[0]:
    if name in _COUNTS:
      continue
    values = np.array([float(v[name]) for v in values_by_client])
    found[f'{name}_min'] = float(values.min())
    found[f'{name}_median'] = float(np.median(values))
    found[f'{name}_max'] = float(values.max())
  return found


def build_federated_evaluation_fn(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    client_test: tff.simulation.datasets.ClientData,
    *, element_fn: Callable, batch_size: int = 256,
) -> Callable[[tff.learning.models.ModelWeights], collections.OrderedDict]:
  """`weights -> OrderedDict(metrics over all clients, then their spread, num_clients)`.

  Args:
    model_fn: the learning process's `model_fn` (same weights structure).
    client_test: each client's test examples (`OrderedDict(x, y)` elements).
    element_fn: a batch of `client_test` to the model's input.
    batch_size: evaluation batch size.
  """
  process = tff.learning.algorithms.build_fed_eval(model_fn)
  datasets = [client_test.create_tf_dataset_for_client(c).batch(batch_size).map(element_fn)
              for c in client_test.client_ids]

  def evaluate(datasets_, weights):
    state = process.set_model_weights(process.initialize(), weights)
    return process.next(state, datasets_).metrics

  return _evaluation_fn(datasets, evaluate)


def build_federated_evaluation_fn_by_id(
    model_fn: Callable[[], tff.learning.models.VariableModel], federation, context,
    dataset_computation: tff.Computation, *, split: str,
) -> Callable[[tff.learning.models.ModelWeights], collections.OrderedDict]:
  """As `build_federated_evaluation_fn`, at the workers holding the clients' `split`.

  `dataset_computation`: a client argument to its batched test examples
  (`client_ids.build_dataset_computation`); each client is evaluated on
  the worker that holds it (`WorkerPoolContext.clients_per_worker`).
  """
  process = tff.learning.algorithms.build_fed_eval(model_fn)
  composed = tff.simulation.compose_dataset_computation_with_learning_process(
      dataset_computation, process)
  client_ids = list(federation.clients(split))

  def evaluate(ids, weights):
    arguments, counts = federation.arguments(ids, [0] * len(ids), split)
    state = process.set_model_weights(process.initialize(), weights)
    with context.clients_per_worker(counts):
      return composed.next(state, arguments).metrics

  return _evaluation_fn(client_ids, evaluate)


def _evaluation_fn(clients: list, evaluate: Callable) -> Callable:
  """`weights -> metrics of all `clients`, their spread and their number`."""
  def current(clients_, weights):
    metrics = evaluate(clients_, weights)
    return collections.OrderedDict(metrics['client_work']['eval']['current_round_metrics'])

  def evaluation_fn(weights):
    found = collections.OrderedDict(
        (name, float(value)) for name, value in current(clients, weights).items())
    found.update(spread([current([c], weights) for c in clients]))
    found['num_clients'] = len(clients)
    return found

  return evaluation_fn


def keep_part(dataset: tf.data.Dataset, fraction: float, test: bool) -> tf.data.Dataset:
  """A client's test part (`test`) or training part of `dataset` (`held_out_split`)."""
  def is_test(index):
    return tf.floor(tf.cast(index + 1, tf.float64) * fraction) > tf.floor(
        tf.cast(index, tf.float64) * fraction)

  return dataset.enumerate().filter(
      lambda i, _: tf.equal(is_test(i), test)).map(lambda _, e: e)


def held_out_split(client_data: tff.simulation.datasets.ClientData, fraction: float):
  """(train, test) `ClientData`: of each client's examples, a `fraction` held out for tests.

  Example i (in the client's order) is held out when floor((i + 1) f) >
  floor(i f): floor(n f) examples spread evenly through the client's data,
  the same on every run, without knowing n beforehand (`keep_part`, also
  what a worker applies to the clients it serves by id).
  """
  def part(test: bool):
    return client_data.preprocess(lambda dataset: keep_part(dataset, fraction, test))

  return part(False), part(True)
