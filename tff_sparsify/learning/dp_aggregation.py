"""Client-level differential privacy of the model updates, as a TFF aggregation factory.

TFF's `tff.aggregators.DifferentiallyPrivateFactory` with tensorflow-privacy's
Gaussian sum query normalized by the clients per round: what
`DifferentiallyPrivateFactory.gaussian_fixed` builds (DP-FedAvg, McMahan et
al. 2018): each client's update clipped to L2 norm C (over all its tensors),
the clipped updates summed, Gaussian noise of standard deviation z * C
added to the sum, divided by the clients per round. One change: the
noise. tensorflow-privacy 0.9's `GaussianSumQuery` draws it with an
unseeded initializer, so a run cannot be repeated or resumed to the same
weights, and TensorFlow's op determinism (which our runs use) refuses it.
`SeededGaussianSumQuery` draws it with `tf.random.stateless_normal` from a
seed held in the query's state (and so in the learning process's state and
its checkpoints), split afresh every round.

With `dp_target_quantile`, the clip adapts each round towards that
quantile of the clients' update norms (Andrew et al. 2021, TFF's
`gaussian_adaptive`): `SeededAdaptiveClipSumQuery`, both of its noises
seeded the same way.

`distributed_mean_factory` is distributed DP instead (`dp_mechanism=
'distributed_skellam'`): TFF's `DistributedDpSumFactory`, the clients adding
Skellam noise to their rotated, rounded updates under a secure sum.

The factory is unweighted (each client counts once, as in DP-FedAvg; its
examples would otherwise weigh its update beyond the clip);
`dp_mean_factory` wraps it for our weighted processes with TFF's
`tff.aggregators.as_weighted_aggregator`, which drops the weights.

With a mask the server knows (FedSparsify-Global and the fixed masks), the
clients' updates are zero outside it, so the clip is over the kept
coordinates only; the noise lands on every coordinate and the finalizer
masks the model after its step (`learning.finalizers`), so pruned weights
stay exactly zero and the noise that counts is on the kept coordinates.
Masking is post-processing of the noised sum: the guarantee is unchanged.
"""

import collections
import math
import secrets
from typing import Optional

import dp_accounting
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import _tff_internals as tffi
from tff_sparsify.learning import configs
from tff_sparsify.learning import secure_aggregation


# `SeededAdaptiveClipSumQuery` sets two private members of tensorflow-privacy's
# query (read against this version; `tests/test_internals.py` checks it).
PINNED = {'tensorflow-privacy': '0.9.0'}
ADAPTIVE_LEARNING_RATE = 0.2  # TFF's and Andrew et al.'s, geometric update.


class SeededGaussianSumQuery(tfp.GaussianSumQuery):
  """tensorflow-privacy's Gaussian sum query, its noise drawn from a seed in its state.

  The state's seed is `[seed, stream]` at first (two queries of one run draw
  from different streams), split each round into one seed per tensor and
  the next round's (`seeds`).
  """

  _SeededState = collections.namedtuple('_SeededState', ['l2_norm_clip', 'stddev', 'seed'])

  def __init__(self, l2_norm_clip: float, stddev: float, seed: int, stream: int = 0):
    super().__init__(l2_norm_clip, stddev)
    self._seed = (int(seed) % 2**63, int(stream))

  def make_global_state(self, l2_norm_clip, stddev, seed=None):
    state = super().make_global_state(l2_norm_clip, stddev)
    seed = tf.constant(self._seed, tf.int64) if seed is None else seed
    return self._SeededState(state.l2_norm_clip, state.stddev, seed)

  @staticmethod
  def seeds(seed, num_tensors: int):
    """One seed per tensor, then the next round's."""
    return tf.random.experimental.stateless_split(seed, num=num_tensors + 1)

  def get_noised_result(self, sample_state, global_state):
    flat = tf.nest.flatten(sample_state)
    seeds = self.seeds(global_state.seed, len(flat))
    noised = [
        v + tf.cast(tf.random.stateless_normal(tf.shape(v), seed=seeds[i],
                                               stddev=global_state.stddev), v.dtype)
        for i, v in enumerate(flat)]
    new_state = self._SeededState(global_state.l2_norm_clip, global_state.stddev, seeds[-1])
    return (tf.nest.pack_sequence_as(sample_state, noised), new_state,
            dp_accounting.GaussianDpEvent(global_state.stddev / global_state.l2_norm_clip))


class _SeededQuantileEstimatorQuery(tfp.QuantileEstimatorQuery):
  """The clip's quantile estimate, its noised count drawn from a seed (stream 1)."""

  def __init__(self, *args, seed: int, **kwargs):
    self._seed = seed
    super().__init__(*args, **kwargs)

  def _construct_below_estimate_query(self, below_estimate_stddev, expected_num_records):
    # As tensorflow-privacy's (its extension point), the Gaussian query seeded.
    return tfp.NormalizedQuery(
        SeededGaussianSumQuery(0.5, below_estimate_stddev, self._seed, stream=1),
        denominator=expected_num_records)


class SeededAdaptiveClipSumQuery(tfp.QuantileAdaptiveClipSumQuery):
  """tensorflow-privacy's adaptive clipping (Andrew et al. 2021), both noises seeded.

  What `DifferentiallyPrivateFactory.gaussian_adaptive` builds (geometric
  update), with the sum and the clipped count drawn from `seed` (streams 0
  and 1). tensorflow-privacy 0.9 keeps its two inner queries in
  `_sum_query` and `_quantile_estimator_query` and remakes the sum query's
  state from the new clip with `make_global_state(clip, stddev)`, without
  our seed: the next seed is put back here (tested: a seed repeats the
  draws, `tests/test_privacy.py`).
  """

  def __init__(self, initial_l2_norm_clip: float, noise_multiplier: float,
               target_unclipped_quantile: float, learning_rate: float,
               clipped_count_stddev: float, expected_num_records: float, seed: int):
    super().__init__(initial_l2_norm_clip, noise_multiplier, target_unclipped_quantile,
                     learning_rate, clipped_count_stddev, expected_num_records,
                     geometric_update=True)
    self._sum_query = SeededGaussianSumQuery(
        initial_l2_norm_clip, noise_multiplier * initial_l2_norm_clip, seed)
    self._quantile_estimator_query = _SeededQuantileEstimatorQuery(
        initial_l2_norm_clip, target_unclipped_quantile, learning_rate, clipped_count_stddev,
        expected_num_records, geometric_update=True, seed=seed)

  def get_noised_result(self, sample_state, global_state):
    result, new_state, event = super().get_noised_result(sample_state, global_state)
    seed = SeededGaussianSumQuery.seeds(
        global_state.sum_state.seed, len(tf.nest.flatten(sample_state.sum_state)))[-1]
    return result, new_state._replace(sum_state=new_state.sum_state._replace(seed=seed)), event


def noise_seed(privacy: configs.PrivacyConfig) -> int:
  """`privacy.dp_noise_seed`, or a seed drawn from the operating system's randomness."""
  if privacy.dp_noise_seed is not None:
    return int(privacy.dp_noise_seed)
  return secrets.randbits(63)


def dp_mean_factory(privacy: configs.PrivacyConfig) -> tff.aggregators.WeightedAggregationFactory:
  """The clipped, noised, unweighted mean of `privacy`, as a weighted factory (weights dropped).

  Fixed clipping: `gaussian_fixed`'s query. Adaptive (`dp_target_quantile`):
  `gaussian_adaptive`'s, from `dp_clip_norm` at TFF's learning rate 0.2
  and clipped-count noise 0.05 m, the value noise raised by TFF's
  `adaptive_clip_noise_params` so that the total noise multiplier is z.
  """
  if not privacy.enabled:
    raise ValueError('privacy.dp_clip_norm must be > 0 for a differentially private mean')
  clip, z, m = (float(privacy.dp_clip_norm), float(privacy.dp_noise_multiplier),
                float(privacy.clients_per_round))
  if privacy.dp_target_quantile:
    value_z, count_stddev = tffi.adaptive_clip_noise_params(z, m)
    query = SeededAdaptiveClipSumQuery(
        clip, value_z, float(privacy.dp_target_quantile), ADAPTIVE_LEARNING_RATE, count_stddev,
        m, noise_seed(privacy))
  else:
    query = SeededGaussianSumQuery(clip, clip * z, noise_seed(privacy))
  query = tfp.NormalizedQuery(query, denominator=m)
  records = None  # TFF's default: a plain sum.
  if privacy.secure_aggregation:
    bound = clip
    if privacy.dp_target_quantile:  # The clip moves, the bounds stay; the clipped-count
      # query's records (+-0.5 each) go through the same secure sum.
      bound = max(clip * configs.ADAPTIVE_SECURE_BOUND, 1.0)
    records = secure_aggregation.clipped_secure_sum_factory(bound, privacy.clients_per_round)
  return tff.aggregators.as_weighted_aggregator(
      tff.aggregators.DifferentiallyPrivateFactory(query, record_aggregation_factory=records))


# TFF's `DistributedDpSumFactory` defaults, as `ddp_secure_aggregator` leaves them.
DDP_MODCLIP_PROB = 1e-4  # Probability that a client's value wraps modulo 2^bits.
DDP_BETA = 0.0  # Unconditional randomized rounding.
_ROUNDING_LEEWAY = 1e-5  # TFF's, added to the inflated L2 bound before scaling.


def distributed_parameters(privacy: configs.PrivacyConfig, dim: int) -> dict:
  """The distributed mechanism's parameters for updates of `dim` values, as TFF computes them.

  What `DistributedDpSumFactory._build_aggregation_factory` derives (TFF
  0.87, fixed clip C, noise multiplier z, m clients per round): the update
  padded to a power of two, each client's noise z C / sqrt(m), the scale
  from TFF's heuristic (capped), the L2 bound after rounding inflated as
  TFF does, and the L1 bound min(sqrt(d), L2) L2 (integers). Returns
  `clients`, `l2`, `l1`, `local_stddev` (scaled units, what
  `privacy_accounting.skellam_epsilon` takes), `scale` and `padded_dim`.
  Tested against the aggregator's own measurements (`tests/test_privacy.py`).
  """
  clip, z, m = (float(privacy.dp_clip_norm), float(privacy.dp_noise_multiplier),
                int(privacy.clients_per_round))
  padded = 2 ** math.ceil(math.log2(max(1, dim)))
  local_stddev = z * clip / math.sqrt(m)
  scale = min(float(tffi.ddp_heuristic_scale_factor(
      local_stddev, clip, configs.DDP_BITS, m, padded,
      tffi.ddp_clip_prob_to_num_stddevs(DDP_MODCLIP_PROB)).numpy()), tffi.DDP_MAX_SCALE_FACTOR)
  inflated = float(tffi.inflated_l2_norm_bound(clip, 1.0 / scale, DDP_BETA, padded).numpy())
  l2 = (inflated + _ROUNDING_LEEWAY) * scale
  return dict(clients=m, l2=l2, l1=math.ceil(l2 * min(math.sqrt(padded), l2)),
              local_stddev=local_stddev * scale, scale=scale, padded_dim=padded)


def distributed_bytes(num_values: int) -> int:
  """Bytes of one client's distributed-DP message: its update padded to a power of two
  (the Hadamard rotation's length), each value an integer modulo 2^DDP_BITS."""
  return math.ceil(2 ** math.ceil(math.log2(max(1, num_values))) * configs.DDP_BITS / 8)


def distributed_mean_factory(
    privacy: configs.PrivacyConfig) -> tff.aggregators.WeightedAggregationFactory:
  """Distributed DP's mean: what `tff.learning.ddp_secure_aggregator` builds, fixed clip.

  TFF's `DistributedDpSumFactory` (distributed Skellam, randomized
  Hadamard rotation, 20-bit modular secure sum) divided by the clients'
  secure-summed count (`UnweightedMeanFactory`), without TFF's adaptive
  zeroing (our processes drop non-finite updates already) and with the
  clip fixed at `dp_clip_norm`; as a weighted factory (weights dropped).
  """
  if not privacy.distributed:
    raise ValueError("privacy.dp_mechanism must be 'distributed_skellam'")
  # Its computations nest deeper than protobuf parses by default; from now on
  # this process parses deeper (and larger) messages (BUILD_NOTES, "Privacy").
  tffi.allow_deep_protos()
  values = tffi.DistributedDpSumFactory(
      noise_multiplier=float(privacy.dp_noise_multiplier),
      expected_clients_per_round=int(privacy.clients_per_round), bits=configs.DDP_BITS,
      l2_clip=float(privacy.dp_clip_norm), modclip_prob=DDP_MODCLIP_PROB, beta=DDP_BETA,
      mechanism='distributed_skellam', rotation_type='hd', auto_l2_clip=False)
  count = secure_aggregation.MeasuredSecureSumFactory(
      tff.aggregators.SecureSumFactory(upper_bound_threshold=1, lower_bound_threshold=0),
      privacy.clients_per_round)
  # The values' message is counted by the client work, which holds the update
  # (`distributed_bytes`; BUILD_NOTES, "Privacy").
  return tff.aggregators.as_weighted_aggregator(tff.aggregators.UnweightedMeanFactory(
      value_sum_factory=values, count_sum_factory=count))


def model_aggregator(
    privacy: configs.PrivacyConfig) -> Optional[tff.aggregators.WeightedAggregationFactory]:
  """The model aggregator `privacy` asks for: the DP mean (securely summed with
  `secure_aggregation`; distributed DP's, noised by the clients), the secure
  weighted mean alone, or None (not ours)."""
  if privacy.distributed:
    return distributed_mean_factory(privacy)
  if privacy.enabled:
    return dp_mean_factory(privacy)
  if privacy.secure_aggregation:
    return secure_aggregation.secure_mean_factory(privacy.clients_per_round)
  return None
