"""The paper's models (Stripelis et al., Section 4, "Federated Models").

- FashionMNIST: a 2-layer fully-connected network, 118,282 trainable
  parameters: Flatten(28x28) -> Dense 128 relu -> Dense 128 relu -> Dense 10.
- CIFAR-10: a 6-layer CNN, 1,609,930 trainable parameters:
  Conv64-Conv64-MaxPool-BN-Conv128-Conv128-MaxPool-BN-Conv128-Conv128-MaxPool-
  Flatten-Dense512-Dropout0.2-Dense10 (3x3 kernels, same padding, relu).

Not the paper's: `--model=small_cnn` (FashionMNIST only), a small CNN in the
style of the paper's CIFAR-10 CNN, on which channel pruning and the runtimes
are measured with real data (CIFAR-10 cannot be downloaded here), 241,546
trainable parameters: Reshape(28x28x1)-Conv32-MaxPool-Conv64-MaxPool-Conv128-
MaxPool-Flatten-Dense128-Dropout0.2-Dense10 (3x3 kernels, same padding,
relu). Three blocks rather than the paper's six convolutions, so that a
federated round over FashionMNIST's 60,000 images takes about a minute on 2
cores (the paper's shape at 28x28 costs 16x the multiply-adds); the input
stays 28x28 so the data pipeline and the exports' inputs are FashionMNIST's.
No BatchNormalization (it predates the aggregation of moving statistics,
`learning.statistics`).

Not the paper's either: `--model=mobilenet` (FashionMNIST only), a
MobileNetV2-style network of ours on which channel pruning of
depthwise-separable blocks, BatchNormalization and residual additions is
measured, 50,330 trainable parameters: Reshape(28x28x1)-Conv16(3x3, stride
2)-BN-ReLU6, four inverted-residual blocks (1x1 expansion-BN-ReLU6, 3x3
depthwise-BN-ReLU6, 1x1 projection-BN, plus the block's input where shapes
agree) of (expansion, output, stride) (64, 24, 1), (96, 24, 1), (96, 48, 2),
(192, 48, 1), Conv192(1x1)-BN-ReLU6, global average pooling, Dropout 0.2,
Dense10. Convolutions without bias (the BatchNormalization's beta is one);
BatchNormalization momentum 0.9. `--model=mobilenet_x2`: the same network
with every layer's channels doubled (MobileNet's width multiplier), 184,106
trainable parameters: the 50,330-parameter one has too few channels to lose
the 0.6 of them that a 3x speed-up needs and stay within a point of its
accuracy (BUILD_NOTES, "Channel pruning of MobileNet-style networks").

All output logits (use `from_logits=True`). `build_model_fn` wraps them as
the no-arg `model_fn` TFF's builders take, optionally wrapped for pruning.
"""

import collections
import functools
from typing import Callable, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.learning import pruning

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


def _seeded_layers(seed: int):
  """(conv(filters): a 3x3 same-padded relu Conv2D, init(): an initializer), seeded in turn."""
  counter = iter(range(seed, seed + 100))
  init = lambda: tf.keras.initializers.GlorotUniform(next(counter))

  def conv(filters):
    return tf.keras.layers.Conv2D(filters, 3, padding='same', activation='relu',
                                  kernel_initializer=init())

  return conv, init


def cifar10_cnn(seed: int = 0) -> tf.keras.Model:
  layers = tf.keras.layers
  conv, init = _seeded_layers(seed)

  return tf.keras.Sequential([
      layers.InputLayer(input_shape=INPUT_SHAPES['cifar10']),
      conv(64), conv(64), layers.MaxPool2D(), layers.BatchNormalization(),
      conv(128), conv(128), layers.MaxPool2D(), layers.BatchNormalization(),
      conv(128), conv(128), layers.MaxPool2D(),
      layers.Flatten(),
      layers.Dense(512, activation='relu', kernel_initializer=init()),
      layers.Dropout(0.2, seed=seed),
      layers.Dense(10, kernel_initializer=init()),
  ], name='cifar10_cnn')


def fashion_mnist_small_cnn(seed: int = 0) -> tf.keras.Model:
  layers = tf.keras.layers
  conv, init = _seeded_layers(seed)

  return tf.keras.Sequential([
      layers.InputLayer(input_shape=INPUT_SHAPES['fashion_mnist']),
      layers.Reshape(INPUT_SHAPES['fashion_mnist'] + (1,)),
      conv(32), layers.MaxPool2D(),
      conv(64), layers.MaxPool2D(),
      conv(128), layers.MaxPool2D(),
      layers.Flatten(),
      layers.Dense(128, activation='relu', kernel_initializer=init()),
      layers.Dropout(0.2, seed=seed),
      layers.Dense(10, kernel_initializer=init()),
  ], name='fashion_mnist_small_cnn')


def _batch_norm():
  # Momentum 0.9, not Keras' 0.99: a client's round is a few hundred steps, and
  # with 0.99 the moving statistics lagged the weights so far that a first
  # version evaluated at chance level (BUILD_NOTES, "Channel pruning of
  # MobileNet-style networks").
  return tf.keras.layers.BatchNormalization(momentum=0.9)


def _inverted_residual(x, expand: int, out: int, stride: int, init):
  """MobileNetV2's block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection, each
  followed by BatchNormalization (ReLU6 after the first two); the block's input is
  added where the shapes agree."""
  layers = tf.keras.layers
  y = layers.Conv2D(expand, 1, use_bias=False, kernel_initializer=init())(x)
  y = layers.ReLU(6.0)(_batch_norm()(y))
  y = layers.DepthwiseConv2D(3, strides=stride, padding='same', use_bias=False,
                             depthwise_initializer=init())(y)
  y = layers.ReLU(6.0)(_batch_norm()(y))
  y = _batch_norm()(layers.Conv2D(out, 1, use_bias=False, kernel_initializer=init())(y))
  if stride == 1 and x.shape[-1] == out:
    y = layers.Add()([x, y])
  return y


def fashion_mnist_mobilenet(seed: int = 0, width: int = 1) -> tf.keras.Model:
  """`width` multiplies every layer's channels (MobileNet's width multiplier)."""
  layers = tf.keras.layers
  _, init = _seeded_layers(seed)
  inputs = layers.Input(INPUT_SHAPES['fashion_mnist'])
  x = layers.Reshape(INPUT_SHAPES['fashion_mnist'] + (1,))(inputs)
  x = layers.Conv2D(16 * width, 3, strides=2, padding='same', use_bias=False,
                    kernel_initializer=init())(x)
  x = layers.ReLU(6.0)(_batch_norm()(x))
  for expand, out, stride in MOBILENET_BLOCKS:
    x = _inverted_residual(x, expand * width, out * width, stride, init)
  x = layers.Conv2D(192 * width, 1, use_bias=False, kernel_initializer=init())(x)
  x = layers.ReLU(6.0)(_batch_norm()(x))
  x = layers.Dropout(0.2, seed=seed)(layers.GlobalAveragePooling2D()(x))
  outputs = layers.Dense(10, kernel_initializer=init())(x)
  return tf.keras.Model(inputs, outputs, name='fashion_mnist_mobilenet' + (f'_x{width}' if width > 1 else ''))


# (expansion channels, output channels, stride) of `fashion_mnist_mobilenet`'s blocks.
MOBILENET_BLOCKS = ((64, 24, 1), (96, 24, 1), (96, 48, 2), (192, 48, 1))

# (dataset, model) -> builder; 'paper' is the paper's model of the dataset.
MODELS = ('paper', 'small_cnn', 'mobilenet', 'mobilenet_x2')
_BUILDERS = collections.OrderedDict([
    (('fashion_mnist', 'paper'), fashion_mnist_fc),
    (('cifar10', 'paper'), cifar10_cnn),
    (('fashion_mnist', 'small_cnn'), fashion_mnist_small_cnn),
    (('fashion_mnist', 'mobilenet'), fashion_mnist_mobilenet),
    (('fashion_mnist', 'mobilenet_x2'), functools.partial(fashion_mnist_mobilenet, width=2)),
])


def models_for(dataset: str) -> tuple[str, ...]:
  """The `model` names that `dataset` has."""
  return tuple(m for d, m in _BUILDERS if d == dataset)


def create_model(dataset: str, seed: int = 0, model: str = 'paper') -> tf.keras.Model:
  """Returns `model` ('paper': the paper's) for `dataset`, with seeded initial weights."""
  if dataset not in INPUT_SHAPES:
    raise ValueError(f'dataset must be one of {tuple(INPUT_SHAPES)}, got {dataset!r}')
  if (dataset, model) not in _BUILDERS:
    raise ValueError(f'model must be one of {models_for(dataset)} for {dataset}, got {model!r}')
  return _BUILDERS[(dataset, model)](seed)


def num_trainable_parameters(model: tf.keras.Model) -> int:
  return int(sum(tf.size(w).numpy() for w in model.trainable_weights))


def input_spec(dataset: str) -> collections.OrderedDict:
  """The batched element spec that the client datasets produce."""
  if dataset not in INPUT_SHAPES:
    raise ValueError(f'dataset must be one of {tuple(INPUT_SHAPES)}, got {dataset!r}')
  return collections.OrderedDict(
      x=tf.TensorSpec((None,) + INPUT_SHAPES[dataset], tf.float32),
      y=tf.TensorSpec((None,), tf.int32),
  )


def normalize(element):
  """The built-in datasets' uint8 images to float32 in [0, 1]; labels to int32."""
  return collections.OrderedDict(
      x=tf.cast(element['x'], tf.float32) / 255.0,
      y=tf.cast(element['y'], tf.int32),
  )


def loss_fn() -> tf.keras.losses.Loss:
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def create_keras_model(dataset: str, seed: int = 0, *, prunable: bool = False,
                       model: str = 'paper') -> tf.keras.Model:
  """`model` for `dataset` (`create_model`), wrapped for pruning if `prunable`."""
  keras_model = create_model(dataset, seed, model)
  return pruning.wrap_for_pruning(keras_model) if prunable else keras_model


def wrap_if(keras_model: tf.keras.Model, prunable: bool) -> tf.keras.Model:
  return pruning.wrap_for_pruning(keras_model) if prunable else keras_model


def model_fn_from(
    keras_model_fn: Callable[[], tf.keras.Model],
    loss_fn: Callable[[], tf.keras.losses.Loss] = loss_fn,
    metrics_fn: Optional[Callable[[], list]] = None,
) -> Callable[[], tff.learning.models.VariableModel]:
  """A no-arg `model_fn` for TFF wrapping `keras_model_fn()`, its input spec its own.

  The spec is the Keras model's input (shape and dtype) and one int32 label
  per example (`keras_input_spec`): the client data must yield that.
  """
  metrics_fn = metrics_fn or (lambda: [tf.keras.metrics.SparseCategoricalAccuracy()])

  def model_fn():
    keras_model = keras_model_fn()
    return tff.learning.models.from_keras_model(
        keras_model, loss=loss_fn(), input_spec=keras_input_spec(keras_model),
        metrics=metrics_fn())

  return model_fn


def keras_input_spec(keras_model: tf.keras.Model) -> collections.OrderedDict:
  """TFF's batched input spec of `keras_model`: its input, and one int32 label per example.

  Raises:
    ValueError: the model has not exactly one input.
  """
  if len(keras_model.inputs or []) != 1:
    raise ValueError(f'has {len(keras_model.inputs or [])} inputs; one is supported')
  model_input = keras_model.inputs[0]
  return collections.OrderedDict(
      x=tf.TensorSpec(model_input.shape, model_input.dtype),
      y=tf.TensorSpec((None,), tf.int32))


def build_model_fn(
    dataset: str, seed: int = 0,
    keras_model_fn: Optional[Callable[[], tf.keras.Model]] = None,
    *, prunable: bool = False, model: str = 'paper',
) -> Callable[[], tff.learning.models.VariableModel]:
  """A no-arg `model_fn` wrapping the Keras `model` for `dataset` (the paper's by default).

  `prunable=True` wraps it in tfmot's `prune_low_magnitude`, as the pruning
  algorithms (and compression, `registry.uses_prunable_model`) need.
  """
  spec = input_spec(dataset)
  keras_model_fn = keras_model_fn or (
      lambda: create_keras_model(dataset, seed, prunable=prunable, model=model))

  def model_fn():
    return tff.learning.models.from_keras_model(
        keras_model_fn(), loss=loss_fn(), input_spec=spec,
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
    )

  return model_fn
