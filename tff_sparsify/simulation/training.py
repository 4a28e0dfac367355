"""The federated round loop, on TFF's program and simulation utilities.

`run_federated_training` drives `tff.simulation.run_training_process` with:
- `tff.program.FileProgramStateManager` under `checkpoints/{experiment}`:
  program state is written atomically (temporary directory, then rename) every
  `rounds_per_checkpoint` rounds, and a new run of the same experiment resumes
  from the latest one that loads (`CheckpointManager`: a damaged one is set
  aside and the one before it used);
- `tff.program.CSVFileReleaseManager` (`results/{experiment}/metrics.csv`,
  rewritten atomically each round; rows after the round a run resumes from
  are dropped) and
  `tff.program.TensorBoardReleaseManager` (`logdir/{experiment}`), plus a
  progress bar written as a release manager;
- `tff.simulation.build_uniform_sampling_fn` for client sampling, so that the
  clients of round t depend only on (seed, t), and client shuffling seeded by
  (seed, t, client): a resumed run trains on exactly the same data as an
  uninterrupted one.

Evaluation is centralized (the global model is copied into a Keras model and
evaluated on the test set), federated (TFF's `build_fed_eval` on each
client's test examples, `evaluation.py`), or both. At the end the final model is saved as
`results/{experiment}/final_model.keras`, stripped of its pruning wrappers
(`tfmot.sparsity.keras.strip_pruning`), and `summary.json` records its test
accuracy, non-zero parameters and sparsity.
"""

import asyncio
import collections
import csv
import dataclasses
import hashlib
import json
import os
import sys
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_model_optimization as tfmot
import tqdm

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import _tff_internals as tffi
from tff_sparsify import config as config_lib
from tff_sparsify import files
from tff_sparsify import signals
from tff_sparsify.core import masks as masks_lib
from tff_sparsify.learning import dp_aggregation
from tff_sparsify.learning import models
from tff_sparsify.learning import privacy_accounting
from tff_sparsify.learning import pruning
from tff_sparsify.simulation import run_data as data_lib
from tff_sparsify.simulation import run_record

TRAIN_LOSS_KEY = 'client_work/train/loss'
TEST_ACCURACY_KEY = 'evaluation/accuracy'
TEST_LOSS_KEY = 'evaluation/loss'
FEDERATED_ACCURACY_KEY = 'evaluation/federated/accuracy'


def flatten_metrics(metrics, prefix: str = '') -> collections.OrderedDict:
  """Flattens nested metrics to 'a/b/c' keys, as TFF's CSV manager does."""
  flat = collections.OrderedDict()
  for key, value in metrics.items():
    name = f'{prefix}{key}'
    if isinstance(value, collections.abc.Mapping):
      flat.update(flatten_metrics(value, f'{name}/'))
    else:
      flat[name] = value
  return flat


class ProgressReleaseManager(tff.program.ReleaseManager):
  """Shows a tqdm bar over rounds with the latest train loss and test accuracy."""

  def __init__(self, total_rounds: int, file=None, disable: bool = False):
    self._bar = tqdm.tqdm(
        total=total_rounds, unit='round', file=file or sys.stderr,
        disable=disable, dynamic_ncols=True,
    )
    self._postfix = collections.OrderedDict()

  async def release(self, value, key) -> None:
    flat = flatten_metrics(value)
    if TRAIN_LOSS_KEY in flat:
      self._postfix['train_loss'] = f'{float(flat[TRAIN_LOSS_KEY]):.4f}'
    for name in (TEST_ACCURACY_KEY, FEDERATED_ACCURACY_KEY):
      if name in flat:
        self._postfix['test_acc'] = f'{float(flat[name]):.4f}'
    self._bar.n = int(key)
    self._bar.set_postfix(collections.OrderedDict(round=int(key), **self._postfix))
    self._bar.refresh()

  def close(self):
    self._bar.close()


# The per-round counts the loop adds up: every released metric whose name ends
# so (the distributor's downloads; the client work's and, with TFF's
# quantizer, the aggregator's uploads).
CUMULATIVE_METRICS = ('bytes_downloaded', 'bytes_uploaded', 'transmission_mbits',
                      'secure_sum_bytes_known_mask')


class CumulativeReleaseManager(tff.program.ReleaseManager):
  """Adds `cumulative/*`, the totals so far of the rounds' byte counts, then releases to `managers`.

  The totals come from the metrics released, not from the learning
  process's state: on the first release of a resumed run they start from the
  `cumulative/*` columns of the metrics CSV's row for the round before, so a
  resumed run goes on counting.
  """

  def __init__(self, managers, csv_path: str, added: Optional[Callable[[int], dict]] = None):
    self._managers = list(managers)
    self._csv_path = csv_path
    self._totals = None
    self._added = added  # round -> {name: metrics} added to the round's (the guarantee).

  def _totals_before(self, round_num: int) -> dict:
    totals = {}
    if round_num > 1 and os.path.exists(self._csv_path):
      with open(self._csv_path, newline='') as f:
        for row in csv.DictReader(f):
          if row.get('round_num') == str(round_num - 1):
            for name in CUMULATIVE_METRICS:
              if row.get(f'cumulative/{name}'):
                totals[name] = _parse_total(name, row[f'cumulative/{name}'])
    return totals

  async def release(self, value, key) -> None:
    flat = flatten_metrics(value)
    this_round = collections.OrderedDict()
    for path, count in flat.items():
      name = path.rsplit('/', 1)[-1]
      if name in CUMULATIVE_METRICS and not path.startswith('cumulative/'):
        this_round[name] = this_round.get(name, 0) + _parse_total(name, count)
    if this_round:
      if self._totals is None:
        self._totals = self._totals_before(int(key))
      for name, count in this_round.items():
        self._totals[name] = self._totals.get(name, 0) + count
      value = collections.OrderedDict(value)
      value['cumulative'] = collections.OrderedDict(
          (name, self._totals[name]) for name in CUMULATIVE_METRICS if name in this_round)
    if self._added is not None and int(key) > 0:  # Round 0 is the initial evaluation.
      value = collections.OrderedDict(value, **self._added(int(key)))
    await asyncio.gather(*[m.release(value, key) for m in self._managers])


class ChannelFloorWarning(tff.program.ReleaseManager):
  """Says once, in one line on stderr, when channel pruning squeezed a layer to its floor.

  `finalizer/channel_layers_at_floor` (`core.masks.channel_layers_at_floor`)
  counts the layers that the global channel ranking left with no more than
  the floor of kept channels (a quarter of their uniform share).
  """

  def __init__(self, stream=None):
    self._stream = stream
    self._warned = False

  async def release(self, value, key) -> None:
    if self._warned:
      return
    found = [int(v) for path, v in flatten_metrics(value).items()
             if path.endswith('channel_layers_at_floor')]
    if found and max(found) > 0:
      self._warned = True
      print(f'warning: round {key}: {max(found)} layer(s) kept only the floor of their '
            'channels (a quarter of their share under uniform placement): the global '
            'channel ranking pruned them hardest; --sparsity_placement=uniform or a lower '
            '--final_sparsity prunes more evenly', file=self._stream or sys.stderr, flush=True)


def _parse_total(name: str, value):
  return float(value) if name == 'transmission_mbits' else int(value)


class NoCheckpointError(Exception):
  """No checkpoint of the experiment loads; `str` is the one-line message."""


class OutputWriteError(Exception):
  """A checkpoint or metrics write failed (full disk, ...); `str` is one line."""

  def __init__(self, what: str, error: BaseException):
    super().__init__(f'cannot write {what}: {type(error).__name__}: {_first_line(error)}')


class _GuardedReleaseManager(tff.program.ReleaseManager):
  """Turns a failed metrics write into `OutputWriteError` naming the output."""

  def __init__(self, manager: tff.program.ReleaseManager, what: str):
    self._manager = manager
    self._what = what

  async def release(self, value, key) -> None:
    try:
      await self._manager.release(value, key)
    except Exception as e:  # pylint: disable=broad-except
      raise OutputWriteError(f'{self._what} (round {key})', e) from e


def _first_line(error: BaseException) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


DIGESTS_FILE = 'digests.json'


def tree_digest(path: str) -> str:
  """sha256 over a checkpoint's files (relative names and contents); ValueError on a link."""
  digest = hashlib.sha256()
  for directory, subdirs, names in os.walk(path):
    subdirs.sort()
    for name in sorted(subdirs + names):
      full = os.path.join(directory, name)
      if os.path.islink(full):
        raise ValueError(f'{full} is a symbolic link')
    for name in sorted(names):
      full = os.path.join(directory, name)
      digest.update(os.path.relpath(full, path).encode() + b'\0')
      with open(full, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
          digest.update(block)
      digest.update(b'\0')
  return digest.hexdigest()


class CheckpointManager(tff.program.FileProgramStateManager):
  """`FileProgramStateManager` whose `load_latest` survives damaged checkpoints.

  A checkpoint is a TensorFlow program: one is loaded only if its digest
  (`tree_digest`) is the one this run recorded when it wrote it
  (`digests.json` beside the checkpoints, written atomically after each
  save). One missing from the record (another run's, copied in) or not
  matching it (replaced, or silently corrupted) is treated as damaged,
  below, without being loaded. A record that does not exist at all (a run
  made before the record) is said in one line and its checkpoints loaded.

  TFF's `load_latest` loads the newest version only, and a truncated or
  corrupted one ends the run with a traceback. Here the versions are tried
  newest first; each one that fails to load is reported in one line and, once
  an older one has loaded, renamed to `program_state_N.damaged` (TFF ignores
  such names), so the run goes on from the newest good state and a later
  resume does not trip over it again. If none loads, `NoCheckpointError` is
  raised and every file is left in place. Leftovers of an interrupted write
  (`program_state_N_tempXXXX`, TFF's temporary names) are removed.
  """

  def __init__(self, root_dir: str, *, report=None, **kwargs):
    super().__init__(root_dir, **kwargs)
    self._report = report or (lambda line: print(line, file=sys.stderr, flush=True))

  @property
  def root(self) -> str:
    return tffi.checkpoint_root(self)

  def _remove_interrupted_writes(self):
    prefix = run_record.CHECKPOINT_PREFIX
    for name in os.listdir(self.root):
      version, _, suffix = name[len(prefix):].partition('_temp')
      if name.startswith(prefix) and version.isdigit() and suffix.isdigit():
        files.remove_tree(os.path.join(self.root, name))

  def _digests_path(self) -> str:
    return os.path.join(self.root, DIGESTS_FILE)

  def _read_digests(self):
    """{version: digest}, or None if this run has no record."""
    path = self._digests_path()
    if not os.path.lexists(path):
      return None
    try:
      if os.path.islink(path):
        raise ValueError('a symbolic link')
      with open(path) as f:
        found = json.load(f)
      return {int(k): str(v) for k, v in found.items()}
    except (OSError, ValueError, AttributeError) as e:
      self._report(f'checkpoint digests {path} cannot be read ({e}): no checkpoint is trusted')
      return {}

  async def save(self, program_state, version: int) -> None:
    path = tffi.checkpoint_path(self, version)
    try:
      await super().save(program_state, version)
      digests = self._read_digests() or {}
      digests[version] = tree_digest(path)
      existing = {v for v in digests if os.path.isdir(tffi.checkpoint_path(self, v))}
      files.atomic_write_text(self._digests_path(), json.dumps(
          {str(v): d for v, d in sorted(digests.items()) if v in existing}, indent=1) + '\n')
    except Exception as e:  # pylint: disable=broad-except
      # TF reports a full disk as one of several OpErrors, not as OSError.
      raise OutputWriteError(f'checkpoint {path}', e) from e

  def _verify(self, version: int, digests) -> str:
    """Why checkpoint `version` must not be loaded ('' if it may)."""
    if digests is None:
      return ''
    path = tffi.checkpoint_path(self, version)
    if version not in digests:
      return 'is not in this run\'s record of checkpoints (another run\'s?); not loaded'
    try:
      found = tree_digest(path)
    except (OSError, ValueError) as e:
      return f'cannot be verified ({e}); not loaded'
    if found != digests[version]:
      return 'does not match the digest this run recorded (replaced or corrupted); not loaded'
    return ''

  async def load_latest(self, structure):
    if os.path.isdir(self.root):
      self._remove_interrupted_writes()
    versions = await self.get_versions()
    if not versions:
      return None, 0
    digests = self._read_digests()
    if digests is None:
      self._report(f'checkpoints in {self.root} have no digest record (a run made '
                   'before it): loaded unverified')
    damaged = []
    for version in reversed(versions):
      path = tffi.checkpoint_path(self, version)
      why = self._verify(version, digests)
      if why:
        self._report(f'checkpoint {path} {why}')
        damaged.append(path)
        continue
      try:
        state = await self.load(version, structure)
      except Exception as e:  # pylint: disable=broad-except
        # TF raises IndexError, DataLossError, ValueError, ... for a bad file.
        self._report(f'checkpoint {path} cannot be loaded: {type(e).__name__}: '
                     f'{_first_line(e)}')
        damaged.append(path)
        continue
      for bad in damaged:
        aside = bad + '.damaged'
        suffix = 1
        while os.path.exists(aside):
          aside, suffix = f'{bad}.damaged{suffix}', suffix + 1
        os.rename(bad, aside)
        self._report(f'checkpoint {bad} set aside as {aside}; resuming from '
                     f'{path} (round {version})')
      return state, version
    raise NoCheckpointError(
        f'no checkpoint in {self.root} loads ({len(damaged)} tried, all '
        'left in place); pass --overwrite to start the run afresh')


def client_shuffle_seed(seed: int, round_num: int, client_index: int) -> int:
  return int((seed * 1_000_003 + round_num * 10_007 + client_index) % (2**31 - 1))


def _sampler(client_ids: list, clients_per_round: int, seed: int) -> Callable:
  """`round_num -> [(client id, its shuffle seed)]`: TFF's uniform sampling without replacement."""
  if not 1 <= clients_per_round <= len(client_ids):
    raise ValueError(f'clients_per_round must be in [1, {len(client_ids)}], got '
                     f'{clients_per_round}')
  sample = tff.simulation.build_uniform_sampling_fn(client_ids, replace=False, random_seed=seed)
  index = {cid: i for i, cid in enumerate(client_ids)}

  def sampled(round_num: int):
    return [(cid, client_shuffle_seed(seed, round_num, index[cid]))
            for cid in sample(round_num, clients_per_round)]

  return sampled


def build_training_selection_fn(
    client_data: tff.simulation.datasets.ClientData, *, clients_per_round: int,
    batch_size: int, epochs: int, seed: int, element_fn: Optional[Callable] = None,
) -> Callable[[int], list[tf.data.Dataset]]:
  """Returns `round_num -> [preprocessed dataset of each sampled client]`.

  `element_fn` turns a batch into the model's input (`data.RunData.element_fn`;
  default: the built-in images' `normalize`).
  """
  sampled = _sampler(list(client_data.client_ids), clients_per_round, seed)

  def selection_fn(round_num: int) -> list[tf.data.Dataset]:
    return [
        data_lib.preprocess_client_dataset(
            client_data.create_tf_dataset_for_client(cid),
            batch_size=batch_size, epochs=epochs, seed=client_seed, element_fn=element_fn)
        for cid, client_seed in sampled(round_num)
    ]

  return selection_fn


def build_id_selection_fn(federation, *, clients_per_round: int, seed: int) -> Callable:
  """`round_num -> (client arguments, clients per worker)`, for `ByIdProcess`.

  The clients are sampled as `build_training_selection_fn` samples them
  (the same sampler over the sorted client ids, the same shuffle seeds), but
  what goes to the workers is each client's id
  (`client_ids.Federation.arguments`).
  """
  sampled = _sampler(list(federation.clients()), clients_per_round, seed)

  def selection_fn(round_num: int):
    ids, seeds = zip(*sampled(round_num))
    return federation.arguments(list(ids), list(seeds))

  return selection_fn


class ByIdProcess:
  """`process` composed with a dataset computation: `next` takes client ids.

  `next(state, (arguments, counts))` runs the composed process (TFF's
  `compose_dataset_computation_with_learning_process`) with the clients cut
  among the workers as `counts` says (`WorkerPoolContext.clients_per_worker`).
  Everything else is the process's own.
  """

  def __init__(self, process, dataset_computation, context):
    self.process = process
    self.composed = tff.simulation.compose_dataset_computation_with_learning_process(
        dataset_computation, process)
    self._context = context

  def initialize(self):
    return self.composed.initialize()

  def next(self, state, selection):
    arguments, counts = selection
    with self._context.clients_per_worker(counts):
      return self.composed.next(state, arguments)

  def get_model_weights(self, state):
    return self.process.get_model_weights(state)


def build_centralized_evaluation_fn(
    process: tff.learning.templates.LearningProcess,
    keras_model: tf.keras.Model, test_data: tf.data.Dataset,
    loss: Optional[tf.keras.losses.Loss] = None, metrics: Optional[list] = None,
) -> Callable[..., collections.OrderedDict]:
  """Returns `(state, unused) -> OrderedDict(loss, <metric names>)` on `test_data`.

  Default `loss` and `metrics`: sparse categorical cross-entropy from logits
  and `accuracy` (the model's own where it has them, `model_sources`).
  """
  keras_model.compile(
      loss=loss or tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      metrics=metrics or [tf.keras.metrics.SparseCategoricalAccuracy(name='accuracy')],
  )

  def evaluation_fn(state, unused_data=None):
    del unused_data
    process.get_model_weights(state).assign_weights_to(keras_model)
    return collections.OrderedDict(
        (name, float(value))
        for name, value in keras_model.evaluate(test_data, verbose=0, return_dict=True).items())

  return evaluation_fn


@dataclasses.dataclass
class TrainingResult:
  state: object
  final_metrics: dict
  dirs: run_record.OutputDirs


def run_federated_training(
    process: tff.learning.templates.LearningProcess,
    client_data: tff.simulation.datasets.ClientData,
    config: config_lib.TrainConfig,
    *,
    keras_model: tf.keras.Model,
    test_data: Optional[tf.data.Dataset],
    element_fn: Optional[Callable] = None,
    loss: Optional[tf.keras.losses.Loss] = None,
    metrics: Optional[list] = None,
    federated_evaluation_fn: Optional[Callable] = None,
    by_id: Optional[Callable] = None,
) -> TrainingResult:
  """Trains `process` for `config.total_rounds`, resuming from the latest checkpoint.

  Args:
    process: the learning process to run.
    client_data: the clients' training data (`OrderedDict(x, y)` elements).
    config: the run's validated configuration. Used here: `total_rounds`,
      `clients_per_round`, `client_batch_size`, `client_epochs_per_round`,
      `seed` (client sampling and shuffling), `root_output_dir` and
      `experiment` (the directories), `rounds_per_eval` (the last round is
      always evaluated, for the summary), `rounds_per_checkpoint` and
      `progress`.
    keras_model: a Keras model of the same architecture (wrapped for pruning if
      the process prunes), used for evaluation and saved at the end.
    test_data: batched `(x, y)` centralized test set, or None (no evaluation).
    element_fn: a batch of `client_data` to the model's input (default:
      `data.normalize`, the built-in images').
    loss, metrics: of the evaluation (default: sparse categorical
      cross-entropy from logits, accuracy).
    federated_evaluation_fn: `model weights -> metrics` on the clients' test
      examples (`evaluation.build_federated_evaluation_fn`), or None; its
      metrics are released under `evaluation/federated/` and summarized as
      `federated_test_*`.
    by_id: `(federation, context, dataset computation)`: the workers build
      the clients' datasets from ids (`client_ids.py`); `client_data` is
      then unused (may be None).

  Returns:
    A `TrainingResult` with the final state and metrics.
  """
  total_rounds, seed = config.total_rounds, config.seed
  dirs = run_record.output_dirs(config.root_output_dir, config.experiment)
  for d in dirs.all():
    os.makedirs(d, exist_ok=True)

  run_process = process
  if by_id is not None:
    federation, context, dataset_computation = by_id
    run_process = ByIdProcess(process, dataset_computation, context)
    sample_clients = build_id_selection_fn(
        federation, clients_per_round=config.clients_per_round, seed=seed)
  else:
    sample_clients = build_training_selection_fn(
        client_data, clients_per_round=config.clients_per_round,
        batch_size=config.client_batch_size, epochs=config.client_epochs_per_round,
        seed=seed, element_fn=element_fn,
    )

  def selection_fn(round_num: int) -> list[tf.data.Dataset]:
    # Before each round: a termination signal must end the run even if its
    # exception was raised, and dropped, inside a finalizer.
    signals.raise_if_signalled()
    return sample_clients(round_num)

  evaluation_fn = _evaluation_fn(process, keras_model, test_data, loss, metrics,
                                 federated_evaluation_fn)
  state_manager = CheckpointManager(dirs.checkpoints, keep_total=3, keep_first=False)
  progress = ProgressReleaseManager(total_rounds, disable=not config.progress)
  guarantee = privacy_guarantee(
      config, len(federation.clients() if by_id else client_data.client_ids), keras_model)
  metrics_managers = [_metrics_manager(dirs, progress, guarantee)]
  try:
    state = tff.simulation.run_training_process(
        run_process, training_selection_fn=selection_fn, total_rounds=total_rounds,
        evaluation_fn=evaluation_fn,
        evaluation_selection_fn=lambda round_num: None,
        rounds_per_evaluation=config.rounds_per_eval,
        program_state_manager=state_manager,
        rounds_per_saving_program_state=config.rounds_per_checkpoint,
        metrics_managers=metrics_managers,
    )
  finally:
    progress.close()

  final_metrics = _write_final(process, state, keras_model, evaluation_fn, total_rounds, dirs,
                               guarantee)
  return TrainingResult(state=state, final_metrics=final_metrics, dirs=dirs)


def _evaluation_fn(process, keras_model, test_data, loss, metrics, federated_evaluation_fn):
  """`state -> metrics` of the central and federated evaluations asked for, or None."""
  central_fn = None if test_data is None else build_centralized_evaluation_fn(
      process, keras_model, test_data, loss, metrics)
  if central_fn is None and federated_evaluation_fn is None:
    return None

  def evaluation_fn(state, unused_data=None):
    del unused_data
    found = central_fn(state) if central_fn else collections.OrderedDict()
    if federated_evaluation_fn is not None:
      found['federated'] = federated_evaluation_fn(process.get_model_weights(state))
    return found
  return evaluation_fn


def privacy_guarantee(config: config_lib.TrainConfig, num_clients: int,
                      keras_model: tf.keras.Model) -> Optional[Callable[[int], dict]]:
  """`round -> {'privacy': {epsilon, delta}}` of a differentially private run, else None.

  Epsilon after that many rounds at the run's delta, for its sampling
  (`learning.privacy_accounting`); without noise (clipping only), the delta
  alone: there is no guarantee. Distributed DP accounts the Skellam
  mechanism on the integers the clients send, from the parameters TFF
  derives for updates of `keras_model`'s trainable values
  (`dp_aggregation.distributed_parameters`; every round the same: the clip
  is fixed), assuming every sampled client adds its noise.
  """
  privacy = config.algorithm_config.privacy
  if not privacy.enabled:
    return None
  delta = privacy_accounting.delta_of(privacy.dp_delta, num_clients)
  if privacy.distributed:
    per_round = dp_aggregation.distributed_parameters(
        privacy, models.num_trainable_parameters(keras_model))

  def guarantee(round_num: int) -> dict:
    found = collections.OrderedDict()
    if privacy.distributed:
      eps = privacy_accounting.skellam_epsilon(per_round, round_num, num_clients, delta)
    else:
      eps = privacy_accounting.epsilon(privacy.dp_noise_multiplier, num_clients,
                                       config.clients_per_round, round_num, delta)
    if eps is not None:
      found['epsilon'] = eps
    found['delta'] = delta
    return collections.OrderedDict(privacy=found)
  return guarantee


def _metrics_manager(dirs: run_record.OutputDirs, progress,
                     guarantee=None) -> CumulativeReleaseManager:
  """metrics.csv, TensorBoard and the progress bar, with the running totals added
  (and the privacy guarantee, `privacy_guarantee`)."""
  csv_path = os.path.join(dirs.results, 'metrics.csv')
  return CumulativeReleaseManager([
      _GuardedReleaseManager(tff.program.CSVFileReleaseManager(
          csv_path, key_fieldname='round_num',
          save_mode=tff.program.CSVSaveMode.WRITE), csv_path),
      _GuardedReleaseManager(tff.program.TensorBoardReleaseManager(dirs.logdir),
                             f'TensorBoard events in {dirs.logdir}'),
      progress, ChannelFloorWarning(),
  ], csv_path, guarantee)


def _write_final(process, state, keras_model, evaluation_fn, total_rounds: int,
                 dirs: run_record.OutputDirs, guarantee=None) -> collections.OrderedDict:
  """The final metrics; the final model, weights and summary written (atomically)."""
  final_metrics = collections.OrderedDict(total_rounds=total_rounds)
  if guarantee is not None:  # dp_epsilon null: clipping without noise, no guarantee.
    privacy = guarantee(total_rounds)['privacy']
    final_metrics.update(dp_epsilon=privacy.get('epsilon'), dp_delta=privacy['delta'])
  # The Keras model gets the final weights (the central evaluation assigns them too).
  process.get_model_weights(state).assign_weights_to(keras_model)
  if evaluation_fn is not None:
    final = evaluation_fn(state)
    federated = final.pop('federated', {})
    final_metrics.update((f'test_{name}', value) for name, value in final.items())
    final_metrics.update((f'federated_test_{name}', value) for name, value in federated.items())
  final_metrics.update(
      nonzero_params=int(sum(np.count_nonzero(w) for w in keras_model.trainable_weights)),
      total_params=int(sum(np.size(w) for w in keras_model.trainable_weights)),
  )
  final_model = keras_model
  if pruning.wrappers(keras_model):
    final_metrics['sparsity'] = float(masks_lib.sparsity(pruning.prunable_weights(keras_model)))
    final_model = tfmot.sparsity.keras.strip_pruning(keras_model)
  try:
    with files.atomic_path(os.path.join(dirs.results, 'final_model.keras')) as temp:
      final_model.save(temp)
    with files.atomic_path(os.path.join(dirs.results, 'final_weights.npz')) as temp:
      np.savez(temp, *[np.asarray(w) for w in keras_model.get_weights()])
    files.atomic_write_text(os.path.join(dirs.results, 'summary.json'),
                            json.dumps(final_metrics, indent=2))
  except Exception as e:  # pylint: disable=broad-except
    raise OutputWriteError(f'the final model and summary in {dirs.results}', e) from e
  return final_metrics
