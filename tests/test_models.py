"""Tests for tff_sparsify.learning.models: the paper's parameter counts."""

from absl.testing import parameterized
import tensorflow as tf

from tff_sparsify.learning import models


class ModelsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(('fashion_mnist', 118_282), ('cifar10', 1_609_930))
  def test_trainable_parameter_count(self, dataset, expected):
    self.assertEqual(
        models.num_trainable_parameters(models.create_model(dataset)), expected)

  @parameterized.parameters('fashion_mnist', 'cifar10')
  def test_outputs_ten_logits_and_seeded_init(self, dataset):
    a = models.create_model(dataset, seed=4)
    b = models.create_model(dataset, seed=4)
    x = tf.random.uniform((2,) + models.INPUT_SHAPES[dataset], seed=1)
    self.assertEqual(a(x).shape, (2, 10))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
      self.assertAllEqual(wa, wb)

  def test_unknown_dataset(self):
    with self.assertRaisesRegex(ValueError, "dataset must be one of .*'svhn'"):
      models.create_model('svhn')
