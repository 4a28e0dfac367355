"""Tests for benchmarks/inference_models.py (inference_table's models and checks)."""

import importlib.util
import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import fixtures
from tff_sparsify.deploy import model_export as export
from tff_sparsify.learning import pruning


def _load_fixture():
  # By path: pyarrow installs a top-level `benchmarks` package of its own.
  path = os.path.join(fixtures.REPO, 'benchmarks', 'inference_models.py')
  spec = importlib.util.spec_from_file_location('tff_sparsify_bench_inference_models', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


inference_models = _load_fixture()


class InferenceTableTest(tf.test.TestCase):

  def test_placements_keep_the_same_total_sparsity(self):
    nonzeros = {}
    for placement in inference_models.PLACEMENTS:
      model = inference_models.pruned_model('cifar10', 0.95, placement)
      kernels = [w.numpy() for w in pruning.prunable_weights(model)]
      nonzeros[placement] = sum(int(np.count_nonzero(k)) for k in kernels)
      densities = [np.count_nonzero(k) / k.size for k in kernels]
      if placement == 'compute':  # Convolutions (costly) at 20% of the uniform density.
        self.assertAllClose(densities[:6], [0.01] * 6, atol=1e-3)
        self.assertGreater(densities[6], 0.07)
    total = sum(k.size for k in kernels)
    for placement, count in nonzeros.items():  # Up to one weight per kernel of rounding.
      self.assertAllClose(count, round(0.05 * total), atol=len(kernels), msg=placement)

  def test_cifar10_accuracy_check_with_a_test_set(self):
    with tfds.testing.mock_data(num_examples=8):
      test_set, why = inference_models.load_test_set('cifar10')
    self.assertIsNone(why)
    images, labels = test_set
    self.assertEqual(images.shape, (8, 32, 32, 3))
    model = inference_models.pruned_model('cifar10', 0.9, 'compute')
    report = export.export_model(model, self.create_tempdir().full_path)
    accuracy = inference_models.accuracy_check(report, model, images, labels)
    keras = np.mean(np.argmax(model.predict(images / 255.0, verbose=0), 1) == labels)
    self.assertAllClose(accuracy, keras)

  def test_no_cifar10_offline_is_one_line(self):
    test_set, why = inference_models.load_test_set(
        'cifar10', tfds_data_dir=self.create_tempdir().full_path)
    self.assertIsNone(test_set)
    self.assertStartsWith(why, 'no cifar10 test set (')
    self.assertLen(why.splitlines(), 1)
