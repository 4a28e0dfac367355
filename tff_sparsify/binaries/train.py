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
from tff_sparsify.learning import model_sources
from tff_sparsify.learning import registry
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import sources
from tff_sparsify.simulation.sources import spec
from tff_sparsify.simulation import run_record

# TensorFlow and TFF are imported in `train`, after the flags are checked: a
# bad flag is refused in well under a second instead of after 15 s of imports.

# One flag per field of the run's configurations: name, default, help and
# allowed values are declared once, in the field (`validation.option`).
flag_utils.define_flags(config_lib.TrainConfig, module_name=__name__)
flag_utils.define_flags(config_lib.ExecutionConfig, module_name=__name__)

_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Start the experiment afresh: remove its checkpoints, '
    'results and logs first. Without it, a command whose flags differ from the '
    'ones the experiment was started with is refused.')


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
    flag_utils.fail_flag('data_dir', 'is not a directory')
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
    flag_utils.fail_flag('client_data', 'with --workers each worker serves its own client '
                         'data (tff-sparsify-worker --client_data=KIND:PATH); the coordinator '
                         'holds none')
  if silos and registry.get(config.algorithm).scores_at_init:
    flag_utils.fail_flag('algorithm', 'scores the initial model on a client\'s batch at the '
                         'coordinator, which has no client data with --workers (silos): run '
                         'it on local workers')
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
    flag_utils.fail_flag('client_data', str(e))
  try:
    model_sources.check(config.model)
  except model_sources.ModelError as e:
    flag_utils.fail_flag('model', str(e))
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
    flag_utils.fail_flag('features', str(e))
  clients = sources.num_clients(config.client_data)
  if not flags.FLAGS['clients_per_round'].present:  # At most the file's clients.
    return dataclasses.replace(config, clients_per_round=min(config.clients_per_round, clients))
  if config.clients_per_round > clients:
    flag_utils.fail_flag('clients_per_round', f'must be at most the {clients} clients of '
                         f'--client_data={config.client_data}')
  return config


def _prepare_inputs(config, centralized, shards, silos=False):
  """The run's data and model, checked against each other (TensorFlow loads here)."""
  # pylint: disable=g-import-not-at-top
  from tff_sparsify.simulation import run_data as data
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
      served, features = _served_data(stack, config, builtin)
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
  except (training.NoCheckpointError, execution.WorkerStartError,
          execution.AggregationSplitError, execution.WorkerReplyError,
          client_ids.FederationError, execution.WorkerLostError,
          training.OutputWriteError) as e:
    then = ('; run the same command to resume from the last checkpoint'
            if isinstance(e, execution.WorkerLostError) else
            '; the earlier checkpoints are intact: fix the cause and run the same command '
            'to resume' if isinstance(e, training.OutputWriteError) else '')
    flag_utils.fail_with(f'{flag_utils.program_name()}: error: {e}{then}', code=1)
  _print_done(config, result)


def _served_data(stack, config, builtin):
  """(the `--client_data` the local workers serve, its features): the built-in clients
  (`builtin`: (centralized data, shards)) are written once to a private directory."""
  # pylint: disable=g-import-not-at-top
  import tempfile
  from tff_sparsify.simulation import client_ids
  # pylint: enable=g-import-not-at-top
  if builtin is None:
    return config.client_data, config.feature_names
  centralized, shards = builtin
  directory = stack.enter_context(tempfile.TemporaryDirectory(prefix='tff_sparsify_'))
  served = client_ids.write_builtin(shards, centralized.train_images, centralized.train_labels,
                                    os.path.join(directory, 'clients'))
  return served, dict(x='x', y='y')


def _print_done(config, result):
  """The run's one closing line: rounds, evaluation, sparsity, where the outputs are."""
  m = result.final_metrics
  sparsity = f', sparsity {m["sparsity"]:.4f}' if 'sparsity' in m else ''
  if 'dp_delta' in m:  # Differential privacy: the guarantee (none without noise).
    sparsity += (f', ({m["dp_epsilon"]:.3g}, {m["dp_delta"]:.3g})-DP' if m['dp_epsilon'] is not None
                 else ', clipped without noise: no DP guarantee')
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
  from tff_sparsify.simulation import run_data as data
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
