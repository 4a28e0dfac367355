"""Tests for tff_sparsify.learning.models: the paper's parameter counts."""

from absl.testing import parameterized
import tensorflow as tf

from tff_sparsify.learning import models


class ModelsTest(tf.test.TestCase, parameterized.TestCase):

  # small_cnn, by hand: 3x3 convolutions 1->32, 32->64, 64->128 with biases
  # (320 + 18,496 + 73,856), Dense 1,152 -> 128 (147,584) and 128 -> 10 (1,290).
  @parameterized.parameters(('fashion_mnist', 'paper', 118_282), ('cifar10', 'paper', 1_609_930),
                            ('fashion_mnist', 'small_cnn', 241_546))
  def test_trainable_parameter_count(self, dataset, model, expected):
    self.assertEqual(
        models.num_trainable_parameters(models.create_model(dataset, model=model)), expected)

  @parameterized.parameters(('fashion_mnist', 'paper'), ('cifar10', 'paper'),
                            ('fashion_mnist', 'small_cnn'))
  def test_outputs_ten_logits_and_seeded_init(self, dataset, model):
    a = models.create_model(dataset, seed=4, model=model)
    b = models.create_model(dataset, seed=4, model=model)
    x = tf.random.uniform((2,) + models.INPUT_SHAPES[dataset], seed=1)
    self.assertEqual(a(x).shape, (2, 10))
    for wa, wb in zip(a.get_weights(), b.get_weights()):
      self.assertAllEqual(wa, wb)

  def test_unknown_dataset(self):
    with self.assertRaisesRegex(ValueError, "dataset must be one of .*'svhn'"):
      models.create_model('svhn')

  def test_model_the_dataset_lacks(self):
    with self.assertRaisesRegex(ValueError, r"model must be one of \('paper',\) for cifar10, "
                                r"got 'small_cnn'"):
      models.create_model('cifar10', model='small_cnn')

  def test_config_models_match_the_builders(self):
    # config.py cannot import TensorFlow, so it lists the models itself.
    from tff_sparsify import config as config_lib  # pylint: disable=g-import-not-at-top
    self.assertEqual(models.MODELS, config_lib.MODELS)
    for dataset in config_lib.DATASETS:
      self.assertEqual(set(models.models_for(dataset)),
                       {m for m, d in config_lib.MODEL_DATASETS.items() if dataset in d})
