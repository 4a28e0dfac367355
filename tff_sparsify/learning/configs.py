"""One frozen, validated configuration per algorithm (pure Python, no TensorFlow).

Each option is checked here, once, when the configuration is made; builders
take the configuration and check nothing again. Field names are the flag
names of `binaries/train.py`, so a `validation.ConfigError` names the flag.

- `ScheduleConfig`: Eq. 1 of Stripelis et al. (Section 3),

      s_t = S_T + (S_0 - S_T) * (1 - (F * floor(t / F) - t_0) / (T - t_0)) ** n

  with 0 <= S_0 <= S_T < 1, T > t_0 >= 0, F >= 1, n > 0.
- `CompressionConfig`: message pruning (arXiv 2310.14693) and quantization.
- `FedAvgConfig`, `FedAvgMomentumConfig` (MFL), `FedProxConfig`,
  `FedSparsifyConfig` (Global, Local, Random, one-shot).
"""

import dataclasses
from typing import Optional

from tff_sparsify import validation
# Defined below `learning` (core and compression know nothing of it); here
# they are part of each algorithm's configuration.
from tff_sparsify.compression.compression_config import CompressionConfig
from tff_sparsify.compression.compression_config import MESSAGE_PRUNE_TARGETS
from tff_sparsify.compression.compression_config import QUANTIZATION_BITS
from tff_sparsify.compression.compression_config import QUANTIZATION_THRESHOLD
from tff_sparsify.compression.compression_config import QUANTIZERS
from tff_sparsify.core.schedule_config import NEVER_PRUNE
from tff_sparsify.core.schedule_config import ScheduleConfig

MODES = ('global', 'local')
PRUNING_METHODS = ('magnitude', 'random', 'snip', 'grasp', 'prunefl')
# A mask made before round 1 (`learning.saliency`, `learning.prunefl`).
AT_INITIALIZATION = ('snip', 'grasp', 'prunefl')
_METHOD_NAMES = dict(random=('random pruning', 'random_pruning'), snip=('SNIP', 'snip'),
                     prunefl=('PruneFL', 'prunefl'),
                     grasp=('GraSP', 'grasp'))
MASK_AGGREGATIONS = ('majority_vote', 'mean')
SPARSITY_PLACEMENTS = ('global', 'uniform', 'compute')
SPARSITY_GRANULARITIES = ('weight', 'channel')
MFL_DEFAULT_MOMENTUM = 0.75  # The paper's Appendix C.
FEDPROX_DEFAULT_STRENGTH = 0.001
# PruneFL as the FedSparsify paper ran it (line 82).
PRUNEFL_READJUST_EVERY = 50
PRUNEFL_READJUST_RATIO = 0.3
PRUNEFL_READJUST_HALVING_ROUNDS = 1000
PRUNEFL_INITIAL_RECONFIGURATIONS = 5




def _check_optimizers(config):
  validation.check_positive_number('client_learning_rate', config.client_learning_rate)
  validation.check_positive_number('server_learning_rate', config.server_learning_rate)
  if not (validation.is_number(config.client_momentum) and 0 <= config.client_momentum < 1):
    raise validation.ConfigError('client_momentum', config.client_momentum, 'must be in [0, 1)')


@dataclasses.dataclass(frozen=True)
class FedAvgConfig:
  """FedAvg (McMahan et al. 2017): client SGD, server SGD (1.0 is plain FedAvg).

  With compression on, FedAvg is FedSparsify with S_T = 0 (which equals TFF's
  FedAvg when nothing compresses, tested), so that its bytes are measured.
  """
  client_learning_rate: float = 0.02
  server_learning_rate: float = 1.0
  client_momentum: float = 0.0
  compression: CompressionConfig = CompressionConfig()

  def __post_init__(self):
    _check_optimizers(self)
    if not isinstance(self.compression, CompressionConfig):
      raise validation.ConfigError('compression', self.compression,
                                   'must be a CompressionConfig')


@dataclasses.dataclass(frozen=True)
class FedAvgMomentumConfig(FedAvgConfig):
  """MFL (Liu et al. 2020): FedAvg with momentum SGD at the clients."""
  client_momentum: float = MFL_DEFAULT_MOMENTUM

  def __post_init__(self):
    super().__post_init__()
    if self.client_momentum == 0:
      raise validation.ConfigError('client_momentum', self.client_momentum,
                                   'must be > 0 for --algorithm=fedavg_momentum')


@dataclasses.dataclass(frozen=True)
class FedProxConfig:
  """FedProx (Li et al. 2020): FedAvg with the proximal term mu/2 ||w - w_t||^2.

  Built as FedSparsify with S_T = 0 and the proximal term in the client
  step: TFF 0.87's `build_weighted_fed_prox` adds mu (w_t - w) to the
  gradient, the opposite sign (measured in `tests/test_fed_sparsify.py`).
  """
  client_learning_rate: float = 0.02
  server_learning_rate: float = 1.0
  client_momentum: float = 0.0
  proximal_strength: float = FEDPROX_DEFAULT_STRENGTH

  def __post_init__(self):
    _check_optimizers(self)
    validation.check_positive_number('proximal_strength', self.proximal_strength)


@dataclasses.dataclass(frozen=True)
class FedSparsifyConfig(FedAvgConfig):
  """FedSparsify (Stripelis et al., Algorithm 1) and the paper's pruning baselines.

  Attributes:
    schedule: s_t (Eq. 1); one-shot pruning is `ScheduleConfig.one_shot`.
    mode: 'global' (the server prunes after aggregation) or 'local' (the
      clients prune, the server merges their masks).
    mask_aggregation: local mode: 'majority_vote' (Eq. 2) or 'mean' (keep a
      weight any client kept, the paper's plain-average variant).
    pruning_method: global mode: 'magnitude' (FedSparsify), 'random' (the
      paper's Random baseline, seeded by (seed, round)), or 'snip' or
      'grasp' (pruning at initialization: the initial weights carry the
      mask, `learning.saliency`, and the server never prunes again; the
      schedule is `ScheduleConfig.one_shot(S_T, T, sparsify_start_round=0)`,
      which only reports s_t = S_T).
    sparsity_placement: magnitude pruning: 'global' (one ranking over all
      prunable weights, the paper's), 'uniform' (each prunable tensor pruned
      to s_t) or 'compute' (per-layer sparsities minimising the multiply-adds).
    sparsity_granularity: magnitude pruning: 'weight' (the paper's) or
      'channel': the unit pruned is an output channel of a convolution or a
      unit of a dense layer, ranked by its L2 norm, round(s_t * channels)
      of them (the output layer's excepted); its bias and the following
      BatchNormalization's gamma and beta are masked with it
      (`layout.PruningLayout`). Placement 'global' or 'uniform'.
    channel_multiple: channel granularity: the channels each layer keeps are
      rounded to the nearest multiple of this (`masks.round_channels`; 1:
      exact counts), since CPU runtimes run channel counts in blocks. Global
      mode only: a majority vote of rounded masks need not be rounded.
    seed: seed of random pruning.
    readjust_every: PruneFL ('prunefl'): rounds between readjustments of
      the mask (the paper's 50).
    readjust_ratio: PruneFL: s of the readjustment ratio s * 0.5^(t / H)
      (the paper's 0.3), the fraction of kept weights swapped at round t.
    readjust_halving_rounds: PruneFL: H (the paper's 1000).
    initial_reconfigurations: PruneFL: reconfigurations of the initial
      pruning on one client (the paper's 5).
  """
  schedule: Optional[ScheduleConfig] = None
  mode: str = 'global'
  mask_aggregation: str = 'majority_vote'
  pruning_method: str = 'magnitude'
  sparsity_placement: str = 'global'
  sparsity_granularity: str = 'weight'
  channel_multiple: int = 1
  seed: int = 0
  readjust_every: int = PRUNEFL_READJUST_EVERY
  readjust_ratio: float = PRUNEFL_READJUST_RATIO
  readjust_halving_rounds: int = PRUNEFL_READJUST_HALVING_ROUNDS
  initial_reconfigurations: int = PRUNEFL_INITIAL_RECONFIGURATIONS

  def __post_init__(self):
    super().__post_init__()
    for name in ('readjust_every', 'readjust_halving_rounds'):
      if not validation.is_int(getattr(self, name)) or getattr(self, name) < 1:
        raise validation.ConfigError(name, getattr(self, name), 'must be >= 1')
    validation.check_fraction('readjust_ratio', self.readjust_ratio)
    if not validation.is_int(self.initial_reconfigurations) or self.initial_reconfigurations < 1:
      raise validation.ConfigError('initial_reconfigurations', self.initial_reconfigurations,
                                   'must be >= 1')
    if not isinstance(self.schedule, ScheduleConfig):
      raise validation.ConfigError('schedule', self.schedule, 'must be a ScheduleConfig')
    validation.check_choice('mode', self.mode, MODES)
    validation.check_choice('mask_aggregation', self.mask_aggregation, MASK_AGGREGATIONS)
    validation.check_choice('pruning_method', self.pruning_method, PRUNING_METHODS)
    validation.check_choice('sparsity_placement', self.sparsity_placement, SPARSITY_PLACEMENTS)
    validation.check_choice('sparsity_granularity', self.sparsity_granularity,
                            SPARSITY_GRANULARITIES)
    if self.sparsity_granularity == 'channel':
      if self.pruning_method != 'magnitude':
        raise validation.ConfigError(
            'sparsity_granularity', self.sparsity_granularity,
            'must be weight for {} (--algorithm={})'.format(*_METHOD_NAMES[self.pruning_method]))
      if self.sparsity_placement == 'compute':
        raise validation.ConfigError(
            'sparsity_placement', self.sparsity_placement,
            'must be global or uniform with sparsity_granularity=channel')
    if not validation.is_int(self.channel_multiple) or self.channel_multiple < 1:
      raise validation.ConfigError('channel_multiple', self.channel_multiple, 'must be >= 1')
    if self.channel_multiple > 1 and self.sparsity_granularity != 'channel':
      raise validation.ConfigError('channel_multiple', self.channel_multiple,
                                   'must be 1 unless sparsity_granularity=channel')
    if self.channel_multiple > 1 and self.mode != 'global':
      raise validation.ConfigError(
          'channel_multiple', self.channel_multiple,
          'must be 1 in local mode (a majority vote of rounded channel masks is not rounded)')
    if self.pruning_method in AT_INITIALIZATION and self.schedule.sparsify_start_round != 0:
      raise validation.ConfigError(
          'sparsify_start_round', self.schedule.sparsify_start_round,
          f'must be 0 for {self.pruning_method}: its mask is made before round 1')
    if self.mode == 'local' and self.pruning_method != 'magnitude':
      raise validation.ConfigError('pruning_method', self.pruning_method,
                                   "must be 'magnitude' in local mode")
    if self.sparsity_placement != 'global' and self.pruning_method != 'magnitude':
      raise validation.ConfigError(
          'sparsity_placement', self.sparsity_placement,
          'must be global for {} (--algorithm={})'.format(*_METHOD_NAMES[self.pruning_method]))
    if not validation.is_int(self.seed):
      raise validation.ConfigError('seed', self.seed, 'must be an integer')

  @property
  def prunes(self) -> bool:
    """Whether the model is pruned (it then needs `prune_low_magnitude` wrappers)."""
    return self.schedule.final_sparsity > 0 or self.pruning_method in AT_INITIALIZATION
