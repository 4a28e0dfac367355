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
import secrets

import dp_accounting
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.learning import configs


class SeededGaussianSumQuery(tfp.GaussianSumQuery):
  """tensorflow-privacy's Gaussian sum query, its noise drawn from a seed in its state."""

  _SeededState = collections.namedtuple('_SeededState', ['l2_norm_clip', 'stddev', 'seed'])

  def __init__(self, l2_norm_clip: float, stddev: float, seed: int):
    super().__init__(l2_norm_clip, stddev)
    self._seed = int(seed)

  def initial_global_state(self):
    state = super().initial_global_state()
    seed = tf.constant([self._seed % 2**63, self._seed // 2**63], tf.int64)
    return self._SeededState(state.l2_norm_clip, state.stddev, seed)

  def get_noised_result(self, sample_state, global_state):
    flat = tf.nest.flatten(sample_state)
    seeds = tf.random.experimental.stateless_split(global_state.seed, num=len(flat) + 1)
    noised = [
        v + tf.cast(tf.random.stateless_normal(tf.shape(v), seed=seeds[i],
                                               stddev=global_state.stddev), v.dtype)
        for i, v in enumerate(flat)]
    new_state = self._SeededState(global_state.l2_norm_clip, global_state.stddev, seeds[-1])
    return (tf.nest.pack_sequence_as(sample_state, noised), new_state,
            dp_accounting.GaussianDpEvent(global_state.stddev / global_state.l2_norm_clip))


def noise_seed(privacy: configs.PrivacyConfig) -> int:
  """`privacy.dp_noise_seed`, or a seed drawn from the operating system's randomness."""
  if privacy.dp_noise_seed is not None:
    return int(privacy.dp_noise_seed)
  return secrets.randbits(63)


def dp_mean_factory(privacy: configs.PrivacyConfig) -> tff.aggregators.WeightedAggregationFactory:
  """The clipped, noised, unweighted mean of `privacy`, as a weighted factory (weights dropped)."""
  if not privacy.enabled:
    raise ValueError('privacy.dp_clip_norm must be > 0 for a differentially private mean')
  clip = float(privacy.dp_clip_norm)
  query = tfp.NormalizedQuery(
      SeededGaussianSumQuery(clip, clip * float(privacy.dp_noise_multiplier),
                             noise_seed(privacy)),
      denominator=float(privacy.clients_per_round))
  return tff.aggregators.as_weighted_aggregator(tff.aggregators.DifferentiallyPrivateFactory(query))
