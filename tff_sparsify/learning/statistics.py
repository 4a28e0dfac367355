"""BatchNormalization's moving statistics, aggregated like the model update.

TFF's learning processes train and aggregate a model's trainable variables
only; the non-trainable ones go from the server to the clients and never
back. Keras updates BatchNormalization's moving mean and variance in the
forward pass, so the clients' statistics were thrown away and a global model
kept its initial 0 and 1 through any number of rounds. Here the clients send
how their statistics moved, `initial - final` (as the model delta), in the
update's `statistics` part; `StatisticsMeanFactory` takes their weighted mean
(weights: the clients' example counts, as FedAvg's) and the finalizer sets

    statistics^(t+1) = statistics^(t) - sum_k |D_k| / |D| (statistics^(t) - statistics_k)
                     = sum_k |D_k| / |D| statistics_k,

the example-weighted mean of what the clients ended their local training
with. One client, one local epoch: exactly the statistics of Keras `fit`.
A non-trainable variable no client changes has a zero delta and keeps its
value bit for bit (frozen layers). Which variables: `layout.PruningLayout.statistics`.
"""

import collections
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.learning import message_aggregation

STATISTICS = 'statistics'
MODEL_DELTA = 'model_delta'


def with_statistics(update, statistics_delta):
  """The client update with `statistics_delta` added (unchanged if there is none).

  A bare model delta becomes `OrderedDict(model_delta=..., statistics=...)`;
  an `OrderedDict` update gets a `statistics` entry.
  """
  if not statistics_delta:
    return update
  if isinstance(update, collections.OrderedDict):
    return collections.OrderedDict(update, **{STATISTICS: tuple(statistics_delta)})
  return collections.OrderedDict([(MODEL_DELTA, update), (STATISTICS, tuple(statistics_delta))])


def apply(non_trainable, indices, statistics_delta):
  """`non_trainable` with `statistics^(t) - delta` at `indices` (a non-finite delta keeps the old)."""
  updated = list(non_trainable)
  for i, delta in zip(indices, statistics_delta):
    new = updated[i] - delta
    updated[i] = tf.where(tf.math.is_finite(new), new, updated[i])
  return updated


class StatisticsMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """Aggregates updates with a `statistics` part: its weighted mean, the rest by `factory`.

  The rest (the bare model delta, or `OrderedDict(model_delta, mask|importance)`)
  goes to `factory` as it would without statistics, so its measurements and
  any compression are unchanged; the statistics go through TFF's weighted
  `MeanFactory`, uncompressed. The result has the value's structure.
  """

  def __init__(self, factory: Optional[tff.aggregators.WeightedAggregationFactory] = None):
    self._factory = message_aggregation.weighted_factory_or_mean(factory)

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    rest_names = [name for name, _ in tff.structure.iter_elements(value_type)
                  if name != STATISTICS]
    if rest_names == [MODEL_DELTA]:
      rest_type = value_type[MODEL_DELTA]
    else:
      rest_type = tff.StructWithPythonType(
          [(name, value_type[name]) for name in rest_names], collections.OrderedDict)
    rest_process = self._factory.create(rest_type, weight_type)
    mean_process = tff.aggregators.MeanFactory().create(value_type[STATISTICS], weight_type)

    @tff.federated_computation
    def init_fn():
      return tff.federated_zip(collections.OrderedDict(
          model=rest_process.initialize(), statistics=mean_process.initialize()))

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      if rest_names == [MODEL_DELTA]:
        rest = value[MODEL_DELTA]
      else:
        rest = tff.federated_zip(collections.OrderedDict(
            (name, value[name]) for name in rest_names))
      rest_output = rest_process.next(state.model, rest, weight)
      mean_output = mean_process.next(state.statistics, value[STATISTICS], weight)
      if rest_names == [MODEL_DELTA]:
        parts = [(MODEL_DELTA, rest_output.result)]
      else:
        parts = [(name, rest_output.result[name]) for name in rest_names]
      result = tff.federated_zip(collections.OrderedDict(
          parts + [(STATISTICS, mean_output.result)]))
      new_state = tff.federated_zip(collections.OrderedDict(
          model=rest_output.state, statistics=mean_output.state))
      return tff.templates.MeasuredProcessOutput(new_state, result, rest_output.measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)
