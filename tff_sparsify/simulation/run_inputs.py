"""A run's data and model, opened and checked against each other before training.

Everything a user can get wrong about their own data and model is found here,
before anything is written: a data file TFF cannot read or without the named
features, a model that does not load or does not take the data's input,
labels outside the model's outputs, a pruning algorithm on a model with
nothing tfmot prunes. Each is one `validation.ConfigError` naming the flag
(`client_data`, `features`, `model`, `algorithm`), which the binary prints
as one line.
"""

import dataclasses
from typing import Callable, Optional

import tensorflow as tf

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import validation
from tff_sparsify.learning import model_sources
from tff_sparsify.learning import models
from tff_sparsify.learning import pruning
from tff_sparsify.simulation import run_data as data_lib
from tff_sparsify.simulation import evaluation as evaluation_lib
from tff_sparsify.simulation import sources
from tff_sparsify.simulation.sources import spec as spec_lib

ConfigError = validation.ConfigError


@dataclasses.dataclass(frozen=True)
class RunInputs:
  """The checked data and model, and how the run evaluates ('central', 'federated', 'both', None)."""
  data: data_lib.RunData
  model: model_sources.ModelSource
  evaluation: Optional[str] = None

  @property
  def central(self) -> bool:
    return self.evaluation in ('central', 'both')

  @property
  def federated(self) -> bool:
    return self.evaluation in ('federated', 'both')


def resolve_evaluation(config, data: data_lib.RunData) -> tuple[data_lib.RunData, Optional[str]]:
  """(data with the clients' test examples held out if asked, the evaluation mode).

  Default: central where the data has a central test split (the built-in
  datasets), else federated where the clients have test examples, else none.
  """
  if config.client_test_fraction > 0:
    train, client_test = evaluation_lib.held_out_split(data.train, config.client_test_fraction)
    data = dataclasses.replace(data, train=train, client_test=client_test)
  builtin = config.client_data is None
  mode = config.evaluation
  if mode is None:
    mode = ('central' if builtin else 'federated' if data.client_test is not None else None)
  if mode in ('federated', 'both') and data.client_test is None:
    raise ConfigError('evaluation', mode, 'needs test examples at the clients: a test split '
                      'in --client_data, or --client_test_fraction > 0')
  if mode in ('central', 'both') and data.test is None:
    raise ConfigError('evaluation', mode, 'needs a test split: --client_data has none '
                      '(its clients\' test splits, pooled, are the central test set)')
  return data, mode


def _first_line(error: BaseException) -> str:
  text = error.message if isinstance(error, tf.errors.OpError) else str(error)
  return (text.strip().splitlines() or [type(error).__name__])[0][:300]


def open_client_data(config, x_dtype) -> data_lib.RunData:
  """The `--client_data` file's splits as `RunData`; ConfigError naming the flag."""
  kind, path = sources.parse(config.client_data)
  try:
    splits = sources.module(kind).open_splits(path, config.feature_names)
  except spec_lib.SpecError as e:
    field = 'features' if '--features' in str(e) else 'client_data'
    raise ConfigError(field, getattr(config, field), str(e)) from None
  except (sources.SourceError, tf.errors.OpError, OSError) as e:
    raise ConfigError('client_data', config.client_data, _first_line(e)) from None
  return data_lib.file_run_data(splits, x_dtype, source=config.client_data)


def _labels_max(data: data_lib.RunData) -> int:
  """The largest label of the training clients and the test set."""
  if data.labels_max is not None:  # Known from NumPy arrays: no pass over tf.data.
    return data.labels_max
  # One pass over all clients (TFF's `create_tf_dataset_from_all_clients`:
  # the ids are a dataset, flat-mapped), not a dataset per client from
  # Python (`benchmarks/label_scan.py`).
  def labels(dataset):
    return dataset.map(lambda e: tf.reshape(tf.cast(e['y'], tf.int64), [-1]))

  found = labels(data.train.create_tf_dataset_from_all_clients())
  if data.test is not None:
    found = found.concatenate(labels(data.test))
  return int(found.unbatch().reduce(tf.constant(-1, tf.int64), tf.maximum))


def check_privacy(config, keras_model):
  """With differential privacy, a model whose non-trainable variables the clients would send
  outside the noise (BatchNormalization's moving statistics) refused; ConfigError."""
  privacy = config.algorithm_config.privacy
  moving = [v.name for v in keras_model.non_trainable_variables if v.dtype.is_floating]
  if privacy.active and moving:
    raise ConfigError(
        *privacy.flag,
        f'is not available for a model with moving statistics (BatchNormalization; here '
        f"{moving[0]}): the clients' statistics are averaged outside the noise and the "
        'secure sum; LayerNormalization has none')


def check_fit(config, data: data_lib.RunData, keras_model):
  """`keras_model` takes the data's input and has an output per label; ConfigError if not."""
  if config.clients_per_round > len(data.train.client_ids):
    raise ConfigError('clients_per_round', config.clients_per_round,
                      f'must be at most the {len(data.train.client_ids)} clients of '
                      f'--client_data={config.client_data}')
  first = data.train.create_tf_dataset_for_client(data.train.client_ids[0])
  try:
    batch = next(iter(first.batch(2).map(data.element_fn)), None)
  except (tf.errors.OpError, ValueError, TypeError) as e:
    raise ConfigError('client_data', config.client_data, _first_line(e)) from None
  if batch is None:
    raise ConfigError('client_data', config.client_data,
                      f'client {data.train.client_ids[0]} has no examples')
  try:
    outputs = keras_model(batch['x'], training=False)
  except Exception as e:  # pylint: disable=broad-except  (Keras raises many kinds)
    raise ConfigError('model', config.model, f'does not take the data\'s input '
                      f'{batch["x"].dtype.name}{list(batch["x"].shape[1:])}: '
                      f'{_first_line(e)}') from None
  units = int(outputs.shape[-1]) if outputs.shape.rank == 2 else None
  if units is None:
    raise ConfigError('model', config.model, f'outputs shape {list(outputs.shape)}; one vector '
                      'of class scores per example is expected')
  if config.prunes and not pruning.prunable_weights(models.wrap_if(keras_model, True)):
    raise ConfigError('algorithm', config.algorithm,
                      'prunes, but the model has no layer tfmot can prune '
                      '(tfmot\'s prune registry: Dense, Conv, Embedding, LSTM, GRU, ...)')
  try:
    largest = _labels_max(data)
  except tf.errors.OpError as e:
    raise ConfigError('client_data', config.client_data, _first_line(e)) from None
  if largest >= units:
    field = 'client_data' if config.client_data else 'model'
    raise ConfigError(field, getattr(config, field),
                      f'has label {largest} but the model has {units} outputs (labels must '
                      f'be in [0, {units}))')


def prepare(config, builtin: Optional[data_lib.RunData] = None) -> RunInputs:
  """The run's checked data and model (`builtin`: the built-in dataset's, already loaded)."""
  try:
    source = model_sources.load(config.model, config.dataset)
  except model_sources.ModelError as e:
    raise ConfigError('model', config.model, str(e)) from None
  keras_model = source.keras_model_fn(config.seed)  # One probe for every check.
  try:
    x_dtype = model_sources.input_spec(keras_model)['x'].dtype
  except model_sources.ModelError as e:
    raise ConfigError('model', config.model, str(e)) from None
  check_privacy(config, keras_model)
  data = builtin if builtin is not None else open_client_data(config, x_dtype)
  data, evaluation = resolve_evaluation(config, data)
  check_fit(config, data, keras_model)
  return RunInputs(data=data, model=source, evaluation=evaluation)



def prepare_silos(config, builtin: Optional[data_lib.RunData] = None) -> RunInputs:
  """The model, and the built-in test split for central evaluation, of a run on silos.

  The coordinator holds no client data (each worker serves its own); what
  can be checked of the data comes with the workers' manifests
  (`check_silos`). `builtin`: the `--dataset` whose test split is the
  central test set, if central evaluation is asked for.
  """
  try:
    source = model_sources.load(config.model, config.dataset)
  except model_sources.ModelError as e:
    raise ConfigError('model', config.model, str(e)) from None
  if config.algorithm_config.privacy.active:
    check_privacy(config, source.keras_model_fn(config.seed))
  test = builtin.test if builtin is not None else None
  element_fn = builtin.element_fn if builtin is not None else data_lib.normalize
  data = data_lib.RunData(train=None, test=test, element_fn=element_fn, source='silos')
  return RunInputs(data=data, model=source, evaluation=config.evaluation)


def check_silos(config, inputs: RunInputs, federation) -> tuple[RunInputs, Callable]:
  """(inputs with the evaluation resolved, the clients' element function); ConfigError if not.

  Checked against the workers' manifests: the features exist, the model
  takes the inputs' shape and dtype, `--clients_per_round` is at most the
  federation's clients, the evaluation has its test examples. Labels are
  not checked here (the coordinator sees none): a label outside the
  model's outputs fails at the worker.
  """
  try:
    selected = spec_lib.select(federation.element_spec, config.feature_names,
                               'the workers\' data')
  except spec_lib.SpecError as e:
    raise ConfigError('features', config.features, str(e)) from None
  keras_model = inputs.model.keras_model_fn(config.seed)
  try:
    x_dtype = model_sources.input_spec(keras_model)['x'].dtype
  except model_sources.ModelError as e:
    raise ConfigError('model', config.model, str(e)) from None
  x = tf.zeros([2] + selected['x']['shape'], x_dtype)
  try:
    keras_model(x, training=False)
  except Exception as e:  # pylint: disable=broad-except  (Keras raises many kinds)
    raise ConfigError('model', config.model, f'does not take the workers\' input '
                      f'{selected["x"]["dtype"]}{selected["x"]["shape"]}: '
                      f'{_first_line(e)}') from None
  clients = len(federation.clients())
  if config.clients_per_round > clients:
    raise ConfigError('clients_per_round', config.clients_per_round,
                      f'must be at most the {clients} clients of the workers')
  mode = config.evaluation
  has_client_test = config.client_test_fraction > 0 or federation.has_split(sources.TEST)
  if mode is None:
    mode = 'federated' if has_client_test else 'central' if inputs.data.test is not None else None
  if mode in ('federated', 'both') and not has_client_test:
    raise ConfigError('evaluation', mode, 'needs test examples at the clients: a test split '
                      'at the workers, or --client_test_fraction > 0')
  if mode in ('central', 'both') and inputs.data.test is None:
    raise ConfigError('evaluation', mode, 'needs the --dataset test split at the coordinator')
  return dataclasses.replace(inputs, evaluation=mode), data_lib.cast_to(x_dtype)
