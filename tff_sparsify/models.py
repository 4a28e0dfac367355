"""The paper's models (Stripelis et al., Section 4, "Federated Models").

- FashionMNIST: a 2-layer fully-connected network, 118,282 trainable
  parameters: Flatten(28x28) -> Dense 128 relu -> Dense 128 relu -> Dense 10.
- CIFAR-10: a 6-layer CNN, 1,609,930 trainable parameters:
  Conv64-Conv64-MaxPool-BN-Conv128-Conv128-MaxPool-BN-Conv128-Conv128-MaxPool-
  Flatten-Dense512-Dropout0.2-Dense10 (3x3 kernels, same padding, relu).

Both output logits (use `from_logits=True`).
"""

import collections

import tensorflow as tf

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)

INPUT_SHAPES = collections.OrderedDict(
    fashion_mnist=(28, 28), cifar10=(32, 32, 3)
)


def fashion_mnist_fc(seed: int = 0) -> tf.keras.Model:
  init = tf.keras.initializers.GlorotUniform
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=INPUT_SHAPES['fashion_mnist']),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(128, activation='relu', kernel_initializer=init(seed)),
      tf.keras.layers.Dense(128, activation='relu', kernel_initializer=init(seed + 1)),
      tf.keras.layers.Dense(10, kernel_initializer=init(seed + 2)),
  ], name='fashion_mnist_fc')


def cifar10_cnn(seed: int = 0) -> tf.keras.Model:
  layers = tf.keras.layers
  init = tf.keras.initializers.GlorotUniform
  counter = iter(range(seed, seed + 100))

  def conv(filters):
    return layers.Conv2D(
        filters, 3, padding='same', activation='relu',
        kernel_initializer=init(next(counter)),
    )

  return tf.keras.Sequential([
      layers.InputLayer(input_shape=INPUT_SHAPES['cifar10']),
      conv(64), conv(64), layers.MaxPool2D(), layers.BatchNormalization(),
      conv(128), conv(128), layers.MaxPool2D(), layers.BatchNormalization(),
      conv(128), conv(128), layers.MaxPool2D(),
      layers.Flatten(),
      layers.Dense(512, activation='relu', kernel_initializer=init(next(counter))),
      layers.Dropout(0.2, seed=seed),
      layers.Dense(10, kernel_initializer=init(next(counter))),
  ], name='cifar10_cnn')


_BUILDERS = collections.OrderedDict(
    fashion_mnist=fashion_mnist_fc, cifar10=cifar10_cnn
)


def create_model(dataset: str, seed: int = 0) -> tf.keras.Model:
  """Returns the paper's model for `dataset`, with seeded initial weights."""
  if dataset not in _BUILDERS:
    raise ValueError(f'dataset must be one of {tuple(_BUILDERS)}, got {dataset!r}')
  return _BUILDERS[dataset](seed)


def num_trainable_parameters(model: tf.keras.Model) -> int:
  return int(sum(tf.size(w).numpy() for w in model.trainable_weights))
