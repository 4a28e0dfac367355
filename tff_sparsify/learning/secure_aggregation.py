"""Secure aggregation of the model updates with TFF's secure-sum intrinsics, its bytes measured.

`--secure_aggregation` sums the clients' updates with
`tff.aggregators.SecureSumFactory` (`tff.federated_secure_sum_bitwidth`:
each float clipped to bounds and rounded to a 32-bit integer, summed, and
mapped back):

- alone: the weighted mean that `tff.learning.secure_aggregator(zeroing=False,
  clipping=False)` builds, from the same public pieces (`MeanFactory` over a
  secure sum of the weighted values, its bounds from TFF's no-noise 95th
  percentile estimate of the largest value, initially +-100, and a secure
  sum of the weights within [0, 2^20 - 1]);
- with differential privacy (`learning.dp_aggregation`): the clipped
  updates' secure sum within +-dp_clip_norm (an L2 clip bounds every
  coordinate), as `DifferentiallyPrivateFactory`'s record aggregation,
  before the server's noise; with adaptive clipping, whose clip moves,
  within +-1024 x the first clip (`configs.ADAPTIVE_SECURE_BOUND`: fixed
  bounds, not estimated from the clients' values, which would leak them
  outside the noise). Rounding to 32 bits moves a clipped update by
  at most sqrt(n) C / 2^32 in L2 (8.0e-8 C for the paper's n = 118,282):
  the sensitivity grows by that, which the accounting ignores.

`MeasuredSecureSumFactory` wraps each secure sum and measures the bytes of
its messages: per client, every value as an integer of
`wire.secure_sum_bits(clients_per_round)` bits (the protocol's ring), in
`bytes_uploaded`. A mask that the server knows (FedSparsify-Global's)
would let the clients secure-sum the kept coordinates only; that smaller
message is counted by the client work, which holds the mask
(`secure_sum_bytes_known_mask`), and is not what the simulation sums.

In simulation and on our workers TFF's secure intrinsics are replaced by
their bodies (`simulation.execution.insecure_in_simulation`, as TFF's
test contexts do): the integers, bounds and bit widths are the protocol's,
the secrecy is not. What a real deployment would hide from the server
(each client's update) is, here, computed in the clear by the worker that
runs that client.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.compression import wire

# `tff.learning.secure_aggregator`'s bounds (TFF 0.87).
WEIGHT_UPPER_BOUND = float(2**20 - 1)


def value_bound_process() -> tff.templates.EstimationProcess:
  """TFF's secure aggregator's bound of the weighted values: twice the 95th percentile of
  each client's largest |value|, estimated without noise, starting at 100."""
  return tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
      initial_estimate=50.0, target_quantile=0.95, learning_rate=1.0, multiplier=2.0,
      secure_estimation=True)


class MeasuredSecureSumFactory(tff.aggregators.UnweightedAggregationFactory):
  """A `tff.aggregators.SecureSumFactory`, with the bytes of its messages (`bytes_uploaded`)."""

  def __init__(self, secure_sum: tff.aggregators.SecureSumFactory, clients_per_round: int):
    if not isinstance(secure_sum, tff.aggregators.SecureSumFactory):
      raise TypeError(f'secure_sum must be a SecureSumFactory, got {type(secure_sum).__name__}')
    self._secure_sum = secure_sum
    self._clients = int(clients_per_round)

  def create(self, value_type) -> tff.templates.AggregationProcess:
    process = self._secure_sum.create(value_type)
    num_values = sum(int(np.prod(spec.shape)) for spec in tf.nest.flatten(
        tff.types.type_to_tf_tensor_specs(value_type)))
    per_client = wire.secure_sum_bytes(num_values, self._clients)

    @tff.tensorflow.computation(value_type)
    def message_bytes(value):
      del value  # Every value is sent, whatever it holds.
      return tf.constant(per_client, tf.int64)

    @tff.federated_computation
    def init_fn():
      return process.initialize()

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      output = process.next(state, value)
      measurements = tff.federated_zip(collections.OrderedDict(
          secure_sum=output.measurements,
          bytes_uploaded=tff.federated_sum(tff.federated_map(message_bytes, value))))
      return tff.templates.MeasuredProcessOutput(output.state, output.result, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


def secure_mean_factory(clients_per_round: int) -> tff.aggregators.WeightedAggregationFactory:
  """The weighted mean of `tff.learning.secure_aggregator(zeroing=False, clipping=False)`, measured."""
  return tff.aggregators.MeanFactory(
      value_sum_factory=MeasuredSecureSumFactory(
          tff.aggregators.SecureSumFactory(value_bound_process()), clients_per_round),
      weight_sum_factory=MeasuredSecureSumFactory(
          tff.aggregators.SecureSumFactory(WEIGHT_UPPER_BOUND, 0.0), clients_per_round))


def clipped_secure_sum_factory(clip: float,
                               clients_per_round: int) -> tff.aggregators.UnweightedAggregationFactory:
  """The secure sum of updates clipped to L2 norm `clip` (every coordinate within +-clip)."""
  return MeasuredSecureSumFactory(
      tff.aggregators.SecureSumFactory(float(clip), -float(clip)), clients_per_round)
