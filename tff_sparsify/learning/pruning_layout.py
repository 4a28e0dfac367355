"""Where tfmot's pruning wrappers keep their variables in TFF's `ModelWeights`.

A model from `tff.learning.models.from_keras_model` of a Keras model wrapped
by `prune_low_magnitude` (`learning.pruning.wrap_for_pruning`) holds, per
wrapper, a kernel among its trainable variables and a mask and a
`pruning_step` among its non-trainable ones. `PruningLayout` records their
indices, so that TFF computations, which see the weights as flat tuples,
find the masks of the kernels they train, prune and send.

With `granularity='channel'` the unit pruned is an output channel: the
kernels' masks are channel masks (`masks.channel_masks`), and the tensors
that belong to a kernel's output channels (its layer's bias; the gamma and
beta of a BatchNormalization that follows it) are masked with the kernel's
channel vector (`channel_links`), so that a pruned channel outputs exactly
zero and `deploy.compact` can remove it. In MobileNet-style networks the
channels are followed through the model's graph (`core.channel_graph`): a
DepthwiseConv2D's kernel and bias belong to the channels of the layer
before it (`channel_depthwise_links`), and the kernels whose outputs a
residual addition sums are pruned together (`channel_groups`).

`statistics` are the model's other floating-point non-trainable variables:
BatchNormalization's moving mean and variance, which Keras updates in the
forward pass and TFF neither trains nor aggregates. The clients send how
theirs moved and the server sets the weighted mean (`learning.statistics`).
"""

import dataclasses
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import _tff_internals as tffi
from tff_sparsify import _tfmot_internals as tfmoti
from tff_sparsify.core import channel_graph
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
    granularity: 'weight' or 'channel' (what `placed_masks` prunes).
    channel_links: (index in `trainable`, position in `prunable`) of each
      tensor masked by that kernel's channel vector in channel granularity.
    channel_frozen: positions in `prunable` of kernels whose channels are
      never pruned: the model's output layer (its units are the outputs).
    channel_unlinked: names of BatchNormalization layers that follow no
      prunable kernel of their size (channel granularity refuses the model).
    channel_groups: positions in `prunable` whose channels are pruned together
      (a residual addition's inputs; `core.channel_graph`), a partition;
      () means one group per kernel.
    channel_depthwise_links: (index in `trainable`, position in `prunable`,
      shape) of depthwise kernels (channels on axis -2) masked by that
      kernel's channel vector: a DepthwiseConv2D after it.
    channel_unsupported: why channel granularity cannot trace the model, or ''.
    statistics: indices in `non_trainable` of the floating-point variables
      that are not tfmot's (BatchNormalization's moving mean and variance):
      aggregated like the model update (`learning.statistics`).
  """
  num_trainable: int
  prunable: tuple[int, ...]
  masks: tuple[int, ...]
  steps: tuple[int, ...]
  costs: Optional[tuple[float, ...]] = None
  granularity: str = 'weight'
  channel_links: tuple[tuple[int, int], ...] = ()
  channel_frozen: tuple[int, ...] = ()
  channel_unlinked: tuple[str, ...] = ()
  statistics: tuple[int, ...] = ()
  channel_groups: tuple[tuple[int, ...], ...] = ()
  channel_depthwise_links: tuple[tuple[int, int, tuple[int, ...]], ...] = ()
  channel_unsupported: str = ''

  def check_pruning(self):
    """ValueError for a model with nothing to prune."""
    if not self.prunable:
      raise ValueError(
          'model_fn must return a model whose Keras layers are wrapped for '
          'pruning (tff_sparsify.learning.pruning.wrap_for_pruning); found no '
          'prune_low_magnitude layer with weights to prune')

  def statistics_list(self, non_trainable) -> list:
    return [non_trainable[i] for i in self.statistics]

  def check_placement(self, placement: str):
    """ValueError for a placement this model cannot take."""
    if placement == 'compute' and self.costs is None:
      raise ValueError("sparsity_placement='compute' needs a built Keras model with known "
                       'output sizes (e.g. an InputLayer of fixed shape) to weigh its '
                       'layers, got one without')

  def check_granularity(self):
    """ValueError for a model channel granularity cannot prune."""
    if self.granularity != 'channel':
      return
    if self.channel_unsupported:
      raise ValueError("sparsity_granularity='channel' cannot follow the model's channels: "
                       f'{self.channel_unsupported}')
    if self.channel_unlinked:
      raise ValueError("sparsity_granularity='channel' needs every BatchNormalization to "
                       'follow a prunable layer with its number of channels; '
                       f'{", ".join(self.channel_unlinked)} do not')
    if len(self.channel_frozen) == len(self.prunable):
      raise ValueError("sparsity_granularity='channel' needs a prunable layer before the "
                       'output layer, got none')

  def placed_masks(self, trainable, sparsity, placement: str, channel_multiple: int = 1) -> list:
    """Masks of the prunable weights in `trainable` at `sparsity`.

    Weight granularity: `masks.placed_magnitude_masks`; channel:
    `masks.channel_masks` (the output layer's channels frozen, the kept
    channels rounded to a multiple of `channel_multiple`).
    """
    if self.granularity == 'channel':
      return masks_lib.channel_masks(self.prunable_list(trainable), sparsity, placement,
                                     frozen=self.channel_frozen, multiple=channel_multiple,
                                     groups=self.channel_groups or None)
    return masks_lib.placed_magnitude_masks(
        self.prunable_list(trainable), sparsity, placement, costs=self.costs)

  def masks_by_trainable(self, non_trainable) -> list:
    """Per trainable tensor, its mask taken from `non_trainable`, or None.

    In channel granularity a linked tensor (bias, BatchNormalization gamma
    and beta) gets its kernel's channel vector, a depthwise kernel that
    vector along its axis -2.
    """
    by_index = dict(zip(self.prunable, self.masks))
    found = [non_trainable[by_index[i]] if i in by_index else None
             for i in range(self.num_trainable)]
    if self.granularity == 'channel':
      for index, position in self.channel_links:
        found[index] = masks_lib.channel_vector(non_trainable[self.masks[position]])
      for index, position, shape in self.channel_depthwise_links:
        vector = masks_lib.channel_vector(non_trainable[self.masks[position]])
        found[index] = tf.broadcast_to(vector[:, tf.newaxis], shape)
    return found

  def prune_variables(self, trainable, non_trainable, sparsity, placement: str,
                      channel_multiple: int = 1) -> list:
    """Prunes the variables of a model in place, as the server's mask step does.

    The masks of `placed_masks` at `sparsity` are assigned to
    `non_trainable`'s mask variables and the `trainable` variables (with
    their linked tensors) are masked by them. For benchmarks and tests that
    prune a model outside a federated run. Returns the masks.
    """
    found = self.placed_masks([v.read_value() for v in trainable], sparsity, placement,
                              channel_multiple=channel_multiple)
    for i, mask in zip(self.masks, found):
      non_trainable[i].assign(mask)
    masked = masks_lib.apply_masks([v.read_value() for v in trainable],
                                   self.masks_by_trainable([v.read_value() for v in non_trainable]))
    for variable, value in zip(trainable, masked):
      variable.assign(value)
    return found

  def mask_list(self, non_trainable) -> list:
    return [non_trainable[i] for i in self.masks]

  def prunable_list(self, trainable) -> list:
    return [trainable[i] for i in self.prunable]


def pruning_layout(model: tff.learning.models.VariableModel,
                   granularity: str = 'weight') -> PruningLayout:
  """Finds the tfmot wrappers' variables in a `from_keras_model` model.

  A model without wrappers has an empty layout (nothing prunable); the
  builders that prune refuse it (`PruningLayout.check_pruning`).

  Raises:
    TypeError: if `model` does not wrap a Keras model.
  """
  # TFF 0.87 keeps the wrapped Keras model in a private attribute only.
  keras_model = tffi.keras_model_of(model)
  if not isinstance(keras_model, tf.keras.Model):
    raise TypeError(
        'model_fn must return tff.learning.models.from_keras_model(...) of a '
        f'Keras model, got {type(model).__name__}')
  layers = pruning.wrappers(keras_model)
  trainable = {v.ref(): i for i, v in enumerate(model.trainable_variables)}
  non_trainable = {v.ref(): i for i, v in enumerate(model.non_trainable_variables)}
  return PruningLayout(
      num_trainable=len(model.trainable_variables),
      prunable=tuple(trainable[w.ref()] for w in pruning.prunable_weights(keras_model)),
      masks=tuple(non_trainable[m.ref()] for m in pruning.mask_variables(keras_model)),
      steps=tuple(non_trainable[tfmoti.pruning_step(layer).ref()] for layer in layers),
      costs=_costs(keras_model), granularity=granularity,
      statistics=_statistics(model, layers), **_channel_structure(keras_model, trainable))


def _statistics(model, wrapper_layers) -> tuple[int, ...]:
  """Indices of the floating-point non-trainable variables that tfmot does not own."""
  owned = {tfmoti.pruning_step(layer).ref() for layer in wrapper_layers}
  owned.update(v.ref() for layer in wrapper_layers for _, mask, threshold in tfmoti.pruning_vars(layer)
               for v in (mask, threshold))
  return tuple(i for i, v in enumerate(model.non_trainable_variables)
               if v.ref() not in owned and v.dtype.is_floating)


def _channel_structure(keras_model, trainable_index):
  """Channel groups, links and frozen positions of the model (`core.channel_graph.trace`).

  Returns a dict of `PruningLayout`'s channel fields. Kernels the graph walk
  does not reach (inside a nested model) are groups of their own.
  """
  position = {w.ref(): p for p, w in enumerate(pruning.prunable_weights(keras_model))}

  def kernels_of(layer):
    if isinstance(layer, pruning.PruneLowMagnitude):  # tfmot wraps weightless layers too.
      return [w for w, _, _ in tfmoti.pruning_vars(layer)]
    return []

  graph = channel_graph.trace(
      keras_model, kernels_of,
      inner_of=lambda layer: layer.layer if isinstance(layer, pruning.PruneLowMagnitude)
      else layer)
  groups = [tuple(position[k.ref()] for k in group) for group in graph.groups]
  reached = {p for group in groups for p in group}
  groups += [(p,) for p in sorted(set(position.values()) - reached)]
  leader = lambda g: groups[g][0]
  links = tuple((trainable_index[v.ref()], leader(g)) for v, g in graph.links
                if v.ref() in trainable_index)
  depthwise = tuple((trainable_index[v.ref()], leader(g), tuple(int(d) for d in v.shape))
                    for v, g in graph.depthwise_links if v.ref() in trainable_index)
  frozen = tuple(sorted(p for g in graph.frozen for p in groups[g]))
  return dict(channel_groups=tuple(groups), channel_links=links,
              channel_depthwise_links=depthwise, channel_frozen=frozen,
              channel_unlinked=tuple(graph.unlinked),
              channel_unsupported=graph.unsupported)


def _costs(keras_model) -> Optional[tuple[float, ...]]:
  try:
    return tuple(pruning.macs_per_weight(keras_model))
  except (AttributeError, ValueError):  # Keras: layer never called; unknown sizes.
    return None


def layout_from_model_fn(model_fn, granularity: str = 'weight') -> PruningLayout:
  # A throwaway graph keeps the probe model's variables out of the default one.
  with tf.Graph().as_default():
    return pruning_layout(model_fn(), granularity)
