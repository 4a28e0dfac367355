"""Input layouts of exported models (no TensorFlow): which layout an ONNX file takes.

Keras models take images channels-last (NHWC); an export with
`inputs_as_nchw=True` takes them channels-first and records it in the ONNX
metadata under `LAYOUT_KEY`, so that whoever times or serves the file feeds
it the right batch.
"""

import numpy as np

# ONNX metadata key saying the model's input is channels-first (NCHW).
LAYOUT_KEY = 'tff_sparsify.input_layout'


def input_layout(onnx_model) -> str:
  """'NCHW' if the export wrote it (`export_model(..., inputs_as_nchw=True)`), else 'NHWC'."""
  props = {p.key: p.value for p in onnx_model.metadata_props}
  return props.get(LAYOUT_KEY, 'NHWC')


def onnx_input_layout(onnx_path: str) -> str:
  """`input_layout` of the ONNX file at `onnx_path` (its weights are not read)."""
  import onnx  # pylint: disable=g-import-not-at-top
  return input_layout(onnx.load(onnx_path, load_external_data=False))


def to_nchw(batch: np.ndarray) -> np.ndarray:
  """A channels-last image batch, channels-first (what an NCHW export takes)."""
  return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
