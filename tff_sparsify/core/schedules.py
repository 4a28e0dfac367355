"""Sparsity schedules for federated progressive pruning.

FedSparsify (Stripelis et al., Section 3, Eq. 1) prunes at the end of a round
to the sparsity

    s_t = S_T + (S_0 - S_T) * (1 - (F * floor(t / F) - t_0) / (T - t_0)) ** n

with t the round, S_0 / S_T the initial / final sparsity, t_0 the first
pruning round, T the total rounds, F the pruning frequency and n the exponent.
No pruning happens before t_0; s_t is clipped to [S_0, S_T]. Paper defaults:
S_0 = 0, t_0 = 1, F = 1, n = 3. A tfmot `PruningSchedule` (like
`PolynomialDecay`): `__call__(round_num) -> (should_prune, sparsity)` in
TensorFlow ops, `get_config` / `from_config`; its ranges are validated by
`core.schedule_config.ScheduleConfig`.
"""

import dataclasses

import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.core import schedule_config


class FedSparsifySchedule(tfmot.sparsity.keras.PruningSchedule):
  """Eq. 1 of the paper, as a tfmot `PruningSchedule` stepped by rounds.

  One-shot pruning is `schedule_config.ScheduleConfig.one_shot(...)` (S_0 = S_T).
  The ranges are checked by `schedule_config.ScheduleConfig`.
  """

  def __init__(self, config: schedule_config.ScheduleConfig):
    if not isinstance(config, schedule_config.ScheduleConfig):
      raise TypeError(f'config must be a ScheduleConfig, got {type(config).__name__}')
    self.config = config

  def __call__(self, step) -> tuple[tf.Tensor, tf.Tensor]:
    """(should_prune, s_t) at round `step` (the first round is 1), in TensorFlow ops.

    Args:
      step: integer scalar (tensor), the round t.

    Returns:
      (should_prune: bool scalar, sparsity: float64 scalar, so that the zero
      count round(sparsity * n) matches the schedule exactly). Rounds before
      t_0 have sparsity 0 and do not prune; from t_0 on, every F-th round
      (t mod F = 0) prunes.
    """
    c = self.config
    t = tf.cast(step, tf.float64)
    t0 = float(c.sparsify_start_round)
    f = float(c.sparsify_frequency)
    progress = (f * tf.floor(t / f) - t0) / (c.total_rounds - t0)
    progress = tf.clip_by_value(progress, 0.0, 1.0)
    s = c.final_sparsity + (c.initial_sparsity - c.final_sparsity) * (
        1.0 - progress) ** c.sparsify_exponent
    s = tf.clip_by_value(s, c.initial_sparsity, c.final_sparsity)
    started = t >= t0
    s = tf.where(started, s, tf.constant(0.0, tf.float64))
    should_prune = tf.logical_and(
        started, tf.equal(tf.math.floormod(tf.cast(step, tf.int64),
                                           c.sparsify_frequency), 0))
    return should_prune, s

  def sparsity(self, round_num: int) -> float:
    """s_t as a Python float (the same computation as `__call__`)."""
    return float(self(round_num)[1])

  def get_config(self) -> dict:
    return dataclasses.asdict(self.config)

  @classmethod
  def from_config(cls, config: dict) -> 'FedSparsifySchedule':
    return cls(schedule_config.ScheduleConfig(**config))



def readjusts(round_num, every: int):
  """PruneFL: whether the server readjusts the mask at the end of round `round_num`.

  At the end of rounds every - 1, 2 every - 1, ...: the new mask is in force
  from round every, 2 every, ... on, as the authors readjust at the start of
  those rounds (so the last one is still trained).
  """
  return tf.equal(tf.math.floormod(round_num + 1, every), 0)


def readjust_ratio(round_num, ratio: float, halving_rounds: int):
  """PruneFL's readjustment ratio s * 0.5^(t / H) for the mask in force from round t + 1."""
  return ratio * tf.pow(0.5, tf.cast(round_num + 1, tf.float32) / halving_rounds)
