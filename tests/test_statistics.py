"""BatchNormalization's moving statistics are aggregated, in every algorithm.

Oracle: plain Keras `fit` on the same batches (one client, one local epoch,
server learning rate 1, fixed batch order) gives the global model's weights
and moving statistics; with two clients, the example-weighted mean of two
Keras fits.
"""

import collections
import contextlib

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_model_optimization as tfmot

from tff_sparsify.compression import codecs
from tff_sparsify.core import masks as masks_lib
from tff_sparsify.learning import pruning_layout as layout_lib
from tff_sparsify.learning import pruning
from tff_sparsify.learning import registry
from tff_sparsify.simulation import execution

LR = 0.05
SPEC = collections.OrderedDict(x=tf.TensorSpec((None, 6, 6, 2), tf.float32),
                               y=tf.TensorSpec((None,), tf.int32))
ROUNDS = 2  # Total rounds of the schedules; one is run.


def bn_keras_model():
  """Conv2D, BatchNormalization, Conv2D, GlobalAveragePooling, Dense (functional)."""
  init = tf.keras.initializers.GlorotUniform
  inputs = tf.keras.Input((6, 6, 2))
  x = tf.keras.layers.Conv2D(4, 3, padding='same', kernel_initializer=init(0))(inputs)
  x = tf.keras.layers.BatchNormalization(momentum=0.5)(x)
  x = tf.keras.layers.ReLU()(x)
  x = tf.keras.layers.Conv2D(3, 3, kernel_initializer=init(1))(x)
  x = tf.keras.layers.GlobalAveragePooling2D()(x)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(3, kernel_initializer=init(2))(x))


def loss():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def model_fn(wrap: bool):
  def fn():
    keras_model = bn_keras_model()
    if wrap:
      keras_model = pruning.wrap_for_pruning(keras_model)
    return tff.learning.models.from_keras_model(keras_model, loss=loss(), input_spec=SPEC)
  return fn


def client_arrays(n, seed):
  rng = np.random.default_rng(seed)
  return (rng.normal(1.0, 2.0, size=(n, 6, 6, 2)).astype(np.float32),
          rng.integers(0, 3, n).astype(np.int32))


def as_dataset(x, y, batch_size=5):
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(batch_size)


def plain_weights(process, state, wrap):
  """The global model as a plain Keras model's `get_weights()` (BN: gamma, beta, mean, var)."""
  keras_model = bn_keras_model()
  if wrap:
    keras_model = pruning.wrap_for_pruning(keras_model)
  process.get_model_weights(state).assign_weights_to(keras_model)
  if wrap:
    keras_model = tfmot.sparsity.keras.strip_pruning(keras_model)
  return keras_model.get_weights()


def keras_fit(initial, x, y, *, momentum=0.0, proximal_strength=0.0, masks=None):
  """Plain Keras SGD over `x, y` in order, one epoch, from `initial` weights.

  `masks` (one per kernel, in layer order): trained as tfmot trains a
  wrapped model, `weight * mask` before each forward pass.
  """
  keras_model = bn_keras_model()
  keras_model.set_weights(initial)
  callbacks = []
  if masks is not None:
    keras_model = pruning.wrap_for_pruning(keras_model)
    pruning.set_masks(keras_model, masks)
    pruning.set_pruning_step(keras_model, 1)
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
  if proximal_strength:
    anchor = [tf.constant(w) for w in keras_model.trainable_weights]
    keras_model.add_loss(lambda: proximal_strength / 2 * tf.add_n(
        [tf.reduce_sum(tf.square(w - a)) for w, a in zip(keras_model.trainable_weights, anchor)]))
  keras_model.compile(tf.keras.optimizers.SGD(LR, momentum=momentum), loss())
  keras_model.fit(x, y, batch_size=5, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)
  if masks is not None:
    pruning.apply_wrapper_masks(keras_model)
    keras_model = tfmot.sparsity.keras.strip_pruning(keras_model)
  return keras_model.get_weights()


def build(name, initial_masks=None, **flag_values):
  algorithm = registry.get(name)
  config = algorithm.from_flags(dict(
      client_learning_rate=LR, total_rounds=ROUNDS, final_sparsity=0.5, **flag_values))
  wrap = registry.uses_prunable_model(config)
  components = {} if initial_masks is None else dict(initial_masks=initial_masks)
  return algorithm.build(model_fn(wrap), config, **components), wrap


def half_masks():
  """Magnitude masks at 0.5 of the initial kernels (a fixed mask for SNIP, GraSP, PruneFL)."""
  kernels = [w for w in bn_keras_model().trainable_weights if w.shape.rank > 1]
  return [m.numpy() for m in masks_lib.magnitude_masks(kernels, 0.5)]


# The statistics of BN (indices in `get_weights()`): moving mean and variance.
MOVING = (4, 5)
KERNELS = (0, 6, 8)


class _WithWorker:
  """One owned local TFF worker for the class's tests."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._context = contextlib.ExitStack()
    cls._context.enter_context(execution.local_cpp_execution_context())

  @classmethod
  def tearDownClass(cls):
    cls._context.close()
    super().tearDownClass()


class StatisticsTest(_WithWorker, tf.test.TestCase, parameterized.TestCase):

  def test_layout_finds_the_moving_statistics_only(self):
    for wrap in (False, True):
      with tf.Graph().as_default():
        model = model_fn(wrap)()
        names = [model.non_trainable_variables[i].name
                 for i in layout_lib.pruning_layout(model).statistics]
      self.assertLen(names, 2)
      self.assertIn('moving_mean', names[0])
      self.assertIn('moving_variance', names[1])

  def test_nested_model_is_wrapped_and_its_statistics_found(self):
    def nested():
      outer = tf.keras.Sequential([tf.keras.layers.InputLayer((6, 6, 2)), bn_keras_model(),
                                   tf.keras.layers.Dense(2)])
      return tff.learning.models.from_keras_model(
          pruning.wrap_for_pruning(outer), loss=loss(), input_spec=SPEC)
    with tf.Graph().as_default():
      model = nested()
      layout = layout_lib.pruning_layout(model)
      kernels = [model.trainable_variables[i].shape.as_list() for i in layout.prunable]
      self.assertEqual(kernels, [[3, 3, 2, 4], [3, 3, 4, 3], [3, 3], [3, 2]])
      names = [model.non_trainable_variables[i].name for i in layout.statistics]
      self.assertLen(names, 2)
      self.assertIn('moving_mean', names[0])

  @parameterized.named_parameters(
      ('fedavg', 'fedavg', {}, {}),
      ('local', 'fedsparsify_local', {}, {}),
      ('quantized', 'fedavg', dict(quantize_bits=8, quantize_threshold=10), {}),
  )
  def test_one_client_equals_keras_fit(self, name, flag_values, fit_kwargs):
    x, y = client_arrays(20, seed=1)
    process, wrap = build(name, **flag_values)
    state = process.initialize()
    initial = plain_weights(process, state, wrap)
    self.assertAllEqual(initial[MOVING[0]], np.zeros(4))
    output = process.next(state, [as_dataset(x, y)])
    state = output.state
    expected = keras_fit(initial, x, y, **fit_kwargs)
    found = plain_weights(process, state, wrap)
    self.assertNotAllClose(expected[MOVING[1]], np.ones(4))
    if 'quantize_bits' in flag_values:
      self._check_bytes(output.metrics, initial, expected)
      # The kernels are quantized; the statistics are not.
      found, expected = [found[i] for i in MOVING], [expected[i] for i in MOVING]
    for a, b in zip(found, expected):
      self.assertAllClose(a, b, atol=1e-6, rtol=0)

  def _check_bytes(self, metrics, initial, fit):
    # TFF's quantizer counts the deltas in the aggregator; the client counts
    # the statistics' deltas, in the NumPy encoder's bytes.
    deltas = [initial[i] - fit[i] for i in MOVING]
    self.assertEqual(int(metrics['client_work']['communication']['bytes_uploaded']),
                     codecs.encoded_size(deltas, methods=codecs.METHODS))
    # The broadcast: the kernels and biases, and the initial statistics.
    self.assertEqual(int(metrics['distributor']['bytes_downloaded']),
                     codecs.encoded_size(initial, methods=codecs.METHODS))



class StatisticsPruningTest(_WithWorker, tf.test.TestCase, parameterized.TestCase):
  """Pruning algorithms and other updates (its own class: pytest-xdist gives each class a core)."""

  def test_two_clients_weighted_mean_of_keras_fits(self):
    clients = [client_arrays(20, seed=1), client_arrays(10, seed=2)]
    process, wrap = build('fedsparsify_global')
    state = process.initialize()
    initial = plain_weights(process, state, wrap)
    state = process.next(state, [as_dataset(x, y) for x, y in clients]).state
    fits = [keras_fit(initial, x, y) for x, y in clients]
    found = plain_weights(process, state, wrap)
    for i, value in enumerate(found):
      self.assertAllClose(value, (20 * fits[0][i] + 10 * fits[1][i]) / 30, atol=1e-6, rtol=0)

  @parameterized.named_parameters(('oneshot', 'oneshot_pruning'))
  def test_server_pruning_keeps_the_clients_statistics(self, name):
    x, y = client_arrays(20, seed=1)
    process, wrap = build(name)
    state = process.initialize()
    initial = plain_weights(process, state, wrap)
    state = process.next(state, [as_dataset(x, y)]).state
    found = plain_weights(process, state, wrap)
    expected = keras_fit(initial, x, y)
    for i in MOVING:
      self.assertAllClose(found[i], expected[i], atol=1e-6, rtol=0)
    kernels = [found[i] for i in KERNELS]
    half = 0.5 * sum(k.size for k in kernels)
    self.assertIn(sum(int(np.sum(k == 0)) for k in kernels), (np.floor(half), np.ceil(half)))

  # PruneFL: a fixed initial mask as SNIP's and GraSP's, and an update with three parts.
  @parameterized.named_parameters(('prunefl', 'prunefl'))
  def test_fixed_initial_masks_equal_wrapped_keras_fit(self, name):
    x, y = client_arrays(20, seed=1)
    masks = half_masks()
    process, wrap = build(name, initial_masks=masks)
    state = process.initialize()
    initial = plain_weights(process, state, wrap)
    state = process.next(state, [as_dataset(x, y)]).state
    expected = keras_fit(initial, x, y, masks=masks)
    for a, b in zip(plain_weights(process, state, wrap), expected):
      self.assertAllClose(a, b, atol=1e-6, rtol=0)

  def test_frozen_non_trainable_weights_keep_their_value_exactly(self):
    x, y = client_arrays(20, seed=1)

    def frozen_model_fn():
      keras_model = bn_keras_model()
      keras_model.layers[1].trainable = False  # The first Conv2D: a frozen kernel.
      return tff.learning.models.from_keras_model(keras_model, loss=loss(), input_spec=SPEC)

    algorithm = registry.get('fedavg')
    process = algorithm.build(frozen_model_fn, algorithm.from_flags(
        dict(client_learning_rate=LR)))
    state = process.initialize()
    before = process.get_model_weights(state).non_trainable
    after = process.get_model_weights(
        process.next(state, [as_dataset(x, y)]).state).non_trainable
    self.assertAllEqual(after[0], before[0])  # The frozen kernel, bit for bit.
    self.assertNotAllClose(after[-1], before[-1])  # The moving variance moved.

  def test_not_aggregated_keeps_the_initial_statistics_as_tff_fed_avg(self):
    """`aggregate_statistics=False` is TFF's behaviour: the statistics never change."""
    x, y = client_arrays(20, seed=1)
    algorithm = registry.get('fedsparsify_global')
    config = algorithm.from_flags(dict(client_learning_rate=LR, total_rounds=ROUNDS,
                                       final_sparsity=0.5))
    process = algorithm.build(model_fn(True), config, aggregate_statistics=False)
    tff_fed_avg = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn(False), tff.learning.optimizers.build_sgdm(LR),
        tff.learning.optimizers.build_sgdm(1.0))
    for p, wrap in ((process, True), (tff_fed_avg, False)):
      state = p.next(p.initialize(), [as_dataset(x, y)]).state
      found = plain_weights(p, state, wrap)
      self.assertAllEqual(found[MOVING[0]], np.zeros(4))
      self.assertAllEqual(found[MOVING[1]], np.ones(4))
