"""Static INT8 (QDQ) ONNX models, with ONNX Runtime's own quantization tool.

`quantize` runs ONNX Runtime's recommended pre-processing
(`quant_pre_process`: shape inference, then ORT's graph optimizations, which
fuse tf2onnx's MatMul + Add into Gemm), then
`onnxruntime.quantization.quantize_static`: QDQ format,
int8 activations and weights, per-tensor, MinMax calibration on inputs drawn
from the run's training data. Pruned weights stay zero (zero is exactly
representable with the symmetric int8 weights ORT writes), so DeepSparse's
sparse INT8 kernels and ONNX Runtime's QDQ fusions can both use the file.
Without the pre-processing, DeepSparse 1.8 aborts the process (an assertion
in its planner) compiling the QDQ fully-connected model; with it, it runs.

The pinned onnx is 1.14 (DeepSparse 1.8 needs onnx < 1.15), and the
quantization tool of the pinned ONNX Runtime names `TensorProto.INT4` and
`UINT4` (added in onnx 1.16) in lookup tables at import. `_quantization`
adds those two enum numbers (22 and 21, from onnx 1.16's onnx.proto) where
they are missing before importing it; INT8 quantization touches no 4-bit
path, and the written model is checked by running it.
"""

import os
import tempfile

import numpy as np
import onnx

from tff_sparsify.deploy import input_layouts as layouts

PRECISION_KEY = 'tff_sparsify.precision'
_ONNX_1_16_ENUMS = {'UINT4': 21, 'INT4': 22}


def _quantization():
  for name, number in _ONNX_1_16_ENUMS.items():
    if not hasattr(onnx.TensorProto, name):
      setattr(onnx.TensorProto, name, number)
  from onnxruntime import quantization  # pylint: disable=g-import-not-at-top
  return quantization


def precision(onnx_model) -> str:
  """'int8' for a file `quantize` wrote, else 'float32'."""
  props = {p.key: p.value for p in onnx_model.metadata_props}
  return props.get(PRECISION_KEY, 'float32')


ACTIVATION_TYPES = ('int8', 'uint8')
QUANT_FORMATS = ('qdq', 'qoperator')


def quantize(onnx_path: str, output_path: str, calibration: np.ndarray,
             batch_size: int = 32, *, activation_type: str = 'int8',
             quant_format: str = 'qdq', per_channel: bool = False):
  """Writes the static INT8 QDQ model of the float ONNX model at `onnx_path`.

  Args:
    onnx_path: a float32 model (`export.export_model`'s), channels-first or
      last as its metadata says (`layouts.input_layout`); the INT8 model
      keeps that layout, which is recorded again with `PRECISION_KEY`.
    output_path: where the INT8 model goes.
    calibration: channels-last float32 inputs (the Keras layout).
    batch_size: calibration batch size.
    activation_type: 'int8' (the default) or 'uint8' activations; the
      weights are always symmetric int8.
    quant_format: 'qdq' (QuantizeLinear/DequantizeLinear pairs, the default)
      or 'qoperator' (QLinearConv, QLinearMatMul, ...).
    per_channel: per-channel weight scales (default: per-tensor).
  """
  if activation_type not in ACTIVATION_TYPES:
    raise ValueError(f'activation_type must be one of {ACTIVATION_TYPES}, got {activation_type!r}')
  if quant_format not in QUANT_FORMATS:
    raise ValueError(f'quant_format must be one of {QUANT_FORMATS}, got {quant_format!r}')
  quantization = _quantization()
  model = onnx.load(onnx_path)
  layout = layouts.input_layout(model)
  name = model.graph.input[0].name
  inputs = np.asarray(calibration, np.float32)
  if layout == 'NCHW':
    inputs = layouts.to_nchw(inputs)

  class _Reader(quantization.CalibrationDataReader):

    def __init__(self):
      self._batches = iter([{name: inputs[i:i + batch_size]}
                            for i in range(0, len(inputs), batch_size)])

    def get_next(self):
      return next(self._batches, None)

  with tempfile.TemporaryDirectory() as scratch:
    prepared = os.path.join(scratch, 'prepared.onnx')
    quantization.quant_pre_process(onnx_path, prepared)
    quantization.quantize_static(
        prepared, output_path, _Reader(),
        quant_format=(quantization.QuantFormat.QDQ if quant_format == 'qdq'
                      else quantization.QuantFormat.QOperator),
        activation_type=(quantization.QuantType.QInt8 if activation_type == 'int8'
                         else quantization.QuantType.QUInt8),
        weight_type=quantization.QuantType.QInt8, per_channel=per_channel)
  quantized = onnx.load(output_path)
  onnx.helper.set_model_props(
      quantized, {layouts.LAYOUT_KEY: layout, PRECISION_KEY: 'int8'})
  onnx.save(quantized, output_path)
