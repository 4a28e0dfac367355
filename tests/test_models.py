"""Tests for tff_sparsify.learning.models: the paper's parameter counts."""

from absl.testing import parameterized
import tensorflow as tf

from tff_sparsify.learning import models


class ModelsTest(tf.test.TestCase, parameterized.TestCase):

  # small_cnn, by hand: 3x3 convolutions 1->32, 32->64, 64->128 with biases
  # (320 + 18,496 + 73,856), Dense 1,152 -> 128 (147,584) and 128 -> 10 (1,290).
  # mobilenet, by hand: stem 144 + 32; blocks 3,440, 5,904, 8,256, 21,024; head
  # 9,216 + 384; Dense 192 -> 10 1,930.
  # mobilenet_x2, by hand (kernels, then BatchNormalization's gamma and beta):
  # stem 288 + 64; blocks (in, expansion, out) (32, 128, 48) 4,096 + 256 +
  # 1,152 + 256 + 6,144 + 96 = 12,000, (48, 192, 48) 21,024, (48, 192, 96)
  # 30,336, (96, 384, 96) 78,912; head 36,864 + 768; Dense 384 -> 10 3,850.
  @parameterized.parameters(('fashion_mnist', 'paper', 118_282), ('cifar10', 'paper', 1_609_930),
                            ('fashion_mnist', 'small_cnn', 241_546),
                            ('fashion_mnist', 'mobilenet', 50_330),
                            ('fashion_mnist', 'mobilenet_x2', 184_106))
  def test_trainable_parameter_count(self, dataset, model, expected):
    self.assertEqual(
        models.num_trainable_parameters(models.create_model(dataset, model=model)), expected)

  @parameterized.parameters(('fashion_mnist', 'paper'), ('cifar10', 'paper'),
                            ('fashion_mnist', 'small_cnn'), ('fashion_mnist', 'mobilenet_x2'))
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
