"""The parameters of the Eq. 1 sparsity schedule, validated (pure Python, no TensorFlow).

    s_t = S_T + (S_0 - S_T) * (1 - (F * floor(t / F) - t_0) / (T - t_0)) ** n

with 0 <= S_0 <= S_T < 1, T > t_0 >= 0, F >= 1, n > 0 (Stripelis et al.,
Section 3). `schedules.FedSparsifySchedule` computes s_t from them.
"""

import dataclasses

from tff_sparsify import validation


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """Eq. 1: s_t from S_T (`final_sparsity`), T, S_0, t_0, F and n."""
  final_sparsity: float
  total_rounds: int
  initial_sparsity: float = 0.0
  sparsify_start_round: int = 1
  sparsify_frequency: int = 1
  sparsify_exponent: float = 3.0

  def __post_init__(self):
    final = self.final_sparsity
    validation.check_fraction('final_sparsity', final)
    if not (validation.is_number(self.initial_sparsity)
            and 0 <= self.initial_sparsity <= final):
      raise validation.ConfigError('initial_sparsity', self.initial_sparsity,
                                   f'must be in [0, final_sparsity={final}]')
    if not validation.is_int(self.sparsify_start_round) or self.sparsify_start_round < 0:
      raise validation.ConfigError('sparsify_start_round', self.sparsify_start_round,
                                   'must be >= 0')
    if not validation.is_int(self.total_rounds) or (
        self.total_rounds <= self.sparsify_start_round):
      raise validation.ConfigError(
          'total_rounds', self.total_rounds,
          f'must be > sparsify_start_round={self.sparsify_start_round}')
    if not validation.is_int(self.sparsify_frequency) or self.sparsify_frequency < 1:
      raise validation.ConfigError('sparsify_frequency', self.sparsify_frequency,
                                   'must be >= 1')
    if not validation.is_number(self.sparsify_exponent) or not self.sparsify_exponent > 0:
      raise validation.ConfigError('sparsify_exponent', self.sparsify_exponent, 'must be > 0')

  @classmethod
  def one_shot(cls, final_sparsity: float, total_rounds: int, *,
               sparsify_start_round: int = 1) -> 'ScheduleConfig':
    """Prunes once, to `final_sparsity` at `sparsify_start_round` (S_0 = S_T)."""
    return cls(final_sparsity, total_rounds, initial_sparsity=final_sparsity,
               sparsify_start_round=sparsify_start_round)


NEVER_PRUNE = ScheduleConfig(0.0, 2)
