"""Federated evaluation: TFF's `build_fed_eval` metrics on each client's held-out examples.

People federating on non-IID data care about the worst client as much as
the mean. `build_federated_evaluation_fn` reports, for the global model,

- each metric over all clients' test examples as `build_fed_eval` with its
  default `SumThenFinalizeFactory` aggregates it: sums of the clients'
  unfinalized metrics, finalized with the model's finalizers (accuracy and
  loss weighted by the clients' example counts);
- its spread across clients: `{metric}_min`, `{metric}_median`,
  `{metric}_max` of the clients' own values (each client's unfinalized
  metrics finalized alone, what `build_fed_eval` on that client gives).

One call for all clients: `build_fed_eval`'s own client computation
(`_tff_internals.local_evaluation`) mapped over the clients, its per-client
unfinalized metrics returned (CLIENTS-placed, no aggregation), summed and
finalized here. This replaces one `build_fed_eval` call per client plus one
for all (100 clients of 60 examples: 8.17 s -> 1.04 s, same metrics to
2.4e-7: `benchmarks/results/federated_evaluation.md`), which TFF 0.87
could not fold into one: `FinalizeThenSampleFactory` does not compose with
`build_fed_eval` (its state type changes shape between `initialize` and
`next`: `TemplateStateNotAssignableError`, measured). Checked against
`build_fed_eval` client by client in `tests/test_evaluation.py`.

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
from tff_sparsify import _tff_internals as tffi

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
  per_client, finalizers = _per_client_metrics(model_fn)
  datasets = [client_test.create_tf_dataset_for_client(c).batch(batch_size).map(element_fn)
              for c in client_test.client_ids]
  return _evaluation_fn(lambda weights: per_client(weights, datasets), finalizers, len(datasets))


def build_federated_evaluation_fn_by_id(
    model_fn: Callable[[], tff.learning.models.VariableModel], federation, context,
    dataset_computation: tff.Computation, *, split: str,
) -> Callable[[tff.learning.models.ModelWeights], collections.OrderedDict]:
  """As `build_federated_evaluation_fn`, at the workers holding the clients' `split`.

  `dataset_computation`: a client argument to its batched test examples
  (`client_ids.build_dataset_computation`); each client is evaluated on
  the worker that holds it (`WorkerPoolContext.clients_per_worker`).
  """
  per_client, finalizers = _per_client_metrics(model_fn)
  composed = tff.simulation.compose_dataset_computation_with_computation(
      dataset_computation, per_client)
  client_ids = list(federation.clients(split))
  arguments, counts = federation.arguments(client_ids, [0] * len(client_ids), split)

  def evaluate(weights):
    with context.clients_per_worker(counts):
      return composed(weights, arguments)

  return _evaluation_fn(evaluate, finalizers, len(client_ids))


def _per_client_metrics(model_fn):
  """(`(weights@SERVER, {batches}@CLIENTS) -> {unfinalized metrics}@CLIENTS`, finalizers)."""
  with tf.Graph().as_default():  # As build_fed_eval reads them.
    model = model_fn()
    batch_type = tff.types.tensorflow_to_type(model.input_spec)
  finalizers = model.metric_finalizers()
  weights_type = tff.learning.models.weights_type_from_model(model_fn)
  local = tffi.local_evaluation(model_fn, weights_type, batch_type)

  @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                             tff.FederatedType(tff.SequenceType(batch_type), tff.CLIENTS))
  def per_client(weights, batches):
    outputs = tff.federated_map(local, (tff.federated_broadcast(weights), batches))
    return outputs.local_outputs

  return per_client, finalizers


class _Finalize:
  """The model's metric finalizers as one TensorFlow graph, run per set of unfinalized metrics.

  Keras metrics' finalizers make a metric inside a `tf.function`, which
  works in a graph (TFF runs them in a computation) and not eagerly a
  second time; a graph built once here serves every client and round.
  """

  def __init__(self, finalizers: dict):
    self._finalizers = finalizers
    self._graph = None

  def _build(self, example):
    self._graph = tf.Graph()
    with self._graph.as_default():
      self._inputs = tf.nest.map_structure(
          lambda v: tf.compat.v1.placeholder(np.asarray(v).dtype, np.shape(v)), example)
      self._outputs = collections.OrderedDict(
          (name, finalize(self._inputs[name])) for name, finalize in self._finalizers.items())
    self._session = tf.compat.v1.Session(graph=self._graph)

  def __call__(self, unfinalized) -> collections.OrderedDict:
    if self._graph is None:
      self._build(unfinalized)
    feed = dict(zip(tf.nest.flatten(self._inputs), tf.nest.flatten(unfinalized)))
    return collections.OrderedDict(
        (name, float(value)) for name, value in self._session.run(self._outputs, feed).items())


def _summed(by_client: list) -> dict:
  """The clients' unfinalized metrics summed (in float64, back in each value's dtype)."""
  return tf.nest.map_structure(
      lambda *values: np.sum(np.array(values, np.float64), axis=0).astype(
          np.asarray(values[0]).dtype), *by_client)


def _evaluation_fn(evaluate: Callable, finalizers: dict, num_clients: int) -> Callable:
  """`weights -> metrics of all clients, their spread and their number`."""
  finalize = _Finalize(finalizers)

  def evaluation_fn(weights):
    by_client = list(evaluate(weights))
    if len(by_client) != num_clients:
      raise ValueError(f'{len(by_client)} clients evaluated, {num_clients} expected')
    found = finalize(_summed(by_client))
    found.update(spread([finalize(u) for u in by_client]))
    found['num_clients'] = num_clients
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
