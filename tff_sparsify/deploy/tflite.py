"""TensorFlow Lite export: float32 and full-integer INT8, through TF's own converter.

- Float32: `tf.lite.TFLiteConverter` on the stripped Keras model.
- INT8: full-integer post-training quantization (TFLite's "integer only"):
  `Optimize.DEFAULT` with a representative dataset drawn from the run's
  training data, `TFLITE_BUILTINS_INT8` only (conversion fails rather than
  leave a float op) and int8 input and output, as integer-only devices need.
  `predict` and the inference runner quantize float batches with the input's
  scale and zero point and dequantize the logits, so every runtime takes and
  returns the same floats.
- `Optimize.EXPERIMENTAL_SPARSITY` (TFLite's sparse tensor encoding) is tried
  for both and kept where it makes the file smaller and LiteRT 2 runs it
  (`runs_on_litert`).

Two interpreters run the files (`Model(..., runtime=)`): TF 2.14's bundled
`tf.lite.Interpreter` (2023) and LiteRT 2 (`ai-edge-litert`, the maintained
runtime, `ai_edge_litert.interpreter.Interpreter`, same API). Each applies its default XNNPACK
delegate to what XNNPACK supports, and only to tensors of static shape: a
model converted with a dynamic batch (the Keras input's `None`) runs on
TFLite's builtin kernels after `resize_tensor_input`. `convert(...,
batch_size=N)` fixes the batch (the export uses the batch the inference
tables time); `Model` runs other batch sizes as padded whole batches.
Measured with `benchmarks/conv_frontier.py` before and after (BUILD_NOTES):
dense TFLite went from 0.40x to 0.86-0.96x ONNX Runtime's speed on the
FashionMNIST CNN (with the runner's threads also raised from TFLite's
default one to all cores).
"""

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

PRECISIONS = ('float32', 'int8')


@dataclasses.dataclass(frozen=True)
class Conversion:
  flatbuffer: bytes
  sparse_encoding: bool  # Optimize.EXPERIMENTAL_SPARSITY was kept.


def _converter(model: tf.keras.Model, batch_size: Optional[int]) -> tf.lite.TFLiteConverter:
  spec = tf.TensorSpec((batch_size,) + tuple(model.input_shape[1:]), tf.float32)
  function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
  return tf.lite.TFLiteConverter.from_concrete_functions([function], model)


def convert(model: tf.keras.Model, precision: str = 'float32',
            representative: Optional[np.ndarray] = None,
            batch_size: Optional[int] = None) -> Conversion:
  """The TFLite flatbuffer of `model` (no tfmot wrappers) at `precision`.

  Args:
    model: a Keras model taking float32 inputs.
    precision: 'float32' or 'int8' (full-integer, int8 input and output).
    representative: for 'int8', the calibration inputs (float32, the model's
      input shape), fed one example at a time (in batches of `batch_size`,
      the last one completed from the first examples, when it is fixed).
    batch_size: the input's batch dimension; None: dynamic (XNNPACK then
      does not run it, see the module docstring).

  Raises:
    ValueError: unknown precision, or 'int8' without representative inputs.
  """
  if precision not in PRECISIONS:
    raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
  if precision == 'int8' and (representative is None or not len(representative)):
    raise ValueError('int8 needs representative inputs, got none')
  found = []
  for sparse in (False, True):
    converter = _converter(model, batch_size)
    optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    if precision == 'int8':
      optimizations.insert(0, tf.lite.Optimize.DEFAULT)
      examples = np.asarray(representative, np.float32)
      if batch_size is None:
        converter.representative_dataset = lambda: ([x[None]] for x in examples)
      else:  # Whole batches: the first examples again complete the last one.
        batches = -(-len(examples) // batch_size)
        padded = np.resize(examples, (batches * batch_size,) + examples.shape[1:])
        converter.representative_dataset = lambda: (
            [padded[i:i + batch_size]] for i in range(0, len(padded), batch_size))
      converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
      converter.inference_input_type = tf.int8
      converter.inference_output_type = tf.int8
    converter.optimizations = optimizations
    found.append(Conversion(converter.convert(), sparse))
  # The sparse encoding only where LiteRT, the maintained runtime, runs it.
  runnable = [c for c in found if not c.sparse_encoding or runs_on_litert(c.flatbuffer)]
  return min(runnable, key=lambda c: (len(c.flatbuffer), c.sparse_encoding))


def runs_on_litert(flatbuffer: bytes) -> bool:
  """Whether LiteRT 2 prepares the model with its default delegates (XNNPACK).

  Measured (`tests/test_export_formats.py`): LiteRT 2.3 fails to prepare an
  INT8 fully connected layer whose weights carry TFLite's sparse encoding
  ("failed to delegate FULLY_CONNECTED node"), which TF 2.14's interpreter
  runs; such a file would not run on the device runtime, so `convert`
  keeps the dense encoding then.
  """
  try:
    interpreter = _interpreter_class('litert')(model_content=flatbuffer)
    interpreter.allocate_tensors()
  except RuntimeError:
    return False
  return True


INTERPRETERS = ('tensorflow', 'litert')


def _interpreter_class(runtime: str):
  if runtime == 'litert':
    from ai_edge_litert import interpreter  # pylint: disable=g-import-not-at-top
    return interpreter.Interpreter
  if runtime != 'tensorflow':
    raise ValueError(f'runtime must be one of {INTERPRETERS}, got {runtime!r}')
  return tf.lite.Interpreter


class Model:
  """A TFLite model that takes float32 batches and returns float32 logits.

  A model converted at a fixed batch (its Reshape ops hold that batch, so it
  cannot be resized) runs any batch as whole batches of its own size, the
  last one padded with zeros; a dynamic-batch model is resized to the batch.
  """

  def __init__(self, path_or_flatbuffer, *, num_threads: Optional[int] = None,
               runtime: str = 'tensorflow'):
    """`runtime`: 'tensorflow' (TF's bundled interpreter) or 'litert' (LiteRT 2)."""
    kwargs = ({'model_content': path_or_flatbuffer} if isinstance(path_or_flatbuffer, bytes)
              else {'model_path': path_or_flatbuffer})
    self._interpreter = _interpreter_class(runtime)(**kwargs, num_threads=num_threads)
    details = self._interpreter.get_input_details()[0]
    self.fixed_batch_size = (None if -1 in details['shape_signature']
                             else int(details['shape'][0]))
    self._batch_size = None
    if self.fixed_batch_size is not None:
      self._allocate(self.fixed_batch_size, resize=False)

  def _allocate(self, batch_size: int, resize: bool = True):
    if resize:
      details = self._interpreter.get_input_details()[0]
      self._interpreter.resize_tensor_input(
          details['index'], [batch_size] + list(details['shape'][1:]))
    self._interpreter.allocate_tensors()
    self._batch_size = batch_size
    self._input = self._interpreter.get_input_details()[0]
    self._output = self._interpreter.get_output_details()[0]

  def _run(self, batch: np.ndarray) -> np.ndarray:
    if self._input['dtype'] == np.int8:
      scale, zero_point = self._input['quantization']
      batch = np.clip(np.round(batch / scale + zero_point), -128, 127).astype(np.int8)
    self._interpreter.set_tensor(self._input['index'], batch)
    self._interpreter.invoke()
    out = self._interpreter.get_tensor(self._output['index'])
    if self._output['dtype'] == np.int8:
      scale, zero_point = self._output['quantization']
      out = (out.astype(np.float32) - zero_point) * scale
    return out

  def __call__(self, batch: np.ndarray) -> np.ndarray:
    fixed = self.fixed_batch_size
    if fixed is None:
      if len(batch) != self._batch_size:
        self._allocate(len(batch))
      return self._run(batch)
    if len(batch) == fixed:
      return self._run(batch)
    outputs = []
    for start in range(0, len(batch), fixed):
      chunk = batch[start:start + fixed]
      padded = np.zeros((fixed,) + chunk.shape[1:], chunk.dtype)
      padded[:len(chunk)] = chunk
      outputs.append(self._run(padded)[:len(chunk)].copy())
    return np.concatenate(outputs)


def predict(model: Model, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
  """The logits of `images` (float32, in batches of `batch_size`)."""
  return np.concatenate([model(images[i:i + batch_size])
                         for i in range(0, len(images), batch_size)])
