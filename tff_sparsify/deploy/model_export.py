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
import dataclasses
import gzip
import itertools
import os
from typing import Optional

import numpy as np
import onnx
from onnx import numpy_helper
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import files
from tff_sparsify.deploy import compact as compact_lib
from tff_sparsify.deploy import export_configs as configs
from tff_sparsify.deploy import input_layouts as layouts
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
    candidates = [a for a in by_size.get(kernel.size, []) if a.dtype == kernel.dtype]
    for array in candidates:
      if np.allclose(np.sort(array.ravel()), key, rtol=0, atol=KERNEL_MATCH_ATOL):
        onnx_zeros = int(np.sum(array == 0))
        break
    else:  # A BatchNormalization folded into the kernel scales each output channel.
      for array in candidates:
        onnx_zeros = _scaled_zeros(kernel, array)
        if onnx_zeros is not None:
          break
    layers.append(LayerSparsity(name, tuple(kernel.shape), int(kernel.size),
                                int(np.sum(kernel == 0)), onnx_zeros))
  return layers


def _scaled_zeros(kernel: np.ndarray, array: np.ndarray):
  """Where `array`, in some order of its axes, is `kernel` times one factor per output
  channel (tf2onnx folds a BatchNormalization that follows a convolution into its
  kernel): how many of `kernel`'s zeros are exact zeros there; else None."""
  if array.ndim != kernel.ndim:
    return None
  for order in itertools.permutations(range(array.ndim)):
    if tuple(array.shape[i] for i in order) != kernel.shape:
      continue
    candidate = np.transpose(array, order).reshape(-1, kernel.shape[-1])
    flat = kernel.reshape(-1, kernel.shape[-1])
    ratio = np.divide(candidate, flat, out=np.zeros_like(candidate), where=flat != 0)
    scale = np.array([np.median(ratio[flat[:, c] != 0, c]) if np.any(flat[:, c] != 0) else 0.0
                      for c in range(flat.shape[-1])], dtype=np.float64)
    # Float32 products: relative error about 1e-7; an altered value is further off.
    tolerance = 1e-7 * (1.0 + float(np.abs(candidate).max(initial=0.0)))
    if np.allclose(candidate, flat * scale, rtol=1e-5, atol=tolerance):
      return int(np.sum((candidate == 0) & (flat == 0)))
  return None


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
  config = _checked_config(config, options, int8_calibration, test_set)
  formats, opset, inputs_as_nchw = config.formats, config.opset, config.inputs_as_nchw
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
    layout = _write_onnx(model, onnx_temp, opset, inputs_as_nchw)
    max_abs_diff, layers = check_onnx(model, onnx_temp, inputs_as_nchw=inputs_as_nchw,
                                      check_batch_size=check_batch_size, seed=seed)
    if images is not None:
      onnx_accuracy = _accuracy(_onnx_logits(onnx_temp, images), labels)
    exported = []
    for file_format, precision in outputs:
      suffix = '_int8' if precision == 'int8' else ''
      path = os.path.join(output_dir, f'model{suffix}.{file_format}')
      temp = stack.enter_context(files.atomic_path(path))
      exported.append(_export_file(
          model, ModelFile(file_format, precision, path, 0, 0), temp, onnx_temp, config,
          int8_calibration, test_set, keras_accuracy, check_batch_size, seed))
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


def _checked_config(config, options, int8_calibration, test_set) -> configs.ExportConfig:
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
  return config


def _write_onnx(model, path: str, opset: int, inputs_as_nchw: bool) -> str:
  """`model` converted by tf2onnx to `path`, its input layout in the metadata; the layout."""
  import tf2onnx  # pylint: disable=g-import-not-at-top
  input_shape = tuple(model.input_shape[1:])
  spec = (tf.TensorSpec((None,) + input_shape, tf.float32, name='input'),)
  onnx_model, _ = tf2onnx.convert.from_keras(
      model, input_signature=spec, opset=opset,
      inputs_as_nchw=['input'] if inputs_as_nchw else None)
  layout = 'NCHW' if inputs_as_nchw else 'NHWC'
  onnx.helper.set_model_props(onnx_model, {layouts.LAYOUT_KEY: layout})
  onnx.save(onnx_model, path)
  return layout


def _export_file(model, found: ModelFile, temp: str, onnx_temp: str,
                 config: configs.ExportConfig, int8_calibration, test_set, keras_accuracy,
                 check_batch_size: int, seed: int) -> ModelFile:
  """One INT8 ONNX or TFLite file written to `temp` and checked; `found` filled in."""
  images, labels = test_set if test_set is not None else (None, None)
  if found.format == 'onnx':
    onnx_int8.quantize(onnx_temp, temp, int8_calibration)
    logits = _onnx_logits(temp, images) if images is not None else None
  else:
    input_shape = tuple(model.input_shape[1:])
    conversion = tflite.convert(
        model, found.precision, int8_calibration,
        batch_size=config.tflite_batch_size or configs.default_batch_size(input_shape))
    with open(temp, 'wb') as f:
      f.write(conversion.flatbuffer)
    found.sparse_encoding = conversion.sparse_encoding
    if found.precision == 'float32':
      found.max_abs_diff = check_tflite(model, temp, check_batch_size=check_batch_size,
                                        seed=seed)
    logits = tflite.predict(tflite.Model(temp), images) if images is not None else None
  if logits is not None:
    found.test_accuracy = _accuracy(logits, labels)
  if found.precision == 'int8' and config.max_int8_accuracy_drop is not None:
    check_int8_accuracy(found.path, found.test_accuracy, keras_accuracy,
                        config.max_int8_accuracy_drop)
  found.bytes, found.gzip_bytes = _file_sizes(temp)
  return found
