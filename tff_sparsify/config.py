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
from tff_sparsify.learning.algorithms import fedprox
from tff_sparsify.learning.algorithms import prunefl
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import sources
from tff_sparsify.simulation import worker_processes as worker
from tff_sparsify.simulation.sources import spec

DATASETS = data_sources.DATASETS
# `learning.models`: 'paper' is the paper's model of the dataset; 'small_cnn'
# a small CNN and 'mobilenet' a MobileNetV2-style network of ours for
# FashionMNIST (pure Python here: no TensorFlow).
MODELS = model_sources.BUILTIN
DEFAULT_FEATURES = spec.DEFAULT_FEATURES
MODEL_DATASETS = {'paper': DATASETS, 'small_cnn': ('fashion_mnist',),
                  'mobilenet': ('fashion_mnist',), 'mobilenet_x2': ('fashion_mnist',)}
PARTITIONS = data_sources.PARTITIONS
EVALUATIONS = ('central', 'federated', 'both')
NUM_CLASSES = data_sources.NUM_CLASSES
QUANTIZATION_THRESHOLD = configs.QUANTIZATION_THRESHOLD
FEDPROX_DEFAULT_STRENGTH = fedprox.FEDPROX_DEFAULT_STRENGTH
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
option = validation.option


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Everything that defines a federated training run (the flags of `binaries/train.py`).

  Validated in `__post_init__`: construction either gives a consistent
  configuration or raises one `ConfigError`.
  """
  # Data.
  dataset: str = option(
      'fashion_mnist',
      'Dataset.',
      choices=DATASETS)
  model: str = option(
      'paper',
      "paper: the paper's model of --dataset (FashionMNIST: 2-layer fully connected; CIFAR-10: "
      '6-layer CNN); small_cnn: a 3-block CNN of ours for FashionMNIST only (241,546 parameters, '
      'see learning/models.py), not in the paper; mobilenet: a MobileNetV2-style network of '
      'ours for FashionMNIST only (depthwise-separable residual blocks with '
      'BatchNormalization, 50,330 parameters), not in the paper; mobilenet_x2: the same with '
      'every layer\'s channels doubled (184,106 parameters); PATH.keras: your saved Keras 2 model (its '
      'weights start the run, its compiled loss and metrics are used); package.module:function: a'
      ' function returning a new tf.keras.Model. Every layer tfmot can prune is pruned.')
  data_dir: Optional[str] = option(
      None,
      'Directory holding the four FashionMNIST IDX .gz files (default: '
      '/usr/share/datasets/fashion-mnist, else TFDS); for cifar10, the TFDS data directory.')
  client_data: Optional[str] = option(
      None,
      "Your federated data instead of --dataset: sqlite:PATH (TFF's SqlClientData layout: split "
      'train, and test where present) or tfrecord_dir:DIR (DIR/<client id>.tfrecord of '
      'tf.train.Examples, DIR/test/<client id>.tfrecord for tests) or tensor_dir:DIR. Written by '
      'tff-sparsify-data; shapes and dtypes from the spec it stores, else from the first record. '
      'Read by the local workers; with --workers, each worker serves its own (tff-sparsify-worker'
      ' --client_data).')
  features: str = option(
      DEFAULT_FEATURES,
      'With --client_data: x:NAME,y:NAME, the input and the label feature.')
  evaluation: Optional[str] = option(
      None,
      "central: the global model on the test set (--dataset's, or the clients' test splits of "
      "--client_data pooled); federated: build_fed_eval's client computation on each client's test examples (one call), the"
      ' weighted mean and the spread across clients (min, median, max); both. Default: central '
      'for --dataset, federated for --client_data with test examples.',
      choices=EVALUATIONS)
  client_test_fraction: float = option(
      0.0,
      "Hold out this fraction of each client's examples (spread through its data) as its test "
      'examples for federated evaluation; they are not trained on.')
  partition: str = option(
      'non_iid',
      'How the training examples are split over clients: iid (a seeded shuffle cut into equal '
      'shards), non_iid (--classes_per_client classes each, from a seeded class order), dirichlet'
      " (per class, Dir(--dirichlet_alpha) proportions) or shards (the FedSparsify authors' "
      'split: examples sorted by label, cut into num_clients x classes_per_client equal chunks, '
      'each client taking chunks of classes it does not hold yet; no randomness).',
      choices=PARTITIONS)
  classes_per_client: int = option(
      2,
      'Classes per client for --partition=non_iid and shards.')
  dirichlet_alpha: float = option(
      0.5,
      'Concentration for --partition=dirichlet.')
  num_clients: int = option(
      10,
      "Number of clients of --dataset (--client_data: the file's).")
  clients_per_round: int = option(
      10,
      "Clients sampled (uniformly) each round (not given, with --client_data: at most the file's "
      'clients).')
  # Training.
  total_rounds: int = option(
      200,
      'Federated rounds.')
  client_epochs_per_round: int = option(
      4,
      'Local epochs per round.')
  client_batch_size: int = option(
      32,
      'Local batch size.')
  client_learning_rate: float = option(
      0.02,
      'Client SGD learning rate.')
  client_momentum: Optional[float] = option(
      None,
      "Client SGD momentum; default 0 (fedavg, fedprox) or 0.75 (fedavg_momentum, the paper's "
      'MFL).')
  server_learning_rate: float = option(
      1.0,
      'Server SGD learning rate (1.0: FedAvg).')
  algorithm: str = option(
      'fedavg',
      'Federated algorithm: a no-pruning baseline, FedSparsify with pruning at the server '
      '(global) or at the clients merged by mask voting (local), progressive random pruning, '
      'one-shot pruning at --sparsify_start_round, SNIP or GraSP (a mask fixed before round 1, '
      'scored on one client drawn with --seed), or PruneFL (initial pruning on that client, '
      'readjusted every 50 rounds).',
      choices=registry.names())
  proximal_strength: float = option(
      FEDPROX_DEFAULT_STRENGTH,
      'FedProx mu, for --algorithm=fedprox.')
  seed: int = option(
      1990,
      'Seed of data split, model initialization, sampling and shuffling.')
  # Sparsification (Eq. 1 schedule and where the zeros go).
  final_sparsity: float = option(
      0.9,
      'S_T: sparsity reached at --total_rounds (pruning algorithms).')
  initial_sparsity: float = option(
      0.0,
      'S_0: sparsity at --sparsify_start_round.')
  sparsify_start_round: int = option(
      1,
      't_0: first round that prunes.')
  sparsify_frequency: int = option(
      1,
      'F: prune every F rounds.')
  sparsify_exponent: float = option(
      3.0,
      'n: exponent of the schedule (Eq. 1).')
  sparsify_end_round: Optional[int] = option(
      None,
      'T of the schedule (Eq. 1): the round at which s_t reaches S_T (default: '
      '--total_rounds); the rounds after it tune the pruned model with its mask fixed. '
      'Pruning algorithms only.')
  mask_aggregation: str = option(
      'majority_vote',
      'How --algorithm=fedsparsify_local merges client masks: majority vote (Eq. 2) or plain '
      'average (keep what any client kept).',
      choices=configs.MASK_AGGREGATIONS)
  sparsity_placement: str = option(
      'global',
      "Pruning algorithms: global (one magnitude ranking over all kernels, the paper's), uniform "
      '(every kernel pruned to s_t by its own ranking: equally sparse layers, which DeepSparse '
      'runs faster) or compute (per-layer sparsities that minimise the multiply-adds at total '
      's_t: the layers that cost most per weight, early convolutions, pruned hardest). Not with '
      'random_pruning.',
      choices=configs.SPARSITY_PLACEMENTS)
  sparsity_granularity: str = option(
      'weight',
      "Pruning algorithms (magnitude pruning): weight (the paper's) or channel (whole output "
      'channels of convolutions and units of dense layers, by root mean square relative to '
      "their layer's mean, the output layer excepted, each layer keeping at least a quarter "
      'of its uniform share under global placement; with their biases and '
      'BatchNormalization: the model can then be exported physically smaller, binaries/export '
      '--compact). Placement global or uniform.',
      choices=configs.SPARSITY_GRANULARITIES)
  channel_multiple: int = option(
      1,
      'With --sparsity_granularity=channel (global mode): the channels each layer keeps are '
      'rounded to the nearest multiple of this (1: exact counts; 16 suits ONNX Runtime and TFLite'
      ' on AVX-512), since CPU runtimes run channel counts in blocks.')
  # PruneFL (--algorithm=prunefl).
  readjust_every: int = option(
      prunefl.READJUST_EVERY,
      "--algorithm=prunefl: rounds between readjustments of the mask (the paper's 50).")
  readjust_ratio: float = option(
      prunefl.READJUST_RATIO,
      '--algorithm=prunefl: s of the readjustment ratio s x 0.5^(t / H), the fraction of kept '
      "weights swapped at round t (the paper's 0.3).")
  readjust_halving_rounds: int = option(
      prunefl.READJUST_HALVING_ROUNDS,
      "--algorithm=prunefl: H of the readjustment ratio (the paper's 1000).")
  initial_reconfigurations: int = option(
      prunefl.INITIAL_RECONFIGURATIONS,
      "--algorithm=prunefl: reconfigurations of the initial pruning on one client (the paper's "
      '5).')
  # Message compression (arXiv 2310.14693) and quantization.
  client_message_prune_rate: float = option(
      0.0,
      'Message compression of arXiv 2310.14693: fraction of the uploaded weights (smallest by '
      'magnitude) the clients zero before sending, in [0, 1). For fedavg, fedavg_momentum and the'
      ' pruning algorithms.')
  server_message_prune_rate: float = option(
      0.0,
      'The same for the model the server broadcasts.')
  quantize_bits: int = option(
      0,
      'If not 0, uniform quantization at this many bits, in [1, 16], of the tensors over '
      '--quantize_threshold elements, by --quantizer (default: the uploaded model deltas, '
      'aggregated with tff.aggregators.EncodedSumFactory.quantize_above_threshold), stackable '
      'with the message prune rates. Not with fedprox.')
  quantize_threshold: int = option(
      QUANTIZATION_THRESHOLD,
      "With --quantize_bits: tensors with more elements than this are quantized (TFF's default; "
      'smaller kernels and the biases stay lossless).')
  quantizer: str = option(
      'tff',
      "With --quantize_bits: tff (TFF's quantizing aggregator, the uploads only, every element, "
      "zeros included) or sparse (this package's: the non-zero values only, of the uploads and of"
      ' the broadcast; the server keeps its full-precision model).',
      choices=configs.QUANTIZERS)
  message_prune_target: str = option(
      'model',
      'What --client_message_prune_rate prunes: model (arXiv 2310.14693: the smallest weights of '
      'the trained model, in the client work) or delta (the smallest entries of the update, '
      'top-k, in a TFF aggregation factory that also quantizes with --quantizer=sparse and counts'
      " the upload's bytes).",
      choices=configs.MESSAGE_PRUNE_TARGETS)
  # Client-level differential privacy (learning/dp_aggregation.py).
  dp_clip_norm: float = option(
      0.0,
      "Differential privacy (DP-FedAvg): clip each client's model update to this L2 norm, add "
      'Gaussian noise of --dp_noise_multiplier times it to the sum at the server, divide by '
      '--clients_per_round (each client counts once); 0: off. For fedavg, fedavg_momentum, '
      'fedprox and the server-side pruning algorithms (not fedsparsify_local, snip, grasp, '
      'prunefl, nor a model with BatchNormalization). Epsilon is reported each round '
      '(privacy/epsilon) and in summary.json.')
  dp_noise_multiplier: float = option(
      0.0,
      'With --dp_clip_norm: noise standard deviation over the clip norm (0: clipping only, no '
      'guarantee).')
  dp_delta: float = option(
      0.0,
      'With --dp_clip_norm: the delta of the (epsilon, delta) guarantee reported; 0: 1 / the '
      'number of clients.')
  dp_target_quantile: float = option(
      0.0,
      "With --dp_clip_norm: 0 (a fixed clip) or in (0, 1): adaptive clipping (TFF's "
      'gaussian_adaptive, Andrew et al. 2021), the clip starting at --dp_clip_norm and moving '
      "each round towards this quantile of the clients' update norms (0.5: the median); "
      '--dp_noise_multiplier is then the total over the update and the noised clipped count and '
      'must be below 0.1 x --clients_per_round.')
  dp_mechanism: str = option(
      'gaussian',
      'With --dp_clip_norm: gaussian (central DP: the server adds the noise to the clipped sum) '
      "or distributed_skellam (distributed DP, TFF's DistributedDpSumFactory as "
      'tff.learning.ddp_secure_aggregator builds it, fixed clip: each client rotates, scales and '
      'rounds its clipped update to integers and adds its share of Skellam noise, and the '
      'server sees only their 20-bit secure sum; needs --dp_noise_multiplier > 0; the noise '
      'has no seed, so a resumed run does not repeat it). Epsilon accounts the Skellam '
      'mechanism (Agarwal et al. 2021) on the scaled integers.',
      choices=configs.DP_MECHANISMS)
  secure_aggregation: bool = option(
      False,
      "Sum the clients' updates with TFF's secure-sum intrinsics (each value a 32-bit integer "
      'within bounds; with --dp_clip_norm, within +-dp_clip_norm before the noise) and count '
      'the bytes of those messages; the secure-sum message a known mask would allow is counted '
      'too (secure_sum_bytes_known_mask). In simulation the intrinsics are replaced by their '
      'bodies, as TFF does: the arithmetic is secure aggregation\'s, the secrecy is not. Same '
      'algorithms as --dp_clip_norm; with --dp_target_quantile the bounds are +-1024 x '
      '--dp_clip_norm (the clip moves; a value beyond is clipped and counted).')
  dp_noise_seed: Optional[int] = option(
      None,
      'With --dp_clip_norm: seed of the noise (default: drawn from the operating system and kept '
      'in the checkpoints). Whoever knows it can remove the noise: for tests and reproductions.')
  # Outputs.
  root_output_dir: str = option(
      'output',
      'Root directory of all outputs.')
  experiment_name: Optional[str] = option(
      None,
      "Name of this run's output subdirectories (default: {algorithm}_{dataset}_{partition}).")
  rounds_per_eval: int = option(
      1,
      'Evaluate on the test set every this many rounds.')
  rounds_per_checkpoint: int = option(
      1,
      'Save program state every this many rounds.')
  progress: bool = option(
      True,
      'Show a progress bar.')

  def __post_init__(self):
    validation.check_choices(self)
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
    validation.check_fraction('client_test_fraction', self.client_test_fraction)
    try:
      spec.parse_features(self.features)
    except spec.SpecError as e:
      raise ConfigError('features', self.features, str(e)) from None
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
    if self.sparsify_end_round is not None:
      if not registry.get(self.algorithm).prunes:
        raise ConfigError('sparsify_end_round', self.sparsify_end_round,
                          f'is for pruning algorithms, not --algorithm={self.algorithm}')
      if not _is_int(self.sparsify_end_round) or not (
          self.sparsify_start_round < self.sparsify_end_round <= self.total_rounds):
        raise ConfigError('sparsify_end_round', self.sparsify_end_round,
                          f'must be in (sparsify_start_round={self.sparsify_start_round}, '
                          f'total_rounds={self.total_rounds}]')
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
  num_local_workers: int = option(
      1,
      'TFF workers this run starts on this machine; with more than one, the sampled clients of '
      "each round are split across them (TFF's mergeable-comp runtime). Each runs in its own "
      'network namespace, reached only by this process over a Unix socket.')
  workers: tuple[str, ...] = option(
      (),
      'HOST:PORT,... of remote workers (tff-sparsify-worker on each host), reached over mutual '
      'TLS with --worker_credentials; instead of local workers.')
  worker_credentials: Optional[str] = option(
      None,
      'With --workers: directory holding ca.pem, coordinator.pem and coordinator.key '
      '(tff-sparsify-worker --make_credentials=DIR).')
  worker_timeout_seconds: float = option(
      DEFAULT_WORKER_TIMEOUT_SECONDS,
      'A worker that has died or not answered for this long is lost: a local one is restarted and'
      ' its round run again (at most --max_worker_restarts times), a remote one ends the run '
      '(resume with the same command).')
  max_worker_restarts: int = option(
      3,
      'Restarts of lost local workers in one run.')
  allow_unisolated_workers: bool = option(
      False,
      'Where no private network namespace can be made, run local workers anyway, bound to '
      'loopback only (a preloaded bind, built with cc): other local users of this machine can '
      'then reach them.')

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
