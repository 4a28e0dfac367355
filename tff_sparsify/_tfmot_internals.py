"""Every non-public API of TensorFlow Model Optimization (tfmot) that this package uses.

Pinned against tensorflow-model-optimization 0.7.5. tfmot's public API
wraps layers (`prune_low_magnitude`) and strips them (`strip_pruning`) but
exports neither the wrapper class nor its variables; FedSparsify sets masks
and steps from the server and masks the weights itself, so it needs them.
Nothing else in the package imports `tensorflow_model_optimization.python`
or touches a wrapper's members; `tests/test_internals.py` pins each
behaviour relied on. Used by `learning/pruning.py` and `learning/pruning_layout.py`.
"""

from typing import Callable

import tensorflow as tf
# pylint: disable=g-direct-tensorflow-import
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper
# pylint: enable=g-direct-tensorflow-import

PINNED = {'tensorflow-model-optimization': '0.7.5'}

# The class `prune_low_magnitude` wraps each prunable layer in.
PruneLowMagnitude = pruning_wrapper.PruneLowMagnitude


def registry_supports(layer: tf.keras.layers.Layer) -> bool:
  """Whether tfmot's prune registry knows how to prune `layer` (Dense, Conv, GRU, ...)."""
  return prune_registry.PruneRegistry.supports(layer)


def collect_wrappers(model: tf.keras.Model) -> list:
  """The wrappers of `model`, nested models included, in tfmot's own order."""
  return pruning_wrapper.collect_prunable_layers(model)


def pruning_vars(wrapper) -> list:
  """(weight, mask, threshold) of each prunable weight of `wrapper`."""
  return wrapper.pruning_vars


def pruning_step(wrapper) -> tf.Variable:
  """The wrapper's int64 step (tfmot asserts >= 1 in training)."""
  return wrapper.pruning_step


def apply_mask(wrapper):
  """weight <- weight * mask for each of the wrapper's weights (tfmot's own op)."""
  return wrapper.pruning_obj.weight_mask_op()


def replace_call(wrapper, call: Callable):
  """Makes `wrapper(...)` run `call` in place of the wrapper's own `call` (Keras calls `self.call`)."""
  wrapper.call = call
