"""Pruned Keras model -> SavedModel, ONNX and TensorFlow Lite, with the checks that matter.

The path of Stripelis et al.'s inference tables: the final federated model,
stripped of its tfmot wrappers (`strip_pruning`), converted by
`tf2onnx.convert.from_keras`. The export checks that

- ONNX Runtime's outputs match Keras on random inputs (max abs diff <= 1e-4);
- the ONNX initializers keep the model's zeros: each pruned Keras kernel is
  found among the initializers (same element count and the same multiset of
  values: tf2onnx may transpose it) with the same number of zeros;

and reports the raw and gzip'd ONNX size (zeros do not shrink a file, gzip
shows the gain; the paper's "Model Size") and the non-zero parameter count.

`formats` adds TensorFlow Lite (`deploy/tflite.py`): its float32 outputs
must match Keras to 1e-4 as well. Given calibration inputs, every format
also gets its INT8 model (`model_int8.onnx`, ONNX Runtime's static QDQ,
`deploy/onnx_int8.py`; `model_int8.tflite`, TFLite's full-integer
quantization), whose test accuracy must stay within `max_int8_accuracy_drop`
of the Keras model's.
"""

import contextlib

import asyncio
import dataclasses
import gzip
import os
from typing import Optional

import numpy as np
import onnx
from onnx import numpy_helper
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import config as config_lib
from tff_sparsify import files
from tff_sparsify.deploy import compact as compact_lib
from tff_sparsify.deploy import configs
from tff_sparsify.deploy import layouts
from tff_sparsify.deploy import onnx_int8
from tff_sparsify.deploy import tflite
from tff_sparsify.learning import pruning

MAX_ABS_DIFF = 1e-4
KERNEL_MATCH_ATOL = 1e-6
FORMATS = configs.FORMATS
MAX_INT8_ACCURACY_DROP = configs.MAX_INT8_ACCURACY_DROP


def check_inputs_as_nchw(model: tf.keras.Model):
  """ExportError unless `model` takes images, (batch, height, width, channels)."""
  if len(model.input_shape) != 4:
    raise ExportError('inputs_as_nchw needs an image input (batch, height, width, '
                      f'channels), got input shape {model.input_shape}')


class ExportError(ValueError):
  """A model that cannot be exported, or whose export fails a check."""


@dataclasses.dataclass
class LayerSparsity:
  name: str
  shape: tuple
  size: int
  keras_zeros: int
  onnx_zeros: Optional[int]  # None: no matching initializer found.

  @property
  def sparsity(self) -> float:
    return self.keras_zeros / self.size if self.size else 0.0


@dataclasses.dataclass
class ModelFile:
  """One exported file beside the float ONNX model."""
  format: str  # 'onnx' or 'tflite'.
  precision: str  # 'float32' or 'int8'.
  path: str
  bytes: int
  gzip_bytes: int
  max_abs_diff: Optional[float] = None  # Float32: max |file - Keras| on random inputs.
  test_accuracy: Optional[float] = None
  sparse_encoding: Optional[bool] = None  # TFLite: EXPERIMENTAL_SPARSITY kept.


@dataclasses.dataclass
class ExportReport:
  onnx_path: str
  saved_model_dir: str
  onnx_bytes: int
  onnx_gzip_bytes: int
  total_params: int
  nonzero_params: int
  max_abs_diff: float
  layers: list
  input_layout: str = 'NHWC'
  files: list = dataclasses.field(default_factory=list)  # ModelFile, beyond model.onnx.
  keras_test_accuracy: Optional[float] = None
  onnx_test_accuracy: Optional[float] = None
  # `compact=True`: the masked model's parameters, and max |compact - masked|.
  masked_params: Optional[int] = None
  compact_max_abs_diff: Optional[float] = None

  @property
  def sparsity(self) -> float:
    kernels = sum(layer.size for layer in self.layers)
    zeros = sum(layer.keras_zeros for layer in self.layers)
    return zeros / kernels if kernels else 0.0

  def as_dict(self) -> dict:
    result = dataclasses.asdict(self)
    result['sparsity'] = self.sparsity
    for layer, original in zip(result['layers'], self.layers):
      layer['sparsity'] = original.sparsity
    return result


def load_run_model(path: str) -> tf.keras.Model:
  """The final model of a training run.

  Args:
    path: a `final_model.keras` file, a run's results directory holding one,
      or a `root_output_dir/results/{experiment}` path.

  Raises:
    ExportError: naming the path, if there is no model or it cannot be read.
  """
  candidate = os.path.join(path, 'final_model.keras') if os.path.isdir(path) else path
  if not os.path.isfile(candidate):
    raise ExportError(f'no final_model.keras at {path!r}: give a run\'s results directory '
                      'or a .keras file')
  try:
    return tf.keras.models.load_model(candidate, compile=False)
  except Exception as e:  # Keras raises many types for a corrupt file.
    raise ExportError(f'cannot read the Keras model {candidate!r}: {e}') from e


_STATE_PREFIX = 'program_state_'


def split_checkpoint_path(path: str) -> tuple[str, Optional[int]]:
  """(`{root}/checkpoints/{experiment}`, N or None) of a checkpoint path.

  Raises:
    ExportError: if `path` is not `{root}/checkpoints/{experiment}` or
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
      raise ExportError(f'{path!r} is not a program_state_N directory') from None
  if os.path.basename(os.path.dirname(experiment_dir)) != 'checkpoints':
    raise ExportError(f'{path!r} is not a checkpoint of a training run '
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
    ExportError: naming the path, if it is not such a checkpoint or cannot be
      read.
  """
  from tensorflow_federated import program as tff_program  # pylint: disable=g-import-not-at-top
  from tff_sparsify.learning import registry  # pylint: disable=g-import-not-at-top
  from tff_sparsify.simulation import execution  # pylint: disable=g-import-not-at-top

  path = os.path.normpath(path)
  experiment_dir, version = split_checkpoint_path(path)
  if not os.path.isdir(path):
    raise ExportError(f'{path!r} is not a checkpoint of a training run '
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
        raise ExportError(f'no program_state_N in {path!r}: the run has not checkpointed')
      version = max(versions)
    process, keras_model_fn = registry.build_from_config(config, structure_only=True)
    with execution.local_cpp_execution_context():
      structure = process.initialize()
      state = loop.run_until_complete(manager.load(version, structure))
      weights = process.get_model_weights(state)
  except ExportError:
    raise
  except Exception as e:  # TFF and TF raise many types for a corrupt state.
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise ExportError(f'cannot load checkpoint {path!r}: {first_line}') from e
  finally:
    loop.close()
  model = keras_model_fn()
  weights.assign_weights_to(model)
  return model


def load_run_config(results_dir: str) -> config_lib.TrainConfig:
  """The `TrainConfig` a run saved in `{results_dir}/config.json`; ExportError if none."""
  path = os.path.join(results_dir, 'config.json')
  try:
    return config_lib.TrainConfig.from_dict(config_lib.load_dict(path))
  except config_lib.ConfigError as e:
    raise ExportError(f'cannot use the run configuration {path!r}: {e}') from e


def run_data(config: config_lib.TrainConfig, export_config: configs.ExportConfig):
  """(calibration inputs, (test images, test labels)) of a run's dataset, float32 in [0, 1].

  The calibration inputs are `export_config.calibration_examples` training
  examples drawn without replacement with the run's seed; the test set is the
  whole split.

  Raises:
    ExportError: if the dataset cannot be loaded (the message says why).
  """
  if config.client_data is not None:
    return _client_data_arrays(config, export_config)
  from tff_sparsify.simulation import data_sources  # pylint: disable=g-import-not-at-top
  try:
    centralized = data_sources.load_centralized(config.dataset, config.data_dir)
  except Exception as e:  # pylint: disable=broad-except  (DataError, TFDS errors)
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise ExportError(f'cannot load {config.dataset} for INT8 calibration: {first_line}') from e
  train = centralized.train_images
  picked = np.random.default_rng(config.seed).choice(
      len(train), size=min(export_config.calibration_examples, len(train)), replace=False)
  scale = lambda images: np.asarray(images, np.float32) / 255.0
  return scale(train[np.sort(picked)]), (scale(centralized.test_images),
                                         np.asarray(centralized.test_labels))


def _client_data_arrays(config: config_lib.TrainConfig, export_config: configs.ExportConfig):
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
      raise ExportError(f'--int8 checks the INT8 models\' accuracy on test examples; '
                        f'{config.client_data} has no test split')
    train_x, _ = pooled(splits['train'])
    test = pooled(splits['test'])
  except ExportError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (SourceError, TF's errors)
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise ExportError(f'cannot read {config.client_data} for INT8 calibration: '
                      f'{first_line}') from e
  if train_x.dtype.kind != 'f':
    raise ExportError(f'--int8 calibrates float inputs; {config.client_data} has '
                      f'{train_x.dtype} inputs (export without --int8)')
  picked = np.random.default_rng(config.seed).choice(
      len(train_x), size=min(export_config.calibration_examples, len(train_x)), replace=False)
  return train_x[np.sort(picked)].astype(np.float32), (test[0].astype(np.float32), test[1])


def _strip(model: tf.keras.Model) -> tf.keras.Model:
  return tfmot.sparsity.keras.strip_pruning(model) if pruning.wrappers(model) else model


def _kernels(model: tf.keras.Model) -> list:
  return [(layer.name, layer.kernel.numpy()) for layer in model.layers
          if hasattr(layer, 'kernel')]


def _match_initializers(kernels, onnx_model) -> list:
  initializers = [numpy_helper.to_array(t) for t in onnx_model.graph.initializer]
  by_size = {}
  for array in initializers:
    by_size.setdefault(array.size, []).append(array)
  layers = []
  for name, kernel in kernels:
    # tf2onnx may transpose a kernel: match its values, sorted, to 1e-6, so
    # that a kernel whose zeros became tiny values is found (and reported).
    key = np.sort(kernel.ravel())
    onnx_zeros = None
    for array in by_size.get(kernel.size, []):
      if array.dtype == kernel.dtype and np.allclose(
          np.sort(array.ravel()), key, rtol=0, atol=KERNEL_MATCH_ATOL):
        onnx_zeros = int(np.sum(array == 0))
        break
    layers.append(LayerSparsity(name, tuple(kernel.shape), int(kernel.size),
                                int(np.sum(kernel == 0)), onnx_zeros))
  return layers


def _random_check(model: tf.keras.Model, check_batch_size: int, seed: int):
  """(uniform random inputs of the model's shape, Keras' outputs on them)."""
  shape = (check_batch_size,) + tuple(model.input_shape[1:])
  inputs = np.random.default_rng(seed).random(shape, np.float32)
  return inputs, model(inputs, training=False).numpy()


def check_onnx(model: tf.keras.Model, onnx_path: str, *, inputs_as_nchw: bool = False,
               check_batch_size: int = 8, seed: int = 0) -> tuple[float, list[LayerSparsity]]:
  """Checks an ONNX export of `model`: same outputs, same zeros.

  Returns:
    (max |ONNX Runtime - Keras| on random inputs, the kernels' zeros).

  Raises:
    ExportError: if the outputs differ by more than `MAX_ABS_DIFF`, or a
      Keras kernel is missing from the ONNX initializers or lost zeros there.
  """
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top

  inputs, expected = _random_check(model, check_batch_size, seed)
  session = ort.InferenceSession(onnx_path, providers=['CPUExecutionProvider'])
  onnx_inputs = layouts.to_nchw(inputs) if inputs_as_nchw else inputs
  found = session.run(None, {session.get_inputs()[0].name: onnx_inputs})[0]
  max_abs_diff = float(np.max(np.abs(found - expected)))
  if not max_abs_diff <= MAX_ABS_DIFF:
    raise ExportError(f'ONNX outputs differ from Keras by {max_abs_diff:.3g} '
                      f'(allowed {MAX_ABS_DIFF})')
  layers = _match_initializers(_kernels(model), onnx.load(onnx_path))
  for layer in layers:
    if layer.onnx_zeros is None:
      raise ExportError(f'layer {layer.name}: kernel {layer.shape} not found among the '
                        'ONNX initializers (no initializer with its values)')
    if layer.onnx_zeros != layer.keras_zeros:
      raise ExportError(f'layer {layer.name}: {layer.keras_zeros} zeros in Keras, '
                        f'{layer.onnx_zeros} in the ONNX initializers')
  return max_abs_diff, layers


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(logits, axis=1) == labels))


def _onnx_logits(path: str, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
  name = session.get_inputs()[0].name
  nchw = layouts.onnx_input_layout(path) == 'NCHW'
  return np.concatenate([
      session.run(None, {name: layouts.to_nchw(b) if nchw else b})[0]
      for b in (images[i:i + batch_size] for i in range(0, len(images), batch_size))])


def _file_sizes(path: str) -> tuple[int, int]:
  with open(path, 'rb') as f:
    raw = f.read()
  return len(raw), len(gzip.compress(raw, 9))


def check_tflite(model: tf.keras.Model, path: str, *, check_batch_size: int = 8,
                 seed: int = 0) -> float:
  """Max |TFLite - Keras| on random inputs; ExportError above `MAX_ABS_DIFF`."""
  inputs, expected = _random_check(model, check_batch_size, seed)
  max_abs_diff = float(np.max(np.abs(tflite.Model(path)(inputs) - expected)))
  if not max_abs_diff <= MAX_ABS_DIFF:
    raise ExportError(f'TFLite outputs differ from Keras by {max_abs_diff:.3g} '
                      f'(allowed {MAX_ABS_DIFF})')
  return max_abs_diff


def check_int8_accuracy(path: str, int8_accuracy: float, reference_accuracy: float,
                        max_drop: float = MAX_INT8_ACCURACY_DROP):
  """ExportError if the INT8 model's test accuracy is more than `max_drop` below."""
  if not reference_accuracy - int8_accuracy <= max_drop:
    raise ExportError(f'{os.path.basename(path)}: INT8 test accuracy {int8_accuracy:.4f} is '
                      f'{reference_accuracy - int8_accuracy:.4f} below the float model\'s '
                      f'{reference_accuracy:.4f} (allowed {max_drop})')


def export_model(model: tf.keras.Model, output_dir: str,
                 config: Optional[configs.ExportConfig] = None, *,
                 int8_calibration: Optional[np.ndarray] = None,
                 test_set: Optional[tuple] = None, check_batch_size: int = 8,
                 seed: int = 0, **options) -> ExportReport:
  """Writes `saved_model/`, `model.onnx` (and more) under `output_dir`, checked.

  Args:
    model: the Keras model (tfmot wrappers are stripped).
    output_dir: where `saved_model/`, `model.onnx`, `model.tflite`,
      `model_int8.onnx` and `model_int8.tflite` go.
    config: what to write and check (`configs.ExportConfig`: formats, opset,
      `inputs_as_nchw`, `compact`, `int8`, `max_int8_accuracy_drop`), or
      None and its fields as keywords (`export_model(m, d, formats=('onnx',
      'tflite'))`), checked by the same class. With `inputs_as_nchw` an image
      model's ONNX input becomes channels-first (tf2onnx's
      `inputs_as_nchw`): the transpose that feeds the first convolution
      leaves the graph, and the caller transposes its batches
      (`inference.benchmark` does); recorded in the ONNX metadata
      (`layouts.input_layout`); the SavedModel and TFLite files keep Keras'
      channels-last input. With `compact`, the physically smaller model of a
      channel-pruned one (`deploy.compact`, checked against the masked model
      to 1e-5) is exported; every later check and every file is of that
      model.
    int8_calibration: with `config.int8`: channels-last float32 inputs drawn
      from the training data (`run_data`) that each format's INT8 model is
      calibrated on.
    test_set: (float32 images in [0, 1], labels): the test accuracy of every
      file is measured; needed for INT8 unless `max_int8_accuracy_drop` is
      None.
    check_batch_size: rows of the random input the float checks run.
    seed: seed of that input.

  Raises:
    ExportError: if ONNX Runtime's or TFLite's outputs differ from Keras by
      more than 1e-4, a pruned kernel lost zeros in the ONNX file, an INT8
      model's test accuracy falls more than `max_int8_accuracy_drop` below
      Keras', or `inputs_as_nchw` for a model whose input is not
      (batch, H, W, C). Nothing is written then.
    ConfigError: an option out of range (from `configs.ExportConfig`).
    ValueError: INT8 asked without calibration inputs or a test set, or
      calibration inputs given without `int8`.
  """
  import tf2onnx  # pylint: disable=g-import-not-at-top

  if config is None:
    config = configs.ExportConfig(**options)
  elif options:
    raise TypeError(f'give either config or its fields, not both: {sorted(options)}')
  if config.int8 != (int8_calibration is not None):
    raise ValueError('int8_calibration must be given exactly when config.int8 is True '
                     f'(int8={config.int8})')
  if config.int8 and test_set is None and config.max_int8_accuracy_drop is not None:
    raise ValueError('INT8 export needs a test_set to check its accuracy (or '
                     'max_int8_accuracy_drop=None: not checked)')
  formats, opset, inputs_as_nchw = config.formats, config.opset, config.inputs_as_nchw
  max_int8_accuracy_drop = config.max_int8_accuracy_drop
  model = _strip(model)
  masked_params = compact_diff = None
  if config.compact:
    masked_params = int(sum(w.numpy().size for w in model.trainable_weights))
    try:
      model, compact_diff = compact_lib.compact_model(model, check_batch_size, seed)
    except compact_lib.CompactError as e:
      raise ExportError(str(e)) from e
  if inputs_as_nchw:
    check_inputs_as_nchw(model)
  os.makedirs(output_dir, exist_ok=True)
  saved_model_dir = os.path.join(output_dir, 'saved_model')
  onnx_path = os.path.join(output_dir, 'model.onnx')
  outputs = [('onnx', 'int8')] if int8_calibration is not None else []
  if 'tflite' in formats:
    outputs += [('tflite', 'float32')] + (
        [('tflite', 'int8')] if int8_calibration is not None else [])
  images, labels = test_set if test_set is not None else (None, None)
  keras_accuracy = onnx_accuracy = None
  if images is not None:
    keras_accuracy = _accuracy(model.predict(images, batch_size=1000, verbose=0), labels)
  # Written under temporary names and renamed only once every check passed:
  # a failed or interrupted export leaves the previous one as it was.
  with contextlib.ExitStack() as stack:
    onnx_temp = stack.enter_context(files.atomic_path(onnx_path))
    saved_model_temp = stack.enter_context(files.atomic_path(saved_model_dir))
    tf.saved_model.save(model, saved_model_temp)
    input_shape = tuple(model.input_shape[1:])
    spec = (tf.TensorSpec((None,) + input_shape, tf.float32, name='input'),)
    onnx_model, _ = tf2onnx.convert.from_keras(
        model, input_signature=spec, opset=opset,
        inputs_as_nchw=['input'] if inputs_as_nchw else None)
    layout = 'NCHW' if inputs_as_nchw else 'NHWC'
    onnx.helper.set_model_props(onnx_model, {layouts.LAYOUT_KEY: layout})
    onnx.save(onnx_model, onnx_temp)
    max_abs_diff, layers = check_onnx(model, onnx_temp, inputs_as_nchw=inputs_as_nchw,
                                      check_batch_size=check_batch_size, seed=seed)
    if images is not None:
      onnx_accuracy = _accuracy(_onnx_logits(onnx_temp, images), labels)
    exported = []
    for file_format, precision in outputs:
      suffix = '_int8' if precision == 'int8' else ''
      path = os.path.join(output_dir, f'model{suffix}.{file_format}')
      temp = stack.enter_context(files.atomic_path(path))
      found = ModelFile(file_format, precision, path, 0, 0)
      if file_format == 'onnx':
        onnx_int8.quantize(onnx_temp, temp, int8_calibration)
        logits = _onnx_logits(temp, images) if images is not None else None
      else:
        conversion = tflite.convert(
            model, precision, int8_calibration,
            batch_size=config.tflite_batch_size or configs.default_batch_size(input_shape))
        with open(temp, 'wb') as f:
          f.write(conversion.flatbuffer)
        found.sparse_encoding = conversion.sparse_encoding
        if precision == 'float32':
          found.max_abs_diff = check_tflite(model, temp, check_batch_size=check_batch_size,
                                            seed=seed)
        logits = tflite.predict(tflite.Model(temp), images) if images is not None else None
      if logits is not None:
        found.test_accuracy = _accuracy(logits, labels)
      if precision == 'int8' and max_int8_accuracy_drop is not None:
        check_int8_accuracy(path, found.test_accuracy, keras_accuracy, max_int8_accuracy_drop)
      found.bytes, found.gzip_bytes = _file_sizes(temp)
      exported.append(found)
    onnx_bytes, onnx_gzip_bytes = _file_sizes(onnx_temp)
  trainable = [w.numpy() for w in model.trainable_weights]
  return ExportReport(
      onnx_path=onnx_path, saved_model_dir=saved_model_dir, onnx_bytes=onnx_bytes,
      onnx_gzip_bytes=onnx_gzip_bytes,
      total_params=int(sum(w.size for w in trainable)),
      nonzero_params=int(sum(np.count_nonzero(w) for w in trainable)),
      max_abs_diff=max_abs_diff, layers=layers, input_layout=layout, files=exported,
      keras_test_accuracy=keras_accuracy, onnx_test_accuracy=onnx_accuracy,
      masked_params=masked_params, compact_max_abs_diff=compact_diff)
