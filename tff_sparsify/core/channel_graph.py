"""Which output channels of a Keras model must be pruned together.

Channel FedSparsify removes whole output channels. In a chain of layers
(Sequential) each convolution's channels are its own. In MobileNet-style
networks they are not:

- a `DepthwiseConv2D` (depth multiplier 1) filters each input channel
  separately, so its kernel's channels (axis -2), its bias and the
  BatchNormalization after it belong to the channels of the layer that
  produced its input;
- a residual addition (`Add`, and the other element-wise merges) sums two
  tensors channel by channel: a channel can output zero only if it is zero
  in every input, so the producers of the inputs are pruned together.

`trace` walks the model's graph (Keras functional nodes; a Sequential model
without one as a chain) and returns the groups of producer kernels whose
channels are tied, the tensors masked with a group's channel vector (bias,
BatchNormalization gamma and beta, depthwise kernels), the groups that can
never be pruned (those that reach the model's outputs through channel-wise
layers: the outputs' units; those summed with a tensor no prunable layer
produced, such as the model's input), and where a layer breaks the analysis.
A union-find over the groups does the tying, as tools that prune channels
of residual networks do (e.g. Torch-Pruning's dependency graph).

Producers are Dense and Conv1D/2D/3D layers with one kernel (output channels
on the last axis); the caller says which kernels those are (tfmot's prunable
weights in a wrapped model, every such layer's kernel in a stripped one).
"""

import dataclasses
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

L = tf.keras.layers

PRODUCERS = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)
# Element-wise merges: a channel of the output is zero if it is zero in every input.
MERGES = (L.Add, L.Subtract, L.Average, L.Maximum, L.Minimum, L.Multiply)
# Layers without weights that keep each channel on the last axis, computed from
# that channel alone (zero stays zero for pooling, padding and dropout; for an
# activation only if f(0) = 0, which compaction checks numerically).
CHANNELWISE = (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D,
               L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
               L.GlobalAveragePooling2D, L.GlobalAveragePooling3D, L.GlobalMaxPooling1D,
               L.GlobalMaxPooling2D, L.GlobalMaxPooling3D, L.Dropout, L.GaussianNoise,
               L.GaussianDropout, L.Activation, L.ReLU, L.LeakyReLU, L.ELU,
               L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D,
               L.Cropping2D, L.Cropping3D, L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
               L.ActivityRegularization)


@dataclasses.dataclass
class Edge:
  """One call of a layer: the layer as the model holds it, the layer it runs
  (inside a pruning wrapper), the keys of its input and output tensors."""
  layer: tf.keras.layers.Layer
  inner: tf.keras.layers.Layer
  inputs: tuple
  outputs: tuple


@dataclasses.dataclass
class ChannelGraph:
  """Tied channels of a model (`trace`).

  Attributes:
    edges: the model's layer calls in topological order.
    inputs, outputs: keys of the model's input and output tensors.
    groups: per group, its producer kernels (channels on their last axis).
    frozen: indices of the groups never pruned.
    links: (variable, group) of tensors masked by the group's channel vector
      on their last axis: biases, BatchNormalization gamma and beta.
    depthwise_links: (variable, group) of depthwise kernels, channels on axis -2.
    group_of: tensor key -> its group, or None where no group's channels are
      on the tensor's last axis.
    unlinked: names of BatchNormalization layers that follow no group of their size.
    unsupported: why the model cannot be traced (a shared layer), or ''.
  """
  edges: list
  inputs: tuple
  outputs: tuple
  groups: list
  frozen: set
  links: list
  depthwise_links: list
  group_of: dict
  unlinked: list
  unsupported: str = ''

  def channels(self, group: int) -> int:
    return int(self.groups[group][0].shape[-1])


def _keys(tensors) -> tuple:
  return tuple(id(t) for t in tf.nest.flatten(tensors))


# Keras 2 keeps a functional model's own nodes (not those of other models its
# layers took part in, such as the wrapped model a stripped layer came from)
# only in a private attribute; tests/test_internals.py pins it.
PINNED = {'keras': '2.14.0'}


def model_nodes(keras_model: tf.keras.Model) -> list:
  """The Keras nodes (layer calls) of a functional or Sequential graph model, inputs
  first, in topological order."""
  by_depth = keras_model._nodes_by_depth  # pylint: disable=protected-access
  return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def edges_of(keras_model: tf.keras.Model, inner_of: Callable = lambda layer: layer):
  """(edges, input keys, output keys) of `keras_model`, or a string saying why not.

  A functional model (or a Sequential one with an input shape) gives its
  nodes; a Sequential model without a graph is a chain.
  """
  if not getattr(keras_model, '_is_graph_network', False):
    if not isinstance(keras_model, tf.keras.Sequential):
      return f'{type(keras_model).__name__} is a subclassed model (no graph to follow)'
    edges = [Edge(layer, inner_of(layer), (('chain', i),), (('chain', i + 1),))
             for i, layer in enumerate(keras_model.layers)]
    return edges, (('chain', 0),), (('chain', len(edges)),)
  edges, seen = [], set()
  for node in model_nodes(keras_model):
    if node.is_input:
      continue
    if id(node.layer) in seen:
      return f'layer {node.layer.name} is called more than once (a shared layer)'
    seen.add(id(node.layer))
    edges.append(Edge(node.layer, inner_of(node.layer), _keys(node.keras_inputs),
                      _keys(node.outputs)))
  return edges, _keys(keras_model.inputs), _keys(keras_model.outputs)


class _Groups:
  """Union-find over group ids; a group poisoned (frozen) stays so when merged."""

  def __init__(self):
    self.parent, self.kernels, self.poisoned = [], [], []

  def new(self, kernel) -> int:
    self.parent.append(len(self.parent))
    self.kernels.append([kernel])
    self.poisoned.append(False)
    return len(self.parent) - 1

  def find(self, g: int) -> int:
    while self.parent[g] != g:
      self.parent[g] = self.parent[self.parent[g]]
      g = self.parent[g]
    return g

  def union(self, a: int, b: int) -> int:
    a, b = self.find(a), self.find(b)
    if a != b:
      a, b = min(a, b), max(a, b)
      self.parent[b] = a
      self.kernels[a].extend(self.kernels[b])
      self.poisoned[a] = self.poisoned[a] or self.poisoned[b]
    return a


class _Walk:
  """The forward walk of `trace`: one group per producer, tied and linked layer by layer."""

  def __init__(self):
    self.uf = _Groups()
    self.group_of = {}  # key -> provisional group id or None
    self.links, self.depthwise_links, self.unlinked, self.producers = [], [], [], set()

  def step(self, edge, kernels):
    """The group of `edge`'s outputs, after linking its tensors."""
    inner, uf = edge.inner, self.uf
    ins = [self.group_of.get(k) for k in edge.inputs]
    if kernels:
      self.producers.add(id(edge))
      if len(kernels) == 1 and isinstance(inner, PRODUCERS) and not isinstance(
          inner, (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)):
        out = uf.new(kernels[0])
        if getattr(inner, 'bias', None) is not None:
          self.links.append((inner.bias, out))
        return out
      for kernel in kernels:  # Pruned by their last axis; whose channels those are, unknown.
        uf.new(kernel)
      return None
    if isinstance(inner, L.DepthwiseConv2D):
      if inner.depth_multiplier != 1 or ins[0] is None:
        return None
      self.depthwise_links.append((inner.depthwise_kernel, ins[0]))
      if inner.use_bias:
        self.links.append((inner.bias, ins[0]))
      return ins[0]
    if isinstance(inner, L.BatchNormalization):
      tensors = [v for v in (inner.gamma, inner.beta) if v is not None]
      if ins[0] is None or len(tf.nest.flatten(inner.axis)) != 1 or any(
          int(v.shape[-1]) != int(uf.kernels[uf.find(ins[0])][0].shape[-1]) for v in tensors):
        self.unlinked.append(edge.layer.name)
        return None
      self.links.extend((v, ins[0]) for v in tensors)
      return ins[0]
    if isinstance(inner, MERGES):
      if any(g is None for g in ins):  # Summed with channels no group produced: frozen.
        for g in ins:
          if g is not None:
            uf.poisoned[uf.find(g)] = True
        return None
      out = ins[0]
      for g in ins[1:]:
        out = uf.union(out, g)
      return out
    if isinstance(inner, CHANNELWISE) and not inner.weights:
      return ins[0]
    return None


def trace(keras_model: tf.keras.Model, kernels_of: Callable,
          inner_of: Callable = lambda layer: layer) -> ChannelGraph:
  """The tied channels of `keras_model`.

  Args:
    keras_model: a Keras model.
    kernels_of: layer (as the model holds it) -> its prunable kernels.
    inner_of: layer -> the layer it runs (a pruning wrapper's `layer`).
  """
  found = edges_of(keras_model, inner_of)
  if isinstance(found, str):
    return ChannelGraph([], (), (), [[k] for k in _all_kernels(keras_model, kernels_of)],
                        set(), [], [], {}, [], unsupported=found)
  edges, inputs, outputs = found
  walk = _Walk()
  for edge in edges:
    out = walk.step(edge, list(kernels_of(edge.layer)))
    for k in edge.outputs:
      walk.group_of[k] = out
  uf = walk.uf
  # Groups whose channels reach an output through layers that are not
  # producers are the outputs' units: frozen.
  reaches = set(outputs)
  for edge in reversed(edges):
    if id(edge) not in walk.producers and any(k in reaches for k in edge.outputs):
      reaches.update(edge.inputs)
  frozen = {uf.find(walk.group_of[k]) for k in reaches if walk.group_of.get(k) is not None}
  frozen |= {uf.find(g) for g in range(len(uf.parent)) if uf.poisoned[g]}
  roots = sorted({uf.find(g) for g in range(len(uf.parent))})
  index = {root: i for i, root in enumerate(roots)}
  canon = lambda g: None if g is None else index[uf.find(g)]
  return ChannelGraph(
      edges=edges, inputs=inputs, outputs=outputs, groups=[uf.kernels[r] for r in roots],
      frozen={index[r] for r in frozen},
      links=[(v, canon(g)) for v, g in walk.links],
      depthwise_links=[(v, canon(g)) for v, g in walk.depthwise_links],
      group_of={k: canon(g) for k, g in walk.group_of.items()}, unlinked=walk.unlinked)


def _all_kernels(keras_model, kernels_of) -> list:
  return [k for layer in keras_model.layers for k in kernels_of(layer)]


def stripped_kernels(layer) -> Sequence[tf.Variable]:
  """The producer kernel of a layer of a model without pruning wrappers."""
  if isinstance(layer, PRODUCERS) and getattr(layer, 'kernel', None) is not None:
    return [layer.kernel]
  return []


def channel_alive(tensor, axis: int = -1):
  """Per channel on `axis` of `tensor` (NumPy), whether any value is non-zero."""
  tensor = np.moveaxis(np.asarray(tensor), axis, -1)
  return np.any(tensor.reshape(-1, tensor.shape[-1]) != 0, axis=0)

