"""What the export binary reads of a training run: its checkpointed model, its configuration, its data.

A checkpoint is TFF program state: the run's `results/{experiment}/config.json`
rebuilds its learning process (`learning.registry`), whose model weights are
then assigned to a Keras model. Kept out of `deploy`, which takes a Keras
model and knows no training process.
"""

import asyncio
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from tff_sparsify import config as config_lib


class RunReadError(ValueError):
  """A run's checkpoint, configuration or data that cannot be read; `str` says which and why."""


_STATE_PREFIX = 'program_state_'


def split_checkpoint_path(path: str) -> tuple[str, Optional[int]]:
  """(`{root}/checkpoints/{experiment}`, N or None) of a checkpoint path.

  Raises:
    RunReadError: if `path` is not `{root}/checkpoints/{experiment}` or
      `{root}/checkpoints/{experiment}/program_state_N`.
  """
  path = os.path.normpath(path)
  name = os.path.basename(path)
  experiment_dir, version = path, None
  if name.startswith(_STATE_PREFIX):
    experiment_dir = os.path.dirname(path)
    try:
      version = int(name[len(_STATE_PREFIX):])
    except ValueError:
      raise RunReadError(f'{path!r} is not a program_state_N directory') from None
  if os.path.basename(os.path.dirname(experiment_dir)) != 'checkpoints':
    raise RunReadError(f'{path!r} is not a checkpoint of a training run '
                      '({root_output_dir}/checkpoints/{experiment}[/program_state_N])')
  return experiment_dir, version


def run_results_dir(experiment_dir: str) -> str:
  """`{root}/results/{experiment}` of `{root}/checkpoints/{experiment}`."""
  root = os.path.dirname(os.path.dirname(experiment_dir))
  return os.path.join(root, 'results', os.path.basename(experiment_dir))


def load_checkpoint_model(path: str) -> tf.keras.Model:
  """The global model of a training checkpoint, as a Keras model.

  Args:
    path: `{root_output_dir}/checkpoints/{experiment}/program_state_N`, or
      `{root_output_dir}/checkpoints/{experiment}` for its latest version.
      The run's `results/{experiment}/config.json` rebuilds the process.

  Raises:
    RunReadError: naming the path, if it is not such a checkpoint or cannot be
      read.
  """
  from tensorflow_federated import program as tff_program  # pylint: disable=g-import-not-at-top
  from tff_sparsify.learning import registry  # pylint: disable=g-import-not-at-top
  from tff_sparsify.simulation import execution  # pylint: disable=g-import-not-at-top

  path = os.path.normpath(path)
  experiment_dir, version = split_checkpoint_path(path)
  if not os.path.isdir(path):
    raise RunReadError(f'{path!r} is not a checkpoint of a training run '
                      '({root_output_dir}/checkpoints/{experiment}[/program_state_N])')
  config = load_run_config(run_results_dir(experiment_dir))
  manager = tff_program.FileProgramStateManager(experiment_dir)
  # Not asyncio.run: it leaves no current event loop behind, and TFF's
  # training loop (`asyncio.get_event_loop()`) then fails in this thread.
  loop = asyncio.new_event_loop()
  try:
    if version is None:  # Before the process is built: no checkpoint, one line.
      versions = loop.run_until_complete(manager.get_versions())
      if not versions:
        raise RunReadError(f'no program_state_N in {path!r}: the run has not checkpointed')
      version = max(versions)
    process, keras_model_fn = registry.build_from_config(config, structure_only=True)
    with execution.local_cpp_execution_context():
      structure = process.initialize()
      state = loop.run_until_complete(manager.load(version, structure))
      weights = process.get_model_weights(state)
  except RunReadError:
    raise
  except Exception as e:  # TFF and TF raise many types for a corrupt state.
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise RunReadError(f'cannot load checkpoint {path!r}: {first_line}') from e
  finally:
    loop.close()
  model = keras_model_fn()
  weights.assign_weights_to(model)
  return model


def load_run_config(results_dir: str) -> config_lib.TrainConfig:
  """The `TrainConfig` a run saved in `{results_dir}/config.json`; RunReadError if none."""
  path = os.path.join(results_dir, 'config.json')
  try:
    return config_lib.TrainConfig.from_dict(config_lib.load_dict(path))
  except config_lib.ConfigError as e:
    raise RunReadError(f'cannot use the run configuration {path!r}: {e}') from e


def run_data(config: config_lib.TrainConfig, calibration_examples: int):
  """(calibration inputs, (test images, test labels)) of a run's dataset, float32 in [0, 1].

  The calibration inputs are `calibration_examples` training
  examples drawn without replacement with the run's seed; the test set is the
  whole split.

  Raises:
    RunReadError: if the dataset cannot be loaded (the message says why).
  """
  if config.client_data is not None:
    return _client_data_arrays(config, calibration_examples)
  from tff_sparsify.simulation import data_sources  # pylint: disable=g-import-not-at-top
  try:
    centralized = data_sources.load_centralized(config.dataset, config.data_dir)
  except Exception as e:  # pylint: disable=broad-except  (DataError, TFDS errors)
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise RunReadError(f'cannot load {config.dataset} for INT8 calibration: {first_line}') from e
  train = centralized.train_images
  picked = np.random.default_rng(config.seed).choice(
      len(train), size=min(calibration_examples, len(train)), replace=False)
  scale = lambda images: np.asarray(images, np.float32) / 255.0
  return scale(train[np.sort(picked)]), (scale(centralized.test_images),
                                         np.asarray(centralized.test_labels))


def _client_data_arrays(config: config_lib.TrainConfig, calibration_examples: int):
  """`run_data` of a `--client_data` run: its clients' examples pooled (float inputs only)."""
  from tff_sparsify.simulation import sources  # pylint: disable=g-import-not-at-top

  def pooled(client_data):
    xs, ys = [], []
    for client_id in client_data.client_ids:
      for element in client_data.create_tf_dataset_for_client(client_id).batch(4096):
        xs.append(element['x'].numpy())
        ys.append(element['y'].numpy())
    return np.concatenate(xs), np.concatenate(ys)

  try:
    kind, path = sources.parse(config.client_data)
    splits = sources.module(kind).open_splits(path, config.feature_names)
    if 'test' not in splits:
      raise RunReadError(f'--int8 checks the INT8 models\' accuracy on test examples; '
                        f'{config.client_data} has no test split')
    train_x, _ = pooled(splits['train'])
    test = pooled(splits['test'])
  except RunReadError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (SourceError, TF's errors)
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise RunReadError(f'cannot read {config.client_data} for INT8 calibration: '
                      f'{first_line}') from e
  if train_x.dtype.kind != 'f':
    raise RunReadError(f'--int8 calibrates float inputs; {config.client_data} has '
                      f'{train_x.dtype} inputs (export without --int8)')
  picked = np.random.default_rng(config.seed).choice(
      len(train_x), size=min(calibration_examples, len(train_x)), replace=False)
  return train_x[np.sort(picked)].astype(np.float32), (test[0].astype(np.float32), test[1])
