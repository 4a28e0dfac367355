"""A channel-pruned Keras model, rebuilt physically smaller.

Channel FedSparsify (`sparsity_granularity='channel'`) zeroes whole output
channels of convolutions and units of dense layers, with their biases and the
gamma and beta of a BatchNormalization that follows: such a channel outputs
exactly zero. `compact_model` removes those channels: fewer filters and
units, the next layer's input channels (through pooling, dropout and
Flatten) and the BatchNormalization's four vectors sliced to match. The
result is an ordinary dense Keras model, faster on every runtime, and
`compact_model` checks that it computes the masked model's outputs (1e-5).

Sequential models of Conv2D, Dense, BatchNormalization, Flatten and
weightless layers (pooling, dropout, activations) are supported; anything
else is a `CompactError` naming the layer.
"""

import numpy as np
import tensorflow as tf

MAX_ABS_DIFF = 1e-5
_WEIGHTLESS = (tf.keras.layers.MaxPool2D, tf.keras.layers.AveragePooling2D,
               tf.keras.layers.Dropout, tf.keras.layers.Activation, tf.keras.layers.ReLU,
               tf.keras.layers.GlobalAveragePooling2D, tf.keras.layers.GlobalMaxPooling2D)


class CompactError(ValueError):
  """A model `compact_model` cannot rebuild, or whose rebuild changes the outputs."""


def _live_channels(layer, is_output: bool) -> np.ndarray:
  """Indices of the output channels of a Conv2D/Dense layer that are not dead."""
  kernel = layer.kernel.numpy()
  alive = np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)
  if layer.use_bias:
    alive |= layer.bias.numpy() != 0
  if is_output or not alive.any():  # Keep the outputs; never an empty layer.
    alive[:] = True
  return np.flatnonzero(alive)


def _rebuilt(layer, **changes):
  config = layer.get_config()
  config.update(changes)
  return type(layer).from_config(config)


def compact_model(model: tf.keras.Model, check_batch_size: int = 8, seed: int = 0):
  """(the physically smaller model, max |compact - model| on random inputs).

  Args:
    model: a Sequential Keras model without pruning wrappers
      (`tfmot.sparsity.keras.strip_pruning`), channel-pruned.

  Raises:
    CompactError: an unsupported layer, or outputs that differ by more than
      `MAX_ABS_DIFF` (a removed channel was not dead: e.g. a bias or a
      BatchNormalization beta left non-zero).
  """
  if not isinstance(model, tf.keras.Sequential):
    raise CompactError(f'compact export takes a Sequential model, got {type(model).__name__}')
  layers = model.layers
  weighted = [i for i, layer in enumerate(layers)
              if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense))]
  new_layers, weights = [], []
  keep = None  # Indices kept along the last axis of the current activations.
  for i, layer in enumerate(layers):
    if isinstance(layer, (tf.keras.layers.Conv2D, tf.keras.layers.Dense)):
      if type(layer) not in (tf.keras.layers.Conv2D, tf.keras.layers.Dense):
        raise CompactError(f'layer {layer.name}: {type(layer).__name__} is not supported')
      out = _live_channels(layer, i == weighted[-1])
      kernel = layer.kernel.numpy()
      if keep is not None:
        kernel = np.take(kernel, keep, axis=-2)
      size = dict(filters=len(out)) if isinstance(layer, tf.keras.layers.Conv2D) else dict(
          units=len(out))
      new_layers.append(_rebuilt(layer, **size))
      weights.append([kernel[..., out]] + ([layer.bias.numpy()[out]] if layer.use_bias else []))
      keep = out
    elif isinstance(layer, tf.keras.layers.BatchNormalization):
      new_layers.append(_rebuilt(layer))
      weights.append([w.numpy() if keep is None else w.numpy()[keep] for w in layer.weights])
    elif isinstance(layer, tf.keras.layers.Flatten):
      new_layers.append(_rebuilt(layer))
      weights.append([])
      if keep is not None:
        shape = layer.input_shape[1:]
        positions = int(np.prod(shape[:-1]))
        keep = (np.arange(positions)[:, None] * shape[-1] + keep[None, :]).ravel()
    elif isinstance(layer, _WEIGHTLESS) or not layer.weights:
      new_layers.append(_rebuilt(layer))
      weights.append([])
    else:
      raise CompactError(f'layer {layer.name}: {type(layer).__name__} is not supported')
  compact = tf.keras.Sequential(
      [tf.keras.layers.InputLayer(model.input_shape[1:])] + new_layers,
      name=f'{model.name}_compact')
  for layer, values in zip(compact.layers, weights):
    if values:
      layer.set_weights(values)
  inputs = np.random.default_rng(seed).random((check_batch_size,) + model.input_shape[1:],
                                              np.float32)
  max_abs_diff = float(np.max(np.abs(compact(inputs, training=False).numpy()
                                     - model(inputs, training=False).numpy())))
  if not max_abs_diff <= MAX_ABS_DIFF:
    raise CompactError(f'the compact model\'s outputs differ from the masked model\'s by '
                       f'{max_abs_diff:.3g} (allowed {MAX_ABS_DIFF}): a removed channel was '
                       'not dead (is the model channel-pruned?)')
  return compact, max_abs_diff
