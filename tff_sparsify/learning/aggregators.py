"""Merging FedSparsify-Local client masks (Stripelis et al., Eq. 2, `masks.merge_votes`).

    [m]_i = 1  if  sum_k [m_k]_i >= N / 2  else 0
    w = m (.) sum_k |D_k| / |D| w_k

The clients' updates are `OrderedDict(model_delta=..., mask=...)`. The deltas
go through any weighted TFF aggregator (default `tff.aggregators.MeanFactory`,
i.e. FedAvg); the masks are counted with an unweighted `federated_sum` and
merged by majority vote, or, for `mask_aggregation='mean'` (the plain-average
variant of the paper's Figure 4), kept wherever any client kept the weight:
a weighted average of pruned models is zero only where every client pruned.
The merged mask is applied by the finalizer, after the server optimizer step.

Measurement `mask_agreement`: over all prunable positions, the mean fraction
of participating clients whose mask agrees with the merged one (1.0 when all
clients send the same mask).
"""

import collections
from typing import Optional

import numpy as np
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.core import masks as masks_lib

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


class _DeltaAndSideFactory(tff.aggregators.WeightedAggregationFactory):
  """Aggregates `OrderedDict(model_delta, <side>)` updates: the deltas by a weighted factory.

  Subclasses name the side part (`_SIDE`) and aggregate it (`_aggregate_side`,
  a federated computation body returning the server-placed result and a
  dict of server-placed measurements).
  """
  _SIDE = ''

  def __init__(self, model_delta_factory: Optional[
      tff.aggregators.WeightedAggregationFactory] = None):
    self._model_delta_factory = weighted_factory_or_mean(model_delta_factory)

  def _aggregate_side(self, side_type, side):
    raise NotImplementedError

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    delta_process = self._model_delta_factory.create(value_type.model_delta, weight_type)
    side_name = self._SIDE
    side_type = value_type[side_name]

    @tff.federated_computation
    def init_fn():
      return delta_process.initialize()

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      delta_output = delta_process.next(state, value.model_delta, weight)
      side, side_measurements = self._aggregate_side(side_type, value[side_name])
      result = tff.federated_zip(collections.OrderedDict(
          [('model_delta', delta_output.result), (side_name, side)]))
      measurements = tff.federated_zip(collections.OrderedDict(
          model_delta=delta_output.measurements, **side_measurements))
      return tff.templates.MeasuredProcessOutput(delta_output.state, result, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


class MaskMergingFactory(_DeltaAndSideFactory):
  """Aggregates `OrderedDict(model_delta, mask)` client updates (Eq. 2)."""
  _SIDE = 'mask'

  def __init__(
      self, mask_aggregation: str = 'majority_vote',
      model_delta_factory: Optional[tff.aggregators.WeightedAggregationFactory] = None,
  ):
    """Initializes the factory.

    Args:
      mask_aggregation: one of `configs.MASK_AGGREGATIONS` (checked by
        `configs.FedSparsifyConfig`).
      model_delta_factory: weighted aggregation of the model deltas; default
        `tff.aggregators.MeanFactory()`.
    """
    super().__init__(model_delta_factory)
    self._mask_aggregation = mask_aggregation

  def _aggregate_side(self, side_type, side):
    mask_aggregation = self._mask_aggregation

    @tff.tensorflow.computation(side_type, np.int32)
    def merge(votes, num_clients):
      merged, agreement = masks_lib.merge_votes(list(votes), num_clients, mask_aggregation)
      return tuple(merged), agreement

    votes = tff.federated_sum(side)
    num_clients = tff.federated_sum(tff.federated_value(np.int32(1), tff.CLIENTS))
    merged, agreement = tff.federated_map(merge, (votes, num_clients))
    return merged, dict(mask_agreement=agreement)


class ImportanceSummingFactory(_DeltaAndSideFactory):
  """Aggregates PruneFL's `OrderedDict(model_delta, importance)` client updates.

  The deltas go through any weighted TFF aggregator (default `MeanFactory`);
  the importance (each client's squared gradients summed over its local
  steps, sent at readjustment rounds) is summed over the clients, unweighted.
  """
  _SIDE = 'importance'

  def _aggregate_side(self, side_type, side):
    del side_type
    return tff.federated_sum(side), {}
