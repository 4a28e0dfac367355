"""The generic aggregator of updates that carry a message beside the model delta.

The clients' updates are `OrderedDict(model_delta=..., <message>=...)`
(`Rules.message` of the algorithm, `learning.algorithms.base`: FedSparsify-Local's
masks, PruneFL's squared gradients). The deltas go through any weighted TFF
aggregator (default `tff.aggregators.MeanFactory`, i.e. FedAvg); the messages
are merged by the algorithm's `Rules.merge` (a federated computation body:
Local counts the masks with an unweighted `federated_sum` and merges them
by majority vote; PruneFL sums). The finalizer reads the merged message.
"""

import collections
from typing import Optional

import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)


def weighted_factory_or_mean(
    factory: Optional[tff.aggregators.WeightedAggregationFactory],
) -> tff.aggregators.WeightedAggregationFactory:
  """`factory`, checked, or TFF's weighted `MeanFactory` (FedAvg) if None."""
  if factory is None:
    return tff.aggregators.MeanFactory()
  if not isinstance(factory, tff.aggregators.WeightedAggregationFactory):
    raise TypeError(
        'model_aggregator must be a tff.aggregators.WeightedAggregationFactory, '
        f'got {type(factory).__name__}')
  return factory


class MessageFactory(tff.aggregators.WeightedAggregationFactory):
  """Aggregates `OrderedDict(model_delta, <rules.message>)`: deltas by a weighted factory."""

  def __init__(self, rules, model_delta_factory: Optional[
      tff.aggregators.WeightedAggregationFactory] = None):
    """Initializes the factory.

    Args:
      rules: the algorithm's `learning.algorithms.base.Rules`, with a `message`.
      model_delta_factory: weighted aggregation of the model deltas; default
        `tff.aggregators.MeanFactory()`.
    """
    if not rules.message:
      raise ValueError(f'{type(rules).__name__} sends no message beside the model delta')
    self._rules = rules
    self._model_delta_factory = weighted_factory_or_mean(model_delta_factory)

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    delta_process = self._model_delta_factory.create(value_type.model_delta, weight_type)
    rules = self._rules
    message_type = value_type[rules.message]

    @tff.federated_computation
    def init_fn():
      return delta_process.initialize()

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      delta_output = delta_process.next(state, value.model_delta, weight)
      merged, merge_measurements = rules.merge(message_type, value[rules.message])
      result = tff.federated_zip(collections.OrderedDict(
          [('model_delta', delta_output.result), (rules.message, merged)]))
      measurements = tff.federated_zip(collections.OrderedDict(
          model_delta=delta_output.measurements, **merge_measurements))
      return tff.templates.MeasuredProcessOutput(delta_output.state, result, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)
