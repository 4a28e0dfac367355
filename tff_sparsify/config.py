"""A training run's configuration: one frozen object, validated once.

Pure Python (no TensorFlow import), so that a binary can check its flags and
refuse a bad one in well under a second, before TensorFlow and TFF load (which
takes about 15 s on 2 cores). Field names are the flag names of
`binaries/train.py`; a `ConfigError` names the field, the value given and what
is allowed, and the binary prints it as `--field=value: reason`.

The run saves its configuration (`results/{experiment}/config.json`) when it
starts, and a later command with the same experiment name is compared against
it (`differences`): a run resumes only as the run it claims to be.
"""

import dataclasses
import json
import os
from typing import Any, Optional

from tff_sparsify import files
from tff_sparsify import validation
from tff_sparsify.learning import configs
from tff_sparsify.learning import model_sources
from tff_sparsify.learning import registry
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import sources
from tff_sparsify.simulation import worker
from tff_sparsify.simulation.sources import spec

DATASETS = data_sources.DATASETS
# `learning.models`: 'paper' is the paper's model of the dataset; 'small_cnn'
# a small CNN of ours for FashionMNIST (pure Python here: no TensorFlow).
MODELS = model_sources.BUILTIN
DEFAULT_FEATURES = spec.DEFAULT_FEATURES
MODEL_DATASETS = {'paper': DATASETS, 'small_cnn': ('fashion_mnist',)}
PARTITIONS = data_sources.PARTITIONS
EVALUATIONS = ('central', 'federated', 'both')
NUM_CLASSES = data_sources.NUM_CLASSES
QUANTIZATION_THRESHOLD = configs.QUANTIZATION_THRESHOLD
FEDPROX_DEFAULT_STRENGTH = configs.FEDPROX_DEFAULT_STRENGTH
ConfigError = validation.ConfigError

# Fields that cannot change what a run computes: they may differ on resume.
# Evaluation is centralized and reads the state only, so its period changes the
# metrics written, not the training.
RESULT_NEUTRAL_FIELDS = frozenset({
    'progress', 'root_output_dir', 'experiment_name', 'rounds_per_eval',
    'rounds_per_checkpoint', 'data_dir', 'evaluation',
})


_is_int = validation.is_int
_is_number = validation.is_number


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that defines a federated training run (the flags of `binaries/train.py`).

  Validated in `__post_init__`: construction either gives a consistent
  configuration or raises one `ConfigError`.
  """
  # Data.
  dataset: str = 'fashion_mnist'
  model: str = 'paper'
  data_dir: Optional[str] = None
  client_data: Optional[str] = None
  features: str = DEFAULT_FEATURES
  evaluation: Optional[str] = None
  client_test_fraction: float = 0.0
  partition: str = 'non_iid'
  classes_per_client: int = 2
  dirichlet_alpha: float = 0.5
  num_clients: int = 10
  clients_per_round: int = 10
  # Training.
  total_rounds: int = 200
  client_epochs_per_round: int = 4
  client_batch_size: int = 32
  client_learning_rate: float = 0.02
  client_momentum: Optional[float] = None
  server_learning_rate: float = 1.0
  algorithm: str = 'fedavg'
  proximal_strength: float = FEDPROX_DEFAULT_STRENGTH
  seed: int = 1990
  # Sparsification (Eq. 1 schedule and where the zeros go).
  final_sparsity: float = 0.9
  initial_sparsity: float = 0.0
  sparsify_start_round: int = 1
  sparsify_frequency: int = 1
  sparsify_exponent: float = 3.0
  mask_aggregation: str = 'majority_vote'
  sparsity_placement: str = 'global'
  sparsity_granularity: str = 'weight'
  channel_multiple: int = 1
  # PruneFL (--algorithm=prunefl).
  readjust_every: int = configs.PRUNEFL_READJUST_EVERY
  readjust_ratio: float = configs.PRUNEFL_READJUST_RATIO
  readjust_halving_rounds: int = configs.PRUNEFL_READJUST_HALVING_ROUNDS
  initial_reconfigurations: int = configs.PRUNEFL_INITIAL_RECONFIGURATIONS
  # Message compression (arXiv 2310.14693) and quantization.
  client_message_prune_rate: float = 0.0
  server_message_prune_rate: float = 0.0
  quantize_bits: int = 0
  quantize_threshold: int = QUANTIZATION_THRESHOLD
  quantizer: str = 'tff'
  message_prune_target: str = 'model'
  # Outputs.
  root_output_dir: str = 'output'
  experiment_name: Optional[str] = None
  rounds_per_eval: int = 1
  rounds_per_checkpoint: int = 1
  progress: bool = True

  def __post_init__(self):
    validation.check_choice('dataset', self.dataset, DATASETS)
    try:
      model_kind = model_sources.kind(self.model)
    except model_sources.ModelError as e:
      raise ConfigError('model', self.model, str(e)) from None
    if model_kind == 'builtin' and self.dataset not in MODEL_DATASETS[self.model]:
      raise ConfigError('model', self.model, f'is a model for {", ".join(MODEL_DATASETS[self.model])} '
                        f'only; --dataset={self.dataset} takes --model=paper')
    if self.client_data is not None:
      try:
        sources.parse(self.client_data)
      except sources.SourceError as e:
        raise ConfigError('client_data', self.client_data, str(e)) from None
    if self.evaluation is not None:
      validation.check_choice('evaluation', self.evaluation, EVALUATIONS)
    validation.check_fraction('client_test_fraction', self.client_test_fraction)
    try:
      spec.parse_features(self.features)
    except spec.SpecError as e:
      raise ConfigError('features', self.features, str(e)) from None
    validation.check_choice('partition', self.partition, PARTITIONS)
    validation.check_choice('algorithm', self.algorithm, registry.names())
    for name in ('num_clients', 'clients_per_round', 'total_rounds',
                 'client_epochs_per_round', 'client_batch_size', 'rounds_per_eval',
                 'rounds_per_checkpoint'):
      validation.check_positive_int(name, getattr(self, name))
    validation.check_positive_number('dirichlet_alpha', self.dirichlet_alpha)
    if not _is_int(self.seed):
      raise ConfigError('seed', self.seed, 'must be an integer')
    # With --client_data the clients are the file's (checked when it is opened).
    if self.client_data is None and self.clients_per_round > self.num_clients:
      raise ConfigError('clients_per_round', self.clients_per_round,
                        f'must be at most --num_clients ({self.num_clients})')
    if not _is_int(self.classes_per_client) or not 1 <= self.classes_per_client <= NUM_CLASSES:
      raise ConfigError('classes_per_client', self.classes_per_client,
                        f'must be in [1, {NUM_CLASSES}]')
    if self.experiment_name is not None and (
        not self.experiment_name or os.sep in self.experiment_name
        or self.experiment_name in ('.', '..')):
      raise ConfigError('experiment_name', self.experiment_name,
                        'must be a non-empty name without "/"')
    if not self.root_output_dir:
      raise ConfigError('root_output_dir', self.root_output_dir, 'must not be empty')
    # The algorithm's own options, checked by its configuration (one place).
    object.__setattr__(self, '_algorithm_config',
                       registry.config_from_flags(self.as_dict()))

  @property
  def algorithm_config(self):
    """The validated configuration of `algorithm` (`learning.configs`)."""
    return self._algorithm_config  # pylint: disable=no-member

  @property
  def experiment(self) -> str:
    """The run's directory name: `experiment_name`, or `{algorithm}_{dataset}[_{model}]_{partition}`
    (`{algorithm}_{data file's name}_{model's name}` with `--client_data`)."""
    if self.experiment_name:
      return self.experiment_name
    model = '' if self.model == 'paper' else f'_{_base_name(self.model)}'
    if self.client_data is not None:
      return f'{self.algorithm}_{_base_name(sources.parse(self.client_data)[1])}{model}'
    return f'{self.algorithm}_{self.dataset}{model}_{self.partition}'

  @property
  def feature_names(self) -> dict:
    """{'x': input feature, 'y': label feature} of `--features`."""
    return spec.parse_features(self.features)

  @property
  def prunes(self) -> bool:
    return registry.get(self.algorithm).prunes

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict) -> 'TrainConfig':
    """A configuration from a saved `as_dict` (unknown keys are an error)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise ConfigError(unknown[0], values[unknown[0]], 'is not a TrainConfig field')
    return cls(**values)


def _base_name(path: str) -> str:
  """A file's or a function's name without directory and extension ('pkg.mod:fn' -> 'fn')."""
  name = os.path.basename(os.path.normpath(path)).rpartition(':')[2]
  return os.path.splitext(name)[0] or name


def field_names() -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(TrainConfig))


def differences(saved: dict, current: TrainConfig) -> list[tuple[str, Any, Any]]:
  """The fields where `current` differs from a saved run's configuration.

  Fields in `RESULT_NEUTRAL_FIELDS` are not compared. `total_rounds` is: it
  sets the pruning schedule; for the algorithms that do not prune, a larger
  value only trains on (a smaller one is still a difference: the run would
  claim to be shorter than the checkpoints it has).

  Returns:
    `(field, saved value, current value)` for each difference, in field order.
  """
  now = current.as_dict()
  defaults = TrainConfig().as_dict()
  found = []
  for name in field_names():
    if name in RESULT_NEUTRAL_FIELDS:
      continue
    # A field an older version did not record had its default then.
    before = saved.get(name, defaults[name])
    if before == now[name]:
      continue
    if (name == 'total_rounds' and not current.prunes
        and _is_int(before) and now[name] > before):
      continue
    found.append((name, before, now[name]))
  return found


def save(config: TrainConfig, path: str):
  """Writes `config` as JSON atomically (temporary file, fsync, rename)."""
  files.atomic_write_text(path, json.dumps(config.as_dict(), indent=2, sort_keys=True) + '\n')


def load_dict(path: str) -> dict:
  """The saved configuration at `path` as a dict; ConfigError if unreadable."""
  try:
    with open(path) as f:
      values = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError('config', path, f'cannot be read ({e})') from e
  if not isinstance(values, dict):
    raise ConfigError('config', path, 'is not a JSON object')
  return values


MAX_LOCAL_WORKERS = 64
DEFAULT_WORKER_TIMEOUT_SECONDS = 60.0


def parse_worker_address(address: str) -> tuple[str, int]:
  """`host:port` (IPv6 in brackets) -> (host, port); ValueError saying why."""
  host, sep, port = address.rpartition(':')
  if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
    raise ValueError(f'{address!r} is not HOST:PORT with a port in [1, 65535]')
  return host.strip('[]'), int(port)


@dataclasses.dataclass(frozen=True)
class ExecutionConfig:
  """Where a run executes (the worker flags of `binaries/train.py`).

  Not part of the run's saved configuration: which workers run a round does
  not change what it computes, except the order of the floating-point sums
  of the partial aggregates (final weights agree to 1e-6 across 1, 2 and 3
  workers; a run on the same number of workers is reproducible bit for bit).
  """
  num_local_workers: int = 1
  workers: tuple[str, ...] = ()
  worker_credentials: Optional[str] = None
  worker_timeout_seconds: float = DEFAULT_WORKER_TIMEOUT_SECONDS
  max_worker_restarts: int = 3
  allow_unisolated_workers: bool = False

  def __post_init__(self):
    if not _is_int(self.max_worker_restarts) or self.max_worker_restarts < 0:
      raise ConfigError('max_worker_restarts', self.max_worker_restarts,
                        'must be >= 0')
    if not _is_int(self.num_local_workers) or not (
        1 <= self.num_local_workers <= MAX_LOCAL_WORKERS):
      raise ConfigError('num_local_workers', self.num_local_workers,
                        f'must be in [1, {MAX_LOCAL_WORKERS}]')
    if not _is_number(self.worker_timeout_seconds) or not (
        self.worker_timeout_seconds > 0):
      raise ConfigError('worker_timeout_seconds', self.worker_timeout_seconds,
                        'must be positive')
    if not self.workers:
      return
    if self.num_local_workers != 1:
      raise ConfigError('num_local_workers', self.num_local_workers,
                        'must be 1 (the default) with --workers')
    for address in self.workers:
      try:
        parse_worker_address(address)
      except ValueError as e:
        raise ConfigError('workers', ','.join(self.workers), str(e)) from None
    if len(set(self.workers)) != len(self.workers):
      raise ConfigError('workers', ','.join(self.workers),
                        'lists a worker twice')
    if self.worker_credentials is None:
      raise ConfigError('worker_credentials', None,
                        'must be set with --workers: remote workers are '
                        'reached only over mutual TLS (make the files with '
                        'tff-sparsify-worker --make_credentials=DIR)')
    if not os.path.isdir(self.worker_credentials):
      raise ConfigError('worker_credentials', self.worker_credentials,
                        'is not a directory')
    missing = worker.missing_coordinator_files(self.worker_credentials)
    if missing:
      raise ConfigError('worker_credentials', self.worker_credentials,
                        f'has no {missing[0]} (give the coordinator/ directory made by '
                        'tff-sparsify-worker --make_credentials)')

  @property
  def num_workers(self) -> int:
    return len(self.workers) or self.num_local_workers


def execution_field_names() -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(ExecutionConfig))
