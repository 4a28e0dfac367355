"""The model a run trains: one of ours, a saved Keras file, or a user's function.

`--model` takes
- `paper`, `small_cnn`, `mobilenet` or `mobilenet_x2`: ours (`learning.models`), for `--dataset`;
- `PATH.keras`: a Keras 2 model saved with `model.save('PATH.keras')`; its
  weights are the initial weights, its compiled loss and metrics are used;
- `package.module:function`: a callable with no arguments returning a new
  `tf.keras.Model` each call (imported from the installed packages; the
  working directory is not searched first).

A model without a compiled loss trains with sparse categorical cross-entropy
from logits and reports sparse categorical accuracy (said once, in a line).
The input spec TFF needs is the model's own input (shape and dtype) and one
int32 label per example; the data are cast to the model's input dtype.

`kind` and `check` are pure Python, run before TensorFlow loads; `load`
builds the `ModelSource`.
"""

import collections
import dataclasses
import importlib
import json
import os
import zipfile
from typing import Callable, Optional

BUILTIN = ('paper', 'small_cnn', 'mobilenet', 'mobilenet_x2')
KERAS_SUFFIX = '.keras'
DEFAULT_LOSS_NOTE = ('the model has no compiled loss: training with sparse categorical '
                     'cross-entropy from logits, reporting sparse categorical accuracy')


class ModelError(ValueError):
  """A `--model` that cannot be used; the message says why (the binaries name the flag)."""


def kind(model: str) -> str:
  """'builtin', 'keras_file' or 'function'; ModelError if `model` is none of them."""
  if model in BUILTIN:
    return 'builtin'
  if model.endswith(KERAS_SUFFIX):
    return 'keras_file'
  module, sep, function = model.partition(':')
  if sep and module and function.isidentifier() and all(
      part.isidentifier() for part in module.split('.')):
    return 'function'
  raise ModelError(f'must be one of {", ".join(BUILTIN)}, a saved Keras model PATH.keras '
                   'or package.module:function')


def check(model: str):
  """Pure-Python checks: the file exists, is a Keras 2 `.keras` archive."""
  if kind(model) != 'keras_file':
    return
  if not os.path.isfile(model):
    raise ModelError('no such file')
  try:
    with zipfile.ZipFile(model) as archive:
      metadata = json.loads(archive.read('metadata.json'))
  except (OSError, zipfile.BadZipFile, KeyError, ValueError) as e:
    raise ModelError(f'is not a Keras model archive ({type(e).__name__}: {e})') from None
  version = str(metadata.get('keras_version', ''))
  if not version.startswith('2.'):
    raise ModelError(f'was saved by Keras {version or "(unknown)"}; TFF 0.87 and tfmot '
                     'need a Keras 2 model (TensorFlow 2.14 tf.keras): save it there')


@dataclasses.dataclass(frozen=True)
class ModelSource:
  """How to build the run's Keras model, and what it trains and reports.

  Attributes:
    keras_model_fn: `seed -> tf.keras.Model`, a new model each call.
    loss_fn: no-arg, a new `tf.keras.losses.Loss`.
    metrics_fn: no-arg, a new list of `tf.keras.metrics.Metric`.
    note: a line to tell the user (the default loss), or None.
  """
  keras_model_fn: Callable
  loss_fn: Callable
  metrics_fn: Callable
  note: Optional[str] = None


def _default_loss():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _default_metrics():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return [tf.keras.metrics.SparseCategoricalAccuracy(name='accuracy')]


def _compiled(keras_model) -> tuple[Callable, Callable, Optional[str]]:
  """(loss_fn, metrics_fn, note) from the model's compile config (Keras 2 `get_compile_config`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config = keras_model.get_compile_config() if hasattr(keras_model, 'get_compile_config') else None
  if not config or config.get('loss') is None:
    return _default_loss, _default_metrics, DEFAULT_LOSS_NOTE
  loss_config, metric_configs = config['loss'], config.get('metrics') or []
  if isinstance(loss_config, (list, dict)) and not (
      isinstance(loss_config, dict) and 'class_name' in loss_config):
    raise ModelError('has several losses (one per output); one output and one loss are supported')

  def loss_fn():
    loss = tf.keras.losses.get(loss_config)
    return loss if isinstance(loss, tf.keras.losses.Loss) else (
        tf.keras.losses.LossFunctionWrapper(loss))

  def metrics_fn():
    found = []
    for entry in metric_configs:
      if entry in ('accuracy', 'acc'):  # Keras picks by the labels: ours are sparse.
        found.append(tf.keras.metrics.SparseCategoricalAccuracy(name='accuracy'))
        continue
      metric = tf.keras.metrics.get(entry)
      if not isinstance(metric, tf.keras.metrics.Metric):
        metric = tf.keras.metrics.MeanMetricWrapper(metric, name=getattr(metric, '__name__', None))
      found.append(metric)
    return found
  return loss_fn, metrics_fn, None


def _keras_file(path: str) -> ModelSource:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def keras_model_fn(seed=0):
    del seed  # The file's weights are the initial weights.
    return tf.keras.models.load_model(path, compile=True)

  try:
    probe = keras_model_fn()
  except Exception as e:  # pylint: disable=broad-except  (Keras raises many kinds)
    raise ModelError(f'cannot be loaded ({type(e).__name__}: {_first_line(e)})') from None
  loss_fn, metrics_fn, note = _compiled(probe)
  return ModelSource(keras_model_fn, loss_fn, metrics_fn, note)


def _function(spec: str) -> ModelSource:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  module_name, _, name = spec.partition(':')
  try:
    module = importlib.import_module(module_name)
  except Exception as e:  # pylint: disable=broad-except  (any import-time error of the user's)
    raise ModelError(f'cannot import {module_name} ({type(e).__name__}: {_first_line(e)})') from None
  function = getattr(module, name, None)
  if not callable(function):
    raise ModelError(f'{module_name} has no function {name}')

  def keras_model_fn(seed=0):
    del seed  # The function seeds its own initializers (or not).
    return function()

  try:
    probe = keras_model_fn()
  except Exception as e:  # pylint: disable=broad-except
    raise ModelError(f'raised {type(e).__name__}: {_first_line(e)}') from None
  if not isinstance(probe, tf.keras.Model):
    raise ModelError(f'returned {type(probe).__name__}, not a tf.keras.Model')
  loss_fn, metrics_fn, note = _compiled(probe)
  return ModelSource(keras_model_fn, loss_fn, metrics_fn, note)


def _first_line(error: BaseException) -> str:
  return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def load(model: str, dataset: str = 'fashion_mnist') -> ModelSource:
  """The `ModelSource` of `--model` (ours for `dataset`, a file or a function)."""
  check(model)
  found = kind(model)
  if found == 'keras_file':
    return _keras_file(model)
  if found == 'function':
    return _function(model)
  from tff_sparsify.learning import models  # pylint: disable=g-import-not-at-top
  return ModelSource(lambda seed=0: models.create_model(dataset, seed, model), models.loss_fn,
                     _default_metrics)


def input_spec(keras_model) -> collections.OrderedDict:
  """TFF's batched input spec of `keras_model` (`models.keras_input_spec`); ModelError if none."""
  from tff_sparsify.learning import models  # pylint: disable=g-import-not-at-top
  try:
    return models.keras_input_spec(keras_model)
  except ValueError as e:
    raise ModelError(str(e)) from None
