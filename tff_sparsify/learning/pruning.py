"""tfmot glue: masks live in `prune_low_magnitude` wrappers' mask variables.

FedSparsify decides masks at the server (or by majority vote), not inside
Keras, so the wrappers are given `ServerControlledSchedule`, which never asks
tfmot to recompute a mask: in training the wrapper then only multiplies each
prunable weight by its mask (`weight * mask`) before the forward pass.
Two tfmot behaviours the learning process must handle (see BUILD_NOTES.md):
- the wrapper asserts `pruning_step >= 1` in training and TFF runs no Keras
  callbacks, so the server sets the step itself (`set_pruning_step`);
- the mask is applied before each forward pass, so the weights are dense
  again after the last optimizer step: apply the masks once more
  (`apply_wrapper_masks`) before a model leaves the client.

A wrapper in training also runs, at every step, a step increment, that
assert, a `tf.cond` over the schedule and the `weight * mask` assignment:
on the FashionMNIST FC that doubles the time of a client's local epoch
(BUILD_NOTES.md). A training loop that masks the weights itself after every
optimizer step needs none of it and can call `skip_wrapper_updates`.
"""

import inspect

from typing import Sequence

import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import _tfmot_internals as tfmoti

# tfmot 0.7.5 does not export the wrapper class in its public API.
PruneLowMagnitude = tfmoti.PruneLowMagnitude


class ServerControlledSchedule(tfmot.sparsity.keras.PruningSchedule):
  """A tfmot schedule that never prunes: masks are set from outside."""

  def __call__(self, step):
    return tf.constant(False), tf.constant(0.0)

  def get_config(self):
    return {'class_name': self.__class__.__name__, 'config': {}}


class SupportedLayersPolicy(tfmot.sparsity.keras.PruningPolicy):
  """tfmot's pruning policy: wrap the layers tfmot's prune registry supports, leave the rest.

  Without a policy `prune_low_magnitude` refuses a whole model for one
  layer it does not know (a user's custom layer, say); with it those layers
  stay as they are, unpruned. Nested Sequential and functional models are
  searched (tfmot clones them).
  """

  def allow_pruning(self, layer):
    return (tfmoti.registry_supports(layer)
            or isinstance(layer, tfmot.sparsity.keras.PrunableLayer))

  def ensure_model_supports_pruning(self, model):
    del model  # Any Sequential or functional model: unsupported layers are left alone.


def wrap_for_pruning(model: tf.keras.Model) -> tf.keras.Model:
  """Wraps every layer of `model` that tfmot can prune in `prune_low_magnitude`."""
  return tfmot.sparsity.keras.prune_low_magnitude(
      model, pruning_schedule=ServerControlledSchedule(),
      pruning_policy=SupportedLayersPolicy())


def wrappers(model: tf.keras.Model) -> list[PruneLowMagnitude]:
  """The `prune_low_magnitude` wrappers of `model`, nested models included (tfmot's own search)."""
  return tfmoti.collect_wrappers(model)


def prunable_weights(model: tf.keras.Model) -> list[tf.Variable]:
  return [w for layer in wrappers(model) for w, _, _ in tfmoti.pruning_vars(layer)]


def mask_variables(model: tf.keras.Model) -> list[tf.Variable]:
  return [m for layer in wrappers(model) for _, m, _ in tfmoti.pruning_vars(layer)]


def set_masks(model: tf.keras.Model, masks: Sequence[tf.Tensor]):
  variables = mask_variables(model)
  if len(variables) != len(masks):
    raise ValueError(
        f'masks must have one tensor per prunable weight ({len(variables)}), '
        f'got {len(masks)}')
  for variable, mask in zip(variables, masks):
    variable.assign(tf.cast(mask, variable.dtype))


def set_pruning_step(model: tf.keras.Model, step: int):
  """Sets every wrapper's `pruning_step` (tfmot requires >= 1 in training)."""
  for layer in wrappers(model):
    tfmoti.pruning_step(layer).assign(tf.cast(step, tf.int64))


def skip_wrapper_updates(model: tf.keras.Model):
  """Makes the wrappers of `model` call their layer without per-step updates.

  The wrappers then run only the wrapped layer's own `call` (passing on
  `training` where it takes it), in training too: no step increment, no
  assert, no schedule `tf.cond`, no `weight * mask` assignment. The caller
  takes over the masking: the weights must already be masked before each
  forward pass (as FedSparsify's client work does after every optimizer
  step). Only this model instance is changed; masks and steps stay variables.
  """
  for layer in wrappers(model):
    inner = layer.layer
    takes_training = 'training' in inspect.getfullargspec(inner.call).args

    def call(inputs, training=None, _inner=inner, _takes=takes_training, **kwargs):
      if _takes:
        kwargs['training'] = training
      return _inner.call(inputs, **kwargs)

    tfmoti.replace_call(layer, call)


def apply_wrapper_masks(model: tf.keras.Model):
  """weight <- weight * mask, with tfmot's own op (as `UpdatePruningStep`)."""
  for layer in wrappers(model):
    tfmoti.apply_mask(layer)


def macs_per_weight(model: tf.keras.Model) -> list[float]:
  """Multiply-adds per example of one weight, per prunable weight of `model`.

  A weight of a layer is used once per output position: 1 for a Dense
  kernel on a flat input, H x W for a 2-D convolution's kernel. This is the
  cost `masks.compute_layer_sparsities` places the sparsity by. Needs a
  built model (known output shapes).
  """
  costs = []
  for layer in wrappers(model):
    shape = layer.layer.output_shape
    if isinstance(shape, list):
      raise ValueError(f'{layer.name}: layers with several outputs are not supported')
    positions = 1
    for dim in shape[1:-1]:
      if dim is None:
        raise ValueError(f'{layer.name}: output shape {shape} has an unknown spatial size')
      positions *= dim
    costs.extend(float(positions) for _ in tfmoti.pruning_vars(layer))
  return costs
