"""Where tfmot's pruning wrappers keep their variables in TFF's `ModelWeights`.

A model from `tff.learning.models.from_keras_model` of a Keras model wrapped
by `prune_low_magnitude` (`learning.pruning.wrap_for_pruning`) holds, per
wrapper, a kernel among its trainable variables and a mask and a
`pruning_step` among its non-trainable ones. `PruningLayout` records their
indices, so that TFF computations, which see the weights as flat tuples,
find the masks of the kernels they train, prune and send.
"""

import dataclasses
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.core import masks as masks_lib
from tff_sparsify.learning import pruning


@dataclasses.dataclass(frozen=True)
class PruningLayout:
  """Where the tfmot pruning variables sit in `tff.learning.models.ModelWeights`.

  Attributes:
    num_trainable: number of trainable tensors.
    prunable: indices in `trainable` of the weights the wrappers prune.
    masks: indices in `non_trainable` of their masks (same order).
    steps: indices in `non_trainable` of the wrappers' `pruning_step`.
    costs: multiply-adds per example of one weight, per prunable weight
      (`pruning.macs_per_weight`), or None where the Keras model's output
      shapes are not known; `compute` placement needs them.
  """
  num_trainable: int
  prunable: tuple[int, ...]
  masks: tuple[int, ...]
  steps: tuple[int, ...]
  costs: Optional[tuple[float, ...]] = None

  def check_placement(self, placement: str):
    """ValueError for a placement this model cannot take."""
    if placement == 'compute' and self.costs is None:
      raise ValueError("sparsity_placement='compute' needs a built Keras model with known "
                       'output sizes (e.g. an InputLayer of fixed shape) to weigh its '
                       'layers, got one without')

  def placed_masks(self, trainable, sparsity, placement: str) -> list:
    """`masks.placed_magnitude_masks` of the prunable weights in `trainable`."""
    return masks_lib.placed_magnitude_masks(
        self.prunable_list(trainable), sparsity, placement, costs=self.costs)

  def masks_by_trainable(self, non_trainable) -> list:
    """Per trainable tensor, its mask taken from `non_trainable`, or None."""
    by_index = dict(zip(self.prunable, self.masks))
    return [non_trainable[by_index[i]] if i in by_index else None
            for i in range(self.num_trainable)]

  def mask_list(self, non_trainable) -> list:
    return [non_trainable[i] for i in self.masks]

  def prunable_list(self, trainable) -> list:
    return [trainable[i] for i in self.prunable]


def pruning_layout(model: tff.learning.models.VariableModel) -> PruningLayout:
  """Finds the tfmot wrappers' variables in a `from_keras_model` model.

  Raises:
    TypeError: if `model` does not wrap a Keras model.
    ValueError: if the Keras model has no `prune_low_magnitude` layer.
  """
  # TFF 0.87 keeps the wrapped Keras model in a private attribute only.
  keras_model = getattr(model, '_keras_model', None)
  if not isinstance(keras_model, tf.keras.Model):
    raise TypeError(
        'model_fn must return tff.learning.models.from_keras_model(...) of a '
        f'Keras model, got {type(model).__name__}')
  layers = pruning.wrappers(keras_model)
  if not layers:
    raise ValueError(
        'model_fn must return a model whose Keras layers are wrapped for '
        'pruning (tff_sparsify.learning.pruning.wrap_for_pruning); found no '
        'prune_low_magnitude layer')
  trainable = {v.ref(): i for i, v in enumerate(model.trainable_variables)}
  non_trainable = {v.ref(): i for i, v in enumerate(model.non_trainable_variables)}
  return PruningLayout(
      num_trainable=len(model.trainable_variables),
      prunable=tuple(trainable[w.ref()] for w in pruning.prunable_weights(keras_model)),
      masks=tuple(non_trainable[m.ref()] for m in pruning.mask_variables(keras_model)),
      steps=tuple(non_trainable[layer.pruning_step.ref()] for layer in layers),
      costs=_costs(keras_model))


def _costs(keras_model) -> Optional[tuple[float, ...]]:
  try:
    return tuple(pruning.macs_per_weight(keras_model))
  except (AttributeError, ValueError):  # Keras: layer never called; unknown sizes.
    return None


def layout_from_model_fn(model_fn) -> PruningLayout:
  # A throwaway graph keeps the probe model's variables out of the default one.
  with tf.Graph().as_default():
    return pruning_layout(model_fn())
