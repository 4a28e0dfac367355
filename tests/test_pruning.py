"""Tests for tff_sparsify.learning.pruning: masks in tfmot wrappers."""

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tff_sparsify.core import masks
from tff_sparsify.learning import models
from tff_sparsify.learning import pruning


class PruningTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.model = pruning.wrap_for_pruning(models.create_model('fashion_mnist', seed=3))

  def test_prunable_weights_are_the_kernels(self):
    shapes = [tuple(w.shape) for w in pruning.prunable_weights(self.model)]
    self.assertEqual(shapes, [(784, 128), (128, 128), (128, 10)])
    self.assertEqual(
        models.num_trainable_parameters(self.model), 118_282)

  def test_training_keeps_pruned_weights_zero_and_strip_keeps_them(self):
    weights = pruning.prunable_weights(self.model)
    target = masks.magnitude_masks([w.numpy() for w in weights], 0.9)
    pruning.set_masks(self.model, target)
    pruning.set_pruning_step(self.model, 1)
    pruning.apply_wrapper_masks(self.model)
    optimizer = tf.keras.optimizers.SGD(0.5, momentum=0.9)
    x = tf.random.uniform((16, 28, 28), seed=0)
    y = tf.random.uniform((16,), maxval=10, dtype=tf.int32, seed=1)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for _ in range(3):
      with tf.GradientTape() as tape:
        loss = loss_fn(y, self.model(x, training=True))
      grads = tape.gradient(loss, self.model.trainable_variables)
      optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    pruning.apply_wrapper_masks(self.model)
    n = sum(int(np.prod(w.shape)) for w in weights)
    zeros = sum(int(np.sum(w.numpy() == 0)) for w in weights)
    self.assertEqual(zeros, int(np.floor(0.9 * n + 0.5)))
    for w, m in zip(weights, target):
      self.assertTrue(np.all(w.numpy()[np.asarray(m) == 0] == 0))
    stripped = tfmot.sparsity.keras.strip_pruning(self.model)
    kernels = [l.kernel.numpy() for l in stripped.layers if hasattr(l, 'kernel')]
    self.assertEqual(sum(int(np.sum(k == 0)) for k in kernels), zeros)
    self.assertAllClose(stripped(x), self.model(x))

  def test_wrapper_refuses_step_zero(self):
    # The pitfall DESIGN.md records: without a step >= 1, training fails.
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError, 'UpdatePruningStep'):
      self.model(tf.zeros((1, 28, 28)), training=True)

  def test_set_masks_checks_count(self):
    with self.assertRaisesRegex(ValueError, r'one tensor per prunable weight \(3\), got 1'):
      pruning.set_masks(self.model, [np.ones((784, 128))])


class SkipWrapperUpdatesTest(tf.test.TestCase):

  def test_training_call_runs_the_layer_only(self):
    model = pruning.wrap_for_pruning(models.create_model('fashion_mnist', seed=3))
    weights = pruning.prunable_weights(model)
    pruning.set_masks(model, masks.magnitude_masks([w.numpy() for w in weights], 0.5))
    pruning.set_pruning_step(model, 1)
    dense_kernels = [w.numpy() for w in weights]
    x = tf.random.uniform((4, 28, 28), seed=2)
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    pruning.skip_wrapper_updates(model)
    out = model(x, training=True)
    # No step increment and no `weight * mask` before the forward pass: the
    # kernels are untouched and the output is the unmasked model's.
    self.assertAllEqual([int(l.pruning_step.numpy()) for l in pruning.wrappers(model)],
                        [1] * len(pruning.wrappers(model)))
    for before, after in zip(dense_kernels, weights):
      self.assertAllEqual(before, after.numpy())
    self.assertAllClose(out, stripped(x, training=True))
    # The masks would have zeroed non-zero weights (so the check above bites).
    mask = pruning.mask_variables(model)[0].numpy()
    self.assertGreater(np.count_nonzero(dense_kernels[0][mask == 0]), 0)


class MacsPerWeightTest(tf.test.TestCase):

  def test_cifar10_cnn_costs_are_output_positions(self):
    model = pruning.wrap_for_pruning(models.create_model('cifar10', seed=0))
    # Conv64 x2 at 32x32, Conv128 x2 at 16x16, Conv128 x2 at 8x8, two Dense.
    self.assertEqual(pruning.macs_per_weight(model),
                     [1024.0, 1024.0, 256.0, 256.0, 64.0, 64.0, 1.0, 1.0])
    self.assertLen(pruning.macs_per_weight(model), len(pruning.prunable_weights(model)))
