"""A channel-pruned Keras model, rebuilt physically smaller.

Channel FedSparsify (`sparsity_granularity='channel'`) zeroes whole output
channels of convolutions and units of dense layers, with their biases, the
gamma and beta of a BatchNormalization that follows and the channels of a
DepthwiseConv2D that filters them: such a channel outputs exactly zero.
`compact_model` removes those channels: fewer filters and units, the next
layer's input channels (through pooling, dropout, Flatten, depthwise
convolutions and residual additions) and the BatchNormalization's four
vectors sliced to match. Channels tied by a residual addition are removed
where none of the tied layers uses them (`core.channel_graph`). The result
is an ordinary dense Keras model (functional), faster on every runtime, and
`compact_model` checks that it computes the masked model's outputs (1e-5).

Sequential and functional models of Conv2D, Dense, DepthwiseConv2D
(depth multiplier 1), BatchNormalization, Flatten, element-wise merges,
Concatenate and channel-wise layers without weights (pooling, dropout,
activations, padding) are compacted; any other layer is kept as it is
where no removed channel reaches it, and otherwise is a `CompactError`
naming it.
"""

import numpy as np
import tensorflow as tf

from tff_sparsify.core import channel_graph

MAX_ABS_DIFF = 1e-5
L = tf.keras.layers


class CompactError(ValueError):
  """A model `compact_model` cannot rebuild, or whose rebuild changes the outputs."""


def _rebuilt(layer, **changes):
  config = layer.get_config()
  config.update(changes)
  return type(layer).from_config(config)


def _kept_channels(graph) -> list:
  """Per group, the indices of its channels that are not dead, or None (keep all).

  A channel is dead where every kernel of its group and every tensor linked
  to it (bias, BatchNormalization gamma and beta, depthwise kernel) is zero
  there. Frozen groups (the outputs' units) keep all; a group never keeps
  fewer than one channel.
  """
  alive = [np.zeros(graph.channels(g), bool) for g in range(len(graph.groups))]
  for g, kernels in enumerate(graph.groups):
    for kernel in kernels:
      alive[g] |= channel_graph.channel_alive(kernel.numpy())
  for variable, g in graph.links:
    alive[g] |= channel_graph.channel_alive(variable.numpy())
  for variable, g in graph.depthwise_links:
    alive[g] |= channel_graph.channel_alive(variable.numpy(), axis=-2)
  found = []
  for g, live in enumerate(alive):
    if g in graph.frozen or live.all():
      found.append(None)
    else:
      found.append(np.flatnonzero(live) if live.any() else np.arange(1))
  return found


def _take(values, keep, axis):
  return values if keep is None else np.take(values, keep, axis=axis)


def _same_keep(keeps, layer):
  first = keeps[0]
  for keep in keeps[1:]:
    if (first is None) != (keep is None) or (first is not None and not np.array_equal(
        first, keep)):
      raise CompactError(f'layer {layer.name}: its inputs keep different channels')
  return first


def _call(layer, inputs):
  return layer(inputs[0] if len(inputs) == 1 else list(inputs))


def _compact_edge(edge, tensors, keeps, group_keep, graph):
  """(new output tensors, their kept channels) of one layer call."""
  layer = edge.layer
  if type(layer) in (L.Conv2D, L.Dense) and getattr(layer, 'groups', 1) == 1:
    out_group = graph.group_of.get(edge.outputs[0])
    out = None if out_group is None else group_keep[out_group]
    kernel = _take(_take(layer.kernel.numpy(), keeps[0], -2), out, -1)
    size = kernel.shape[-1]
    new = _rebuilt(layer, **(dict(filters=size) if isinstance(layer, L.Conv2D)
                             else dict(units=size)))
    result = _call(new, tensors)
    new.set_weights([kernel] + ([_take(layer.bias.numpy(), out, 0)] if layer.use_bias else []))
    return result, out
  if type(layer) is L.DepthwiseConv2D and layer.depth_multiplier == 1:
    new = _rebuilt(layer)
    result = _call(new, tensors)
    new.set_weights([_take(layer.depthwise_kernel.numpy(), keeps[0], -2)] + (
        [_take(layer.bias.numpy(), keeps[0], 0)] if layer.use_bias else []))
    return result, keeps[0]
  if isinstance(layer, L.BatchNormalization) and len(tf.nest.flatten(layer.axis)) == 1:
    new = _rebuilt(layer)
    result = _call(new, tensors)
    new.set_weights([_take(w.numpy(), keeps[0], 0) for w in layer.weights])
    return result, keeps[0]
  if isinstance(layer, L.Flatten):
    keep = keeps[0]
    if keep is not None:
      shape = layer.input_shape[1:]
      positions = int(np.prod(shape[:-1]))
      keep = (np.arange(positions)[:, None] * shape[-1] + keep[None, :]).ravel()
    return _call(_rebuilt(layer), tensors), keep
  if isinstance(layer, channel_graph.MERGES):
    return _call(_rebuilt(layer), tensors), _same_keep(keeps, layer)
  if isinstance(layer, L.Concatenate) and layer.axis in (-1, len(layer.input_shape[0]) - 1):
    keep = None
    if any(k is not None for k in keeps):
      sizes = [shape[-1] for shape in layer.input_shape]
      offsets = np.cumsum([0] + sizes[:-1])
      keep = np.concatenate([(np.arange(s) if k is None else k) + o
                             for k, s, o in zip(keeps, sizes, offsets)])
    return _call(_rebuilt(layer), tensors), keep
  if isinstance(layer, channel_graph.CHANNELWISE) and not layer.weights:
    return _call(_rebuilt(layer), tensors), keeps[0]
  if all(k is None for k in keeps):  # No removed channel reaches it: kept as it is.
    new = _rebuilt(layer)
    result = _call(new, tensors)
    new.set_weights(layer.get_weights())
    return result, None
  raise CompactError(f'layer {layer.name}: {type(layer).__name__} is not supported where '
                     'removed channels reach it')


def compact_model(model: tf.keras.Model, check_batch_size: int = 8, seed: int = 0):
  """(the physically smaller model, max |compact - model| on random inputs).

  Args:
    model: a Sequential or functional Keras model without pruning wrappers
      (`tfmot.sparsity.keras.strip_pruning`), channel-pruned.

  Raises:
    CompactError: a layer it cannot rebuild where removed channels reach it,
      a shared layer, or outputs that differ by more than `MAX_ABS_DIFF` (a
      removed channel was not dead: e.g. a bias or a BatchNormalization beta
      left non-zero, or an activation with f(0) != 0).
  """
  if not isinstance(model, tf.keras.Sequential) and not getattr(
      model, '_is_graph_network', False):
    raise CompactError('compact export takes a Sequential or functional Keras model, got '
                       f'{type(model).__name__} (a subclassed model has no graph to follow)')
  graph = channel_graph.trace(model, channel_graph.stripped_kernels)
  if graph.unsupported:
    raise CompactError(f'compact export cannot follow the model\'s channels: '
                       f'{graph.unsupported}')
  group_keep = _kept_channels(graph)
  input_shapes = [tuple(shape[1:]) for shape in _input_shapes(model)]
  new_inputs = [tf.keras.Input(shape) for shape in input_shapes]
  tensors = dict(zip(graph.inputs, new_inputs))
  keeps = dict.fromkeys(graph.inputs)
  for edge in graph.edges:
    if isinstance(edge.layer, L.InputLayer):
      continue
    result, keep = _compact_edge(edge, [tensors[k] for k in edge.inputs],
                                 [keeps[k] for k in edge.inputs], group_keep, graph)
    for key, tensor in zip(edge.outputs, tf.nest.flatten(result)):
      tensors[key], keeps[key] = tensor, keep
  for key in graph.outputs:
    if keeps[key] is not None:
      raise CompactError('the model\'s outputs would lose channels (an output layer pruned)')
  outputs = [tensors[k] for k in graph.outputs]
  compact = tf.keras.Model(new_inputs[0] if len(new_inputs) == 1 else new_inputs,
                           outputs[0] if len(outputs) == 1 else outputs,
                           name=f'{model.name}_compact')
  rng = np.random.default_rng(seed)
  inputs = [rng.random((check_batch_size,) + shape, np.float32) for shape in input_shapes]
  inputs = inputs[0] if len(inputs) == 1 else inputs
  ours = tf.nest.flatten(compact(inputs, training=False))
  theirs = tf.nest.flatten(model(inputs, training=False))
  max_abs_diff = max(float(np.max(np.abs(a.numpy() - b.numpy()))) for a, b in zip(ours, theirs))
  if not max_abs_diff <= MAX_ABS_DIFF:
    raise CompactError(f'the compact model\'s outputs differ from the masked model\'s by '
                       f'{max_abs_diff:.3g} (allowed {MAX_ABS_DIFF}): a removed channel was '
                       'not dead (is the model channel-pruned?)')
  return compact, max_abs_diff


def _input_shapes(model):
  shapes = model.input_shape
  return shapes if isinstance(shapes, list) else [shapes]
