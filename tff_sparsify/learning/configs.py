"""One frozen, validated configuration per algorithm (pure Python, no TensorFlow).

Each option is checked here, once, when the configuration is made; builders
take the configuration and check nothing again. Field names are the flag
names of `binaries/train.py`, so a `validation.ConfigError` names the flag.

- `ScheduleConfig`: Eq. 1 of Stripelis et al. (Section 3),

      s_t = S_T + (S_0 - S_T) * (1 - (F * floor(t / F) - t_0) / (T - t_0)) ** n

  with 0 <= S_0 <= S_T < 1, T > t_0 >= 0, F >= 1, n > 0.
- `CompressionConfig`: message pruning (arXiv 2310.14693) and quantization.
- `PrivacyConfig`: client-level differential privacy of the model updates
  (clipping and Gaussian noise at the server, `learning.dp_aggregation`).
- `FedAvgConfig` (FedAvg, and the base of the others) and
  `FedSparsifyConfig` (Global, Local, Random, one-shot, SNIP, GraSP: training
  under masks). The configurations of one algorithm only live in its module
  (`learning.algorithms`): `fedavg_momentum.FedAvgMomentumConfig` (MFL),
  `fedprox.FedProxConfig`, `prunefl.PruneFLConfig`.
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
PRUNING_METHODS = ('magnitude', 'random', 'snip', 'grasp')  # PruneFL: `PruneFLConfig`.
# A mask made before round 1 (`learning.saliency`, `learning.algorithms.prunefl`).
AT_INITIALIZATION = ('snip', 'grasp', 'prunefl')
_METHOD_NAMES = dict(random=('random pruning', 'random_pruning'), snip=('SNIP', 'snip'),
                     prunefl=('PruneFL', 'prunefl'),
                     grasp=('GraSP', 'grasp'))
MASK_AGGREGATIONS = ('majority_vote', 'mean')
SPARSITY_PLACEMENTS = ('global', 'uniform', 'compute')
SPARSITY_GRANULARITIES = ('weight', 'channel')
DP_MECHANISMS = ('gaussian', 'distributed_skellam')
# The distributed mechanism's secure sum: integers modulo 2^20 (TFF's default
# in `tff.learning.ddp_secure_aggregator`).
DDP_BITS = 20
# Central DP's secure sum with adaptive clipping: the bounds are fixed at this
# multiple of the first clip, and at least +-1 for the clipped-count records
# (the clip moves each round; a coordinate beyond is clipped and counted,
# `secure_upper_clipped_count`), so each value's 32-bit step is 2^11 / 2^32
# of the first clip.
ADAPTIVE_SECURE_BOUND = 1024.0


@dataclasses.dataclass(frozen=True)
class PrivacyConfig:
  """Client-level differential privacy (McMahan et al. 2018, DP-FedAvg) of the updates.

  Each client's model update is clipped to L2 norm `dp_clip_norm`, the
  server sums the clipped updates, adds Gaussian noise of standard deviation
  `dp_noise_multiplier * dp_clip_norm` and divides by `clients_per_round`
  (TFF's `DifferentiallyPrivateFactory` with tensorflow-privacy's Gaussian
  sum query, its noise seeded: `learning.dp_aggregation`). Clients count
  equally, whatever their examples. Off while `dp_clip_norm` is 0.

  Attributes:
    dp_clip_norm: L2 norm each client's update is clipped to (with
      `dp_target_quantile`, the first round's); 0: no DP.
    dp_noise_multiplier: noise standard deviation over the clip norm, >= 0
      (0: clipping only, no guarantee).
    dp_delta: delta of the (epsilon, delta) guarantee reported; 0: 1 / the
      number of clients.
    dp_noise_seed: seed of the noise; None: drawn from the operating
      system when the process is built (and kept in its state, so a
      resumed run goes on with it). Whoever knows it can remove the noise.
    dp_target_quantile: 0 (the clip is fixed) or in (0, 1): adaptive
      clipping (Andrew et al. 2021, TFF's `gaussian_adaptive`), the clip
      moving each round towards this quantile of the clients' update norms
      (0.5: the median); the clipped count is noised with standard
      deviation 0.05 x clients_per_round (TFF's default), so
      dp_noise_multiplier must be below 0.1 x clients_per_round.
    dp_mechanism: 'gaussian' (central DP: the server adds the noise to the
      clipped sum, above) or 'distributed_skellam' (distributed DP, TFF's
      `DistributedDpSumFactory` as `tff.learning.ddp_secure_aggregator`
      builds it, with a fixed clip: each client clips its update to
      dp_clip_norm, rotates it (randomized Hadamard), scales and rounds it
      to integers, adds its share of Skellam noise and the server sees only
      the 20-bit secure sum, noised; the clients draw the noise from their
      clocks, so it has no seed and a resumed run does not repeat it).
    secure_aggregation: the clients' updates are summed with TFF's
      secure-sum intrinsics (`learning.secure_aggregation`): each value
      quantized to a 32-bit integer within bounds, the bytes of those
      messages measured. With `dp_clip_norm`, the clipped updates (bounds
      +-dp_clip_norm; with `dp_target_quantile`, whose clip moves,
      +-ADAPTIVE_SECURE_BOUND x dp_clip_norm) before the server's noise.
    clients_per_round: the clients sampled each round (the mean's
      denominator).
  """
  dp_clip_norm: float = 0.0
  dp_noise_multiplier: float = 0.0
  dp_delta: float = 0.0
  dp_noise_seed: Optional[int] = None
  dp_target_quantile: float = 0.0
  dp_mechanism: str = 'gaussian'
  secure_aggregation: bool = False
  clients_per_round: int = 10

  def __post_init__(self):
    if not validation.is_number(self.dp_clip_norm) or self.dp_clip_norm < 0:
      raise validation.ConfigError('dp_clip_norm', self.dp_clip_norm, 'must be >= 0 (0: no DP)')
    if not validation.is_number(self.dp_noise_multiplier) or self.dp_noise_multiplier < 0:
      raise validation.ConfigError('dp_noise_multiplier', self.dp_noise_multiplier,
                                   'must be >= 0')
    validation.check_fraction('dp_delta', self.dp_delta)
    if self.dp_noise_seed is not None and not validation.is_int(self.dp_noise_seed):
      raise validation.ConfigError('dp_noise_seed', self.dp_noise_seed, 'must be an integer')
    validation.check_positive_int('clients_per_round', self.clients_per_round)
    validation.check_fraction('dp_target_quantile', self.dp_target_quantile)
    # TFF's adaptive clipping noises the clipped count at 0.05 m; the values'
    # noise then makes up the total z only while z < 2 x 0.05 m.
    if self.dp_target_quantile and self.dp_noise_multiplier >= 0.1 * self.clients_per_round:
      raise validation.ConfigError(
          'dp_noise_multiplier', self.dp_noise_multiplier,
          'must be below 0.1 x --clients_per_round '
          f'({0.1 * self.clients_per_round:g}) with --dp_target_quantile: adaptive clipping '
          'noises the clipped count with standard deviation 0.05 x --clients_per_round')
    if not isinstance(self.secure_aggregation, bool):
      raise validation.ConfigError('secure_aggregation', self.secure_aggregation,
                                   'must be true or false')
    if self.dp_mechanism not in DP_MECHANISMS:
      raise validation.ConfigError('dp_mechanism', self.dp_mechanism,
                                   f'must be one of {", ".join(DP_MECHANISMS)}')
    if not self.enabled:
      for name in ('dp_noise_multiplier', 'dp_delta', 'dp_noise_seed', 'dp_target_quantile'):
        if getattr(self, name):
          raise validation.ConfigError(name, getattr(self, name),
                                       'needs --dp_clip_norm > 0 (differential privacy)')
    if self.distributed:
      self._check_distributed()

  def _check_distributed(self):
    name = ('dp_mechanism', self.dp_mechanism)
    if not self.enabled:
      raise validation.ConfigError(*name, 'needs --dp_clip_norm > 0 (the clip each client '
                                   'applies before its noise)')
    if not self.dp_noise_multiplier:
      raise validation.ConfigError(*name, 'needs --dp_noise_multiplier > 0 (the Skellam '
                                   'noise the clients add)')
    if self.dp_noise_seed is not None:
      raise validation.ConfigError(
          'dp_noise_seed', self.dp_noise_seed, 'is not available with '
          '--dp_mechanism=distributed_skellam: the clients draw their noise from their own '
          'clocks, and a seed the server knew would let it remove the noise')
    if self.dp_target_quantile:
      raise validation.ConfigError(
          'dp_target_quantile', self.dp_target_quantile, 'is not available with '
          "--dp_mechanism=distributed_skellam (TFF's adaptive clip there noises the clipped "
          'count with an unseeded draw, which the run\'s op determinism refuses; the clip is '
          'fixed)')
    if self.secure_aggregation:
      raise validation.ConfigError(
          'secure_aggregation', True, 'is implied by --dp_mechanism=distributed_skellam (its '
          'own secure sum of 20-bit integers); drop --secure_aggregation')
    if self.clients_per_round > 2**DDP_BITS:
      raise validation.ConfigError(
          'clients_per_round', self.clients_per_round,
          f'must be at most 2^{DDP_BITS} with --dp_mechanism=distributed_skellam')

  @property
  def enabled(self) -> bool:
    """Differential privacy."""
    return self.dp_clip_norm > 0

  @property
  def distributed(self) -> bool:
    """Distributed DP: the clients noise their updates, the server sees a secure sum."""
    return self.dp_mechanism == 'distributed_skellam'

  @property
  def active(self) -> bool:
    """Differential privacy or secure aggregation: the model aggregator is ours."""
    return self.enabled or self.secure_aggregation

  @property
  def flag(self) -> tuple:
    """(flag, value) that turned it on, for an error message."""
    return (('dp_clip_norm', self.dp_clip_norm) if self.enabled
            else ('secure_aggregation', self.secure_aggregation))


def check_privacy(config):
  """The privacy configuration, and the compression that would bypass its noise, refused."""
  if not isinstance(config.privacy, PrivacyConfig):
    raise validation.ConfigError('privacy', config.privacy, 'must be a PrivacyConfig')
  if config.privacy.active and config.compression.aggregator_encodes_upload:
    name, value = (('quantizer', 'tff') if config.compression.tff_bits
                   else ('message_prune_target', 'delta'))
    raise validation.ConfigError(
        name, value, f'replaces the upload aggregator of --{config.privacy.flag[0]} (its '
        'clipping, noise or secure sum): use --quantizer=sparse or --message_prune_target=model')


def check_optimizers(config):
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
  privacy: PrivacyConfig = PrivacyConfig()

  def __post_init__(self):
    check_optimizers(self)
    if not isinstance(self.compression, CompressionConfig):
      raise validation.ConfigError('compression', self.compression,
                                   'must be a CompressionConfig')
    check_privacy(self)


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
  """
  _PRUNING_METHODS = PRUNING_METHODS  # A subclass's own (`PruneFLConfig`).
  schedule: Optional[ScheduleConfig] = None
  mode: str = 'global'
  mask_aggregation: str = 'majority_vote'
  pruning_method: str = 'magnitude'
  sparsity_placement: str = 'global'
  sparsity_granularity: str = 'weight'
  channel_multiple: int = 1
  seed: int = 0

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.schedule, ScheduleConfig):
      raise validation.ConfigError('schedule', self.schedule, 'must be a ScheduleConfig')
    validation.check_choice('mode', self.mode, MODES)
    validation.check_choice('mask_aggregation', self.mask_aggregation, MASK_AGGREGATIONS)
    validation.check_choice('pruning_method', self.pruning_method, self._PRUNING_METHODS)
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
    self._check_privacy_with_pruning()

  def _check_privacy_with_pruning(self):
    """What the clients send outside the noised update, refused with differential privacy."""
    if not self.privacy.active:
      return
    if self.mode == 'local':
      raise validation.ConfigError(
          *self.privacy.flag,
          "is not available with --algorithm=fedsparsify_local: the clients' masks are merged "
          'in the clear, outside the noise and the secure sum (fedsparsify_global prunes at '
          'the server)')
    if self.pruning_method in AT_INITIALIZATION:
      raise validation.ConfigError(
          *self.privacy.flag,
          'is not available with --algorithm={1}: {0} scores the initial model on one '
          "client's data, outside the noise and the secure sum".format(
              *_METHOD_NAMES[self.pruning_method]))

  @property
  def prunes(self) -> bool:
    """Whether the model is pruned (it then needs `prune_low_magnitude` wrappers)."""
    return self.schedule.final_sparsity > 0 or self.pruning_method in AT_INITIALIZATION
