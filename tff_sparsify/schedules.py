"""Sparsity schedules for federated progressive pruning.

FedSparsify (Stripelis et al., Section 3, Eq. 1) prunes at the end of a round
to the sparsity

    s_t = S_T + (S_0 - S_T) * (1 - (F * floor(t / F) - t_0) / (T - t_0)) ** n

with t the round, S_0 / S_T the initial / final sparsity, t_0 the first
pruning round, T the total rounds, F the pruning frequency and n the exponent.
No pruning happens before t_0; s_t is clipped to [S_0, S_T]. Paper defaults:
S_0 = 0, t_0 = 1, F = 1, n = 3. Shaped like tfmot's `PolynomialDecay`:
validated in `__init__`, `__call__(round_num) -> (should_prune, sparsity)`,
`get_config` / `from_config`.
"""

import math

import tensorflow as tf

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)


class FedSparsifySchedule:
  """Eq. 1 of the paper; one-shot pruning is `initial_sparsity=final_sparsity`."""

  def __init__(
      self, final_sparsity: float, total_rounds: int, *,
      initial_sparsity: float = 0.0, sparsify_start_round: int = 1,
      sparsify_frequency: int = 1, sparsify_exponent: float = 3.0,
  ):
    if not 0.0 <= final_sparsity < 1.0:
      raise ValueError(f'final_sparsity must be in [0, 1), got {final_sparsity}')
    if not 0.0 <= initial_sparsity <= final_sparsity:
      raise ValueError(
          f'initial_sparsity must be in [0, final_sparsity={final_sparsity}], '
          f'got {initial_sparsity}')
    if sparsify_start_round < 0:
      raise ValueError(
          f'sparsify_start_round must be >= 0, got {sparsify_start_round}')
    if total_rounds <= sparsify_start_round:
      raise ValueError(
          f'total_rounds must be > sparsify_start_round='
          f'{sparsify_start_round}, got {total_rounds}')
    if sparsify_frequency < 1:
      raise ValueError(
          f'sparsify_frequency must be >= 1, got {sparsify_frequency}')
    if not sparsify_exponent > 0:
      raise ValueError(
          f'sparsify_exponent must be > 0, got {sparsify_exponent}')
    self.final_sparsity = final_sparsity
    self.total_rounds = total_rounds
    self.initial_sparsity = initial_sparsity
    self.sparsify_start_round = sparsify_start_round
    self.sparsify_frequency = sparsify_frequency
    self.sparsify_exponent = sparsify_exponent

  @classmethod
  def one_shot(cls, final_sparsity: float, total_rounds: int, *,
               sparsify_start_round: int = 1) -> 'FedSparsifySchedule':
    """Prunes once, to `final_sparsity` at `sparsify_start_round` (S_0 = S_T)."""
    return cls(final_sparsity, total_rounds, initial_sparsity=final_sparsity,
               sparsify_start_round=sparsify_start_round)

  def sparsity(self, round_num: int) -> float:
    """s_t of Eq. 1 (0 before the start round), clipped to [S_0, S_T]."""
    if round_num < self.sparsify_start_round:
      return 0.0
    t0, f = self.sparsify_start_round, self.sparsify_frequency
    progress = (f * math.floor(round_num / f) - t0) / (self.total_rounds - t0)
    progress = min(max(progress, 0.0), 1.0)
    s = self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
        1.0 - progress) ** self.sparsify_exponent
    return min(max(s, self.initial_sparsity), self.final_sparsity)

  def __call__(self, round_num: int) -> tuple[bool, float]:
    should_prune = (round_num >= self.sparsify_start_round
                    and round_num % self.sparsify_frequency == 0)
    return should_prune, self.sparsity(round_num)

  def tf_call(self, round_num) -> tuple[tf.Tensor, tf.Tensor]:
    """`__call__` in TensorFlow ops, for use inside TFF computations.

    Args:
      round_num: integer scalar tensor, the round t (first round is 1).

    Returns:
      (should_prune: bool scalar, sparsity: float64 scalar, so that the zero
      count round(sparsity * n) matches `sparsity` exactly).
    """
    t = tf.cast(round_num, tf.float64)
    t0 = float(self.sparsify_start_round)
    f = float(self.sparsify_frequency)
    progress = (f * tf.floor(t / f) - t0) / (self.total_rounds - t0)
    progress = tf.clip_by_value(progress, 0.0, 1.0)
    s = self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
        1.0 - progress) ** self.sparsify_exponent
    s = tf.clip_by_value(s, self.initial_sparsity, self.final_sparsity)
    started = t >= t0
    s = tf.where(started, s, tf.constant(0.0, tf.float64))
    should_prune = tf.logical_and(
        started, tf.equal(tf.math.floormod(tf.cast(round_num, tf.int64),
                                           self.sparsify_frequency), 0))
    return should_prune, s

  def get_config(self) -> dict:
    return dict(
        final_sparsity=self.final_sparsity, total_rounds=self.total_rounds,
        initial_sparsity=self.initial_sparsity,
        sparsify_start_round=self.sparsify_start_round,
        sparsify_frequency=self.sparsify_frequency,
        sparsify_exponent=self.sparsify_exponent)

  @classmethod
  def from_config(cls, config: dict) -> 'FedSparsifySchedule':
    config = dict(config)
    return cls(config.pop('final_sparsity'), config.pop('total_rounds'), **config)
