"""The models `inference_table` times: magnitude-pruned, random-init (no flags here).

`pruned_model` places the sparsity `global`ly, `uniform`ly or by `compute`;
`load_test_set` and `accuracy_check` compare the exported model's test
accuracy (ONNX Runtime) with Keras'.
"""

import numpy as np
import tensorflow as tf

from tff_sparsify.core import masks
from tff_sparsify.deploy import model_export as export
from tff_sparsify.learning import configs
from tff_sparsify.learning import models
from tff_sparsify.learning import pruning
from tff_sparsify.simulation import run_data as data

SEED = 1990
PLACEMENTS = configs.SPARSITY_PLACEMENTS


def pruned_model(dataset: str, sparsity: float, placement: str,
                 compute_floor: float = masks.COMPUTE_FLOOR) -> tf.keras.Model:
  """Magnitude pruning to `sparsity` of all prunable weights together.

  `global`: one ranking over all kernels (as FedSparsify prunes), so layers
  with larger initial weights (small fan-in: the first convolutions, where
  most of the CNN's FLOPs are) keep more. `uniform`: every kernel pruned to
  `sparsity` by its own ranking. `compute`: per-layer sparsities that
  minimise the multiply-adds (`masks.compute_layer_sparsities`, every layer
  keeping at least `compute_floor` of the uniform density), each kernel
  pruned by its own ranking. The total sparsity is the same in all three.
  """
  tf.keras.backend.clear_session()  # Layer names (so ONNX op names) alike in every model.
  model = pruning.wrap_for_pruning(models.create_model(dataset, seed=SEED))
  weights = [w.numpy() for w in pruning.prunable_weights(model)]
  pruning.set_masks(model, masks.placed_magnitude_masks(
      weights, sparsity, placement, costs=pruning.macs_per_weight(model), floor=compute_floor))
  pruning.apply_wrapper_masks(model)
  return model


def load_test_set(dataset: str, data_dir=None, tfds_data_dir=None):
  """((images, labels), None) of the test split, or (None, why) offline.

  FashionMNIST from its IDX files (or TFDS); CIFAR-10 from TFDS only where it
  is already prepared (TFDS would try to download it otherwise).
  """
  try:
    if dataset == 'cifar10':  # No download: TFDS would try the network.
      centralized = data.load_tfds('cifar10', data_dir=tfds_data_dir, download=False)
    else:
      centralized = data.load_centralized(dataset, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return None, f'no {dataset} test set ({type(e).__name__}: {first_line[:200]})'
  return (centralized.test_images, centralized.test_labels), None


def accuracy_check(report: export.ExportReport, keras_model, images, labels):
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  x = images.astype(np.float32) / 255.0
  keras_accuracy = float(np.mean(np.argmax(keras_model.predict(x, verbose=0), 1) == labels))
  session = ort.InferenceSession(report.onnx_path, providers=['CPUExecutionProvider'])
  logits = session.run(None, {session.get_inputs()[0].name: x})[0]
  onnx_accuracy = float(np.mean(np.argmax(logits, 1) == labels))
  if abs(onnx_accuracy - keras_accuracy) > 1e-4:
    raise AssertionError(f'{report.onnx_path}: ONNX accuracy {onnx_accuracy} != Keras '
                         f'{keras_accuracy}')
  return onnx_accuracy
