r"""Federated training of the paper's models on TFF.

Example:

  python -m binaries.train --dataset=fashion_mnist --partition=non_iid \
    --classes_per_client=2 --num_clients=10 --clients_per_round=10 \
    --total_rounds=10 --algorithm=fedsparsify_global --final_sparsity=0.9 \
    --root_output_dir=/tmp/fl --experiment_name=global_090

Outputs go to {root_output_dir}/checkpoints|results|logdir/{experiment_name}.
Running the same command again resumes from the latest checkpoint. The
results hold metrics.csv (per round: sparsity, parameters exchanged, ...),
summary.json and final_model.keras (stripped of pruning wrappers).
"""

import dataclasses
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')  # No C-core lines on stderr.

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging

from tff_sparsify.binaries import flag_utils
from tff_sparsify import config as config_lib
from tff_sparsify import signals
from tff_sparsify.learning import configs
from tff_sparsify.learning import model_sources
from tff_sparsify.learning import registry
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import sources
from tff_sparsify.simulation.sources import spec
from tff_sparsify.simulation import run_record

# TensorFlow and TFF are imported in `train`, after the flags are checked: a
# bad flag is refused in well under a second instead of after 15 s of imports.

_DATASET = flags.DEFINE_enum(
    'dataset', 'fashion_mnist', list(config_lib.DATASETS), 'Dataset.')
_MODEL = flags.DEFINE_string(
    'model', 'paper',
    'paper: the paper\'s model of --dataset (FashionMNIST: 2-layer fully connected; '
    'CIFAR-10: 6-layer CNN); small_cnn: a 3-block CNN of ours for FashionMNIST only '
    '(241,546 parameters, see learning/models.py), not in the paper; PATH.keras: '
    'your saved Keras 2 model (its weights start the run, its compiled loss and '
    'metrics are used); package.module:function: a function returning a new '
    'tf.keras.Model. Every layer tfmot can prune is pruned.')
_CLIENT_DATA = flags.DEFINE_string(
    'client_data', None,
    'Your federated data instead of --dataset: sqlite:PATH (TFF\'s SqlClientData '
    'layout: split train, and test where present) or tfrecord_dir:DIR (DIR/<client '
    'id>.tfrecord of tf.train.Examples, DIR/test/<client id>.tfrecord for tests) or '
    'tensor_dir:DIR. Written by tff-sparsify-data; shapes and dtypes from the spec '
    'it stores, else from the first record. Read by the local workers; with '
    '--workers, each worker serves its own (tff-sparsify-worker --client_data).')
_FEATURES = flags.DEFINE_string(
    'features', config_lib.DEFAULT_FEATURES,
    'With --client_data: x:NAME,y:NAME, the input and the label feature.')
flags.DEFINE_enum(
    'evaluation', None, list(config_lib.EVALUATIONS),
    'central: the global model on the test set (--dataset\'s, or the clients\' test '
    'splits of --client_data pooled); federated: TFF\'s build_fed_eval on each client\'s '
    'test examples, the weighted mean and the spread across clients (min, median, max); '
    'both. Default: central for --dataset, federated for --client_data with test '
    'examples.')
flags.DEFINE_float(
    'client_test_fraction', 0.0,
    'Hold out this fraction of each client\'s examples (spread through its data) as its '
    'test examples for federated evaluation; they are not trained on.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None,
    'Directory holding the four FashionMNIST IDX .gz files (default: '
    '/usr/share/datasets/fashion-mnist, else TFDS); for cifar10, the TFDS '
    'data directory.')
_PARTITION = flags.DEFINE_enum(
    'partition', 'non_iid', list(config_lib.PARTITIONS),
    'How the training examples are split over clients: iid (a seeded shuffle '
    'cut into equal shards), non_iid (--classes_per_client classes each, from a '
    'seeded class order), dirichlet (per class, Dir(--dirichlet_alpha) '
    'proportions) or shards (the FedSparsify authors\' split: examples sorted by '
    'label, cut into num_clients x classes_per_client equal chunks, each client '
    'taking chunks of classes it does not hold yet; no randomness).')
_CLASSES_PER_CLIENT = flags.DEFINE_integer(
    'classes_per_client', 2, 'Classes per client for --partition=non_iid and shards.')
_DIRICHLET_ALPHA = flags.DEFINE_float(
    'dirichlet_alpha', 0.5, 'Concentration for --partition=dirichlet.')
_NUM_CLIENTS = flags.DEFINE_integer(
    'num_clients', 10, 'Number of clients of --dataset (--client_data: the file\'s).')
_CLIENTS_PER_ROUND = flags.DEFINE_integer(
    'clients_per_round', 10, 'Clients sampled (uniformly) each round (not given, with '
    '--client_data: at most the file\'s clients).')
_TOTAL_ROUNDS = flags.DEFINE_integer('total_rounds', 200, 'Federated rounds.')
_CLIENT_EPOCHS = flags.DEFINE_integer(
    'client_epochs_per_round', 4, 'Local epochs per round.')
_CLIENT_BATCH_SIZE = flags.DEFINE_integer(
    'client_batch_size', 32, 'Local batch size.')
_CLIENT_LR = flags.DEFINE_float(
    'client_learning_rate', 0.02, 'Client SGD learning rate.')
_CLIENT_MOMENTUM = flags.DEFINE_float(
    'client_momentum', None,
    'Client SGD momentum; default 0 (fedavg, fedprox) or 0.75 '
    '(fedavg_momentum, the paper\'s MFL).')
_SERVER_LR = flags.DEFINE_float(
    'server_learning_rate', 1.0, 'Server SGD learning rate (1.0: FedAvg).')
_ALGORITHM = flags.DEFINE_enum(
    'algorithm', 'fedavg', list(registry.names()),
    'Federated algorithm: a no-pruning baseline, FedSparsify with pruning at '
    'the server (global) or at the clients merged by mask voting (local), '
    'progressive random pruning, one-shot pruning at --sparsify_start_round, '
    'SNIP or GraSP (a mask fixed before round 1, scored on one client drawn with '
    '--seed), or PruneFL (initial pruning on that client, readjusted every 50 rounds).')
_FINAL_SPARSITY = flags.DEFINE_float(
    'final_sparsity', 0.9, 'S_T: sparsity reached at --total_rounds (pruning '
    'algorithms).')
_INITIAL_SPARSITY = flags.DEFINE_float(
    'initial_sparsity', 0.0, 'S_0: sparsity at --sparsify_start_round.')
_SPARSIFY_START_ROUND = flags.DEFINE_integer(
    'sparsify_start_round', 1, 't_0: first round that prunes.')
_SPARSIFY_FREQUENCY = flags.DEFINE_integer(
    'sparsify_frequency', 1, 'F: prune every F rounds.')
_SPARSIFY_EXPONENT = flags.DEFINE_float(
    'sparsify_exponent', 3.0, 'n: exponent of the schedule (Eq. 1).')
_MASK_AGGREGATION = flags.DEFINE_enum(
    'mask_aggregation', 'majority_vote', list(configs.MASK_AGGREGATIONS),
    'How --algorithm=fedsparsify_local merges client masks: majority vote '
    '(Eq. 2) or plain average (keep what any client kept).')
_PROXIMAL_STRENGTH = flags.DEFINE_float(
    'proximal_strength', 0.001, 'FedProx mu, for --algorithm=fedprox.')
_SEED = flags.DEFINE_integer('seed', 1990, 'Seed of data split, model '
                             'initialization, sampling and shuffling.')
_ROOT_OUTPUT_DIR = flags.DEFINE_string(
    'root_output_dir', 'output', 'Root directory of all outputs.')
_EXPERIMENT_NAME = flags.DEFINE_string(
    'experiment_name', None, 'Name of this run\'s output subdirectories '
    '(default: {algorithm}_{dataset}_{partition}).')
_ROUNDS_PER_EVAL = flags.DEFINE_integer(
    'rounds_per_eval', 1, 'Evaluate on the test set every this many rounds.')
_ROUNDS_PER_CHECKPOINT = flags.DEFINE_integer(
    'rounds_per_checkpoint', 1, 'Save program state every this many rounds.')
_PROGRESS = flags.DEFINE_bool('progress', True, 'Show a progress bar.')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Start the experiment afresh: remove its checkpoints, '
    'results and logs first. Without it, a command whose flags differ from the '
    'ones the experiment was started with is refused.')


flags.DEFINE_integer(
    'readjust_every', configs.PRUNEFL_READJUST_EVERY,
    '--algorithm=prunefl: rounds between readjustments of the mask (the paper\'s 50).')
flags.DEFINE_float(
    'readjust_ratio', configs.PRUNEFL_READJUST_RATIO,
    '--algorithm=prunefl: s of the readjustment ratio s x 0.5^(t / H), the fraction of '
    'kept weights swapped at round t (the paper\'s 0.3).')
flags.DEFINE_integer(
    'readjust_halving_rounds', configs.PRUNEFL_READJUST_HALVING_ROUNDS,
    '--algorithm=prunefl: H of the readjustment ratio (the paper\'s 1000).')
flags.DEFINE_integer(
    'initial_reconfigurations', configs.PRUNEFL_INITIAL_RECONFIGURATIONS,
    '--algorithm=prunefl: reconfigurations of the initial pruning on one client (the '
    'paper\'s 5).')

_CLIENT_MESSAGE_PRUNE_RATE = flags.DEFINE_float(
    'client_message_prune_rate', 0.0,
    'Message compression of arXiv 2310.14693: fraction of the uploaded '
    'weights (smallest by magnitude) the clients zero before sending, in '
    '[0, 1). For fedavg, fedavg_momentum and the pruning algorithms.')
_SERVER_MESSAGE_PRUNE_RATE = flags.DEFINE_float(
    'server_message_prune_rate', 0.0,
    'The same for the model the server broadcasts.')
_SPARSITY_PLACEMENT = flags.DEFINE_enum(
    'sparsity_placement', 'global', list(configs.SPARSITY_PLACEMENTS),
    'Pruning algorithms: global (one magnitude ranking over all kernels, the '
    'paper\'s), uniform (every kernel pruned to s_t by its own ranking: '
    'equally sparse layers, which DeepSparse runs faster) or compute (per-layer '
    'sparsities that minimise the multiply-adds at total s_t: the layers that '
    'cost most per weight, early convolutions, pruned hardest). Not with '
    'random_pruning.')
_SPARSITY_GRANULARITY = flags.DEFINE_enum(
    'sparsity_granularity', 'weight', list(configs.SPARSITY_GRANULARITIES),
    'Pruning algorithms (magnitude pruning): weight (the paper\'s) or channel '
    '(whole output channels of convolutions and units of dense layers, by '
    'L2 norm, the output layer excepted; with their biases and '
    'BatchNormalization: the model can then be exported physically smaller, '
    'binaries/export --compact). Placement global or uniform.')
_CHANNEL_MULTIPLE = flags.DEFINE_integer(
    'channel_multiple', 1,
    'With --sparsity_granularity=channel (global mode): the channels each layer '
    'keeps are rounded to the nearest multiple of this (1: exact counts; 16 '
    'suits ONNX Runtime and TFLite on AVX-512), since CPU runtimes run '
    'channel counts in blocks.')
_QUANTIZE_BITS = flags.DEFINE_integer(
    'quantize_bits', 0,
    'If not 0, uniform quantization at this many bits, in [1, 16], of the '
    'tensors over --quantize_threshold elements, by --quantizer (default: the uploaded '
    'model deltas, aggregated with tff.aggregators.EncodedSumFactory.'
    'quantize_above_threshold), stackable with the message prune rates. Not with fedprox.')
_QUANTIZE_THRESHOLD = flags.DEFINE_integer(
    'quantize_threshold', config_lib.QUANTIZATION_THRESHOLD,
    'With --quantize_bits: tensors with more elements than this are quantized '
    '(TFF\'s default; smaller kernels and the biases stay lossless).')
_QUANTIZER = flags.DEFINE_enum(
    'quantizer', 'tff', list(configs.QUANTIZERS),
    'With --quantize_bits: tff (TFF\'s quantizing aggregator, the uploads '
    'only, every element, zeros included) or sparse (this package\'s: the '
    'non-zero values only, of the uploads and of the broadcast; the server '
    'keeps its full-precision model).')
flags.DEFINE_enum(
    'message_prune_target', 'model', list(configs.MESSAGE_PRUNE_TARGETS),
    'What --client_message_prune_rate prunes: model (arXiv 2310.14693: the '
    'smallest weights of the trained model, in the client work) or delta (the '
    'smallest entries of the update, top-k, in a TFF aggregation factory that '
    'also quantizes with --quantizer=sparse and counts the upload\'s bytes).')

_NUM_LOCAL_WORKERS = flags.DEFINE_integer(
    'num_local_workers', 1,
    'TFF workers this run starts on this machine; with more than one, the '
    'sampled clients of each round are split across them (TFF\'s '
    'mergeable-comp runtime). Each runs in its own network namespace, '
    'reached only by this process over a Unix socket.')
_WORKERS = flags.DEFINE_list(
    'workers', [],
    'HOST:PORT,... of remote workers (tff-sparsify-worker on each host), '
    'reached over mutual TLS with --worker_credentials; instead of local '
    'workers.')
_WORKER_CREDENTIALS = flags.DEFINE_string(
    'worker_credentials', None,
    'With --workers: directory holding ca.pem, coordinator.pem and '
    'coordinator.key (tff-sparsify-worker --make_credentials=DIR).')
_WORKER_TIMEOUT = flags.DEFINE_float(
    'worker_timeout_seconds', config_lib.DEFAULT_WORKER_TIMEOUT_SECONDS,
    'A worker that has died or not answered for this long is lost: a local '
    'one is restarted and its round run again (at most '
    '--max_worker_restarts times), a remote one ends the run (resume with '
    'the same command).')
_MAX_WORKER_RESTARTS = flags.DEFINE_integer(
    'max_worker_restarts', 3, 'Restarts of lost local workers in one run.',
    lower_bound=0)
_ALLOW_UNISOLATED = flags.DEFINE_bool(
    'allow_unisolated_workers', False,
    'Where no private network namespace can be made, run local workers '
    'anyway, bound to loopback only (a preloaded bind, built with cc): '
    'other local users of this machine can then reach them.')


def _execution_config() -> config_lib.ExecutionConfig:
  values = {name: flags.FLAGS[name].value
            for name in config_lib.execution_field_names()}
  values['workers'] = tuple(values['workers'])
  return flag_utils.config_from_flags(config_lib.ExecutionConfig, **values)


def _config() -> config_lib.TrainConfig:
  """The run's configuration from the flags; a bad value fails naming its flag."""
  values = {name: flags.FLAGS[name].value for name in config_lib.field_names()}
  config = flag_utils.config_from_flags(config_lib.TrainConfig, **values)
  if config.data_dir is not None and not os.path.isdir(config.data_dir):
    flag_utils.fail(_DATA_DIR, 'is not a directory')
  return config


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  config = _config()
  execution_config = _execution_config()
  signals.handle_termination_signals()
  logging.set_verbosity(logging.WARNING)
  silos = bool(execution_config.workers)
  if silos and config.client_data is not None:
    flag_utils.fail(_CLIENT_DATA, 'with --workers each worker serves its own client data '
                    '(tff-sparsify-worker --client_data=KIND:PATH); the coordinator holds none')
  if silos and registry.get(config.algorithm).scores_at_init:
    flag_utils.fail(_ALGORITHM, 'scores the initial model on a client\'s batch at the '
                    'coordinator, which has no client data with --workers (silos): run it '
                    'on local workers')
  centralized = shards = None
  try:  # FashionMNIST's IDX files are read with NumPy: errors come before TF loads.
    if silos:  # Only the test split, for central evaluation.
      if config.evaluation in ('central', 'both'):
        centralized = data_sources.load_centralized(config.dataset, config.data_dir)
    elif config.client_data is None:
      centralized = data_sources.load_centralized(config.dataset, config.data_dir)
      shards = data_sources.partition(
          centralized.train_labels, partition_type=config.partition,
          num_clients=config.num_clients, seed=config.seed,
          classes_per_client=config.classes_per_client,
          dirichlet_alpha=config.dirichlet_alpha)
    else:
      config = _check_client_data(config)
  except data_sources.DataError as e:
    flag_utils.fail_with(f'{flag_utils.program_name()}: error: {e}')
  except sources.SourceError as e:
    flag_utils.fail(_CLIENT_DATA, str(e))
  try:
    model_sources.check(config.model)
  except model_sources.ModelError as e:
    flag_utils.fail(_MODEL, str(e))
  try:  # The output tree, before TF loads; checked again when written.
    run_record.precheck(config, overwrite=_OVERWRITE.value)
  except (run_record.RunLockedError, run_record.RunMismatchError, OSError) as e:
    flag_utils.fail_with(f'{flag_utils.program_name()}: error: {e}')
  inputs = _prepare_inputs(config, centralized, shards, silos)
  try:  # Before the first write: two copies of one run cannot both write it.
    run_record.lock(config.root_output_dir, config.experiment)
  except (run_record.RunLockedError, OSError) as e:
    flag_utils.fail_with(f'{flag_utils.program_name()}: error: {e}')
  try:  # Before anything is written: a run resumes only as itself.
    dirs = run_record.prepare(config, overwrite=_OVERWRITE.value)
  except run_record.RunMismatchError as e:
    flag_utils.fail_with(f'{flag_utils.program_name()}: error: {e}')
  train(config, dirs, inputs, execution_config,
        builtin=None if shards is None else (centralized, shards))


def _check_client_data(config):
  """What can be checked of `--client_data` before TensorFlow loads; the config, clients capped."""
  sources.check(config.client_data)
  try:
    sources.check_features(config.client_data, config.feature_names)
  except spec.SpecError as e:
    flag_utils.fail(_FEATURES, str(e))
  clients = sources.num_clients(config.client_data)
  if not _CLIENTS_PER_ROUND.present:  # At most the file's clients.
    return dataclasses.replace(config, clients_per_round=min(config.clients_per_round, clients))
  if config.clients_per_round > clients:
    flag_utils.fail(_CLIENTS_PER_ROUND, f'must be at most the {clients} clients of '
                    f'--client_data={config.client_data}')
  return config


def _prepare_inputs(config, centralized, shards, silos=False):
  """The run's data and model, checked against each other (TensorFlow loads here)."""
  # pylint: disable=g-import-not-at-top
  from tff_sparsify.simulation import data
  from tff_sparsify.simulation import execution
  from tff_sparsify.simulation import run_inputs
  # pylint: enable=g-import-not-at-top
  execution.drop_import_time_default_context()
  try:
    if silos:
      inputs = run_inputs.prepare_silos(
          config, None if centralized is None else data.builtin_run_data(centralized, None))
    else:
      builtin = None if centralized is None else data.builtin_run_data(centralized, shards)
      inputs = run_inputs.prepare(config, builtin)
  except config_lib.ConfigError as e:
    flag_utils.fail(flags.FLAGS[e.field], e.reason)
  if inputs.model.note:
    print(f'{flag_utils.program_name()}: --model={config.model}: {inputs.model.note}',
          file=sys.stderr, flush=True)
  return inputs


def train(config: config_lib.TrainConfig, dirs: run_record.OutputDirs, inputs,
          execution_config: config_lib.ExecutionConfig = config_lib.ExecutionConfig(),
          builtin=None):
  """Builds the process and runs it on `inputs` (`run_inputs.RunInputs`).

  The workers build the clients' datasets from client ids
  (`simulation.client_ids`): local workers read `--client_data` or the
  built-in clients (`builtin`: (centralized data, shards)), written once to
  a private directory; remote workers (silos) read their own.
  """
  # pylint: disable=g-import-not-at-top
  import contextlib
  import tempfile
  import tensorflow as tf
  from tff_sparsify.simulation import client_ids
  from tff_sparsify.simulation import execution
  from tff_sparsify.simulation import run_inputs
  from tff_sparsify.simulation import silo
  from tff_sparsify.simulation import training
  # pylint: enable=g-import-not-at-top
  tf.keras.utils.set_random_seed(config.seed)
  run_data, source = inputs.data, inputs.model
  silos = bool(execution_config.workers)
  process, keras_model_fn = registry.build_from_config(
      config, run_data.train, model_source=source, element_fn=run_data.element_fn)
  # After the process is traced: TFF's stochastic quantization
  # (--quantize_bits) has unseeded random ops, which TF refuses to trace
  # under op determinism. The process runs in TFF's worker, which this
  # setting does not reach; it makes the in-process Keras evaluation exact.
  tf.config.experimental.enable_op_determinism()
  try:
    with contextlib.ExitStack() as stack:
      served, features = config.client_data, config.feature_names
      if builtin is not None:
        centralized, shards = builtin
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix='tff_sparsify_'))
        served = client_ids.write_builtin(shards, centralized.train_images,
                                          centralized.train_labels,
                                          os.path.join(directory, 'clients'))
        features = dict(x='x', y='y')
      # A worker's reply: at most the manifest's cap plus 16 models' bytes.
      model_bytes = execution.type_bytes(process.get_model_weights.type_signature.result)
      context = stack.enter_context(execution.worker_pool_context(
          max_reply_bytes=silo.MAX_MANIFEST_BYTES + 16 * model_bytes + (1 << 20),
          num_local_workers=execution_config.num_local_workers,
          workers=execution_config.workers,
          credentials_dir=execution_config.worker_credentials,
          log_dir=dirs.logdir,
          worker_timeout=execution_config.worker_timeout_seconds,
          max_restarts=execution_config.max_worker_restarts,
          allow_unisolated_workers=execution_config.allow_unisolated_workers,
          client_data=None if silos else served))
      federation = client_ids.discover(context, shared=not silos)
      element_fn = run_data.element_fn
      if silos:
        try:
          inputs, element_fn = run_inputs.check_silos(config, inputs, federation)
        except config_lib.ConfigError as e:
          flag_utils.fail(flags.FLAGS[e.field], e.reason)
        _check_federation(dirs, federation)
      result = _train_by_id(config, dirs, inputs, process, keras_model_fn, federation,
                            context, features, element_fn)
  except training.NoCheckpointError as e:
    flag_utils.fail_with(f'{flag_utils.program_name()}: error: {e}', code=1)
  except (execution.WorkerStartError, execution.AggregationSplitError,
          execution.WorkerReplyError, client_ids.FederationError) as e:
    flag_utils.fail_with(f'{flag_utils.program_name()}: error: {e}', code=1)
  except execution.WorkerLostError as e:
    flag_utils.fail_with(
        f'{flag_utils.program_name()}: error: {e}; run the same command to resume '
        'from the last checkpoint', code=1)
  except training.OutputWriteError as e:
    flag_utils.fail_with(
        f'{flag_utils.program_name()}: error: {e}; the earlier checkpoints are '
        'intact: fix the cause and run the same command to resume', code=1)
  m = result.final_metrics
  sparsity = f', sparsity {m["sparsity"]:.4f}' if 'sparsity' in m else ''
  evaluated = ''.join(f', {name.replace("_", " ")} {value:.4f}' for name, value in m.items()
                      if name in ('test_loss', 'test_accuracy', 'federated_test_accuracy',
                                  'federated_test_accuracy_min'))
  print(
      f'done: {config.experiment}: {m["total_rounds"]} rounds{evaluated}{sparsity}, '
      f'{m["nonzero_params"]} non-zero parameters; outputs in '
      f'{result.dirs.results}, {result.dirs.checkpoints}, {result.dirs.logdir}',
      flush=True,
  )


FEDERATION_FILE = 'federation.json'


def _check_federation(dirs, federation):
  """Records which worker holds which clients; a resumed run must find the same."""
  import json  # pylint: disable=g-import-not-at-top
  from tff_sparsify import files  # pylint: disable=g-import-not-at-top
  path = os.path.join(dirs.results, FEDERATION_FILE)
  described = federation.describe()
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    for worker, (was, now) in enumerate(zip(saved['workers'], described)):
      if was != now:
        flag_utils.fail_with(
            f'{flag_utils.program_name()}: error: worker {now["worker"]} (worker {worker} of '
            f'--workers) serves other clients than when this run started '
            f'({was["worker"]}); a run resumes only with the same silos: see {path}', code=1)
    if len(saved['workers']) != len(described) or saved['fingerprint'] != federation.fingerprint():
      flag_utils.fail_with(
          f'{flag_utils.program_name()}: error: the workers\' data differ from when this run '
          f'started (element spec or example counts); see {path}', code=1)
    return
  files.atomic_write_text(path, json.dumps(
      dict(fingerprint=federation.fingerprint(), workers=described), indent=1) + '\n')


def _train_by_id(config, dirs, inputs, process, keras_model_fn, federation, context, features,
                 element_fn):
  """Runs the rounds with the workers building the clients' datasets from ids."""
  # pylint: disable=g-import-not-at-top
  from tff_sparsify.learning import models
  from tff_sparsify.simulation import client_ids
  from tff_sparsify.simulation import data
  from tff_sparsify.simulation import evaluation
  from tff_sparsify.simulation import training
  # pylint: enable=g-import-not-at-top
  source = inputs.model
  fraction = config.client_test_fraction

  def train_preprocess(dataset, seed):
    return data.preprocess_client_dataset(
        dataset, batch_size=config.client_batch_size, epochs=config.client_epochs_per_round,
        seed=seed, element_fn=element_fn)

  train_computation = client_ids.build_dataset_computation(
      federation, features, train_preprocess, held_out_fraction=fraction, held_out=False,
      graph_seed=config.seed)
  federated_evaluation_fn = None
  if inputs.federated:
    split = sources.TRAIN if fraction > 0 else sources.TEST
    test_computation = client_ids.build_dataset_computation(
        federation, features, lambda dataset, seed: dataset.batch(256).map(element_fn),
        held_out_fraction=fraction, held_out=True)
    federated_evaluation_fn = evaluation.build_federated_evaluation_fn_by_id(
        models.model_fn_from(keras_model_fn, source.loss_fn, source.metrics_fn), federation,
        context, test_computation, split=split)
  return training.run_federated_training(
      process, None, config,
      # Built after the process: see BUILD_NOTES (Keras models built
      # before TFF traces model_fn cannot train afterwards).
      keras_model=keras_model_fn(),
      test_data=inputs.data.test_batches() if inputs.central else None,
      loss=source.loss_fn(), metrics=source.metrics_fn(),
      federated_evaluation_fn=federated_evaluation_fn,
      by_id=(federation, context, train_computation))


def run():
  flag_utils.run_main(main)


if __name__ == '__main__':
  run()
