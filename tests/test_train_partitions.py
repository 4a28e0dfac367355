"""The IID and Dirichlet partitions and CIFAR-10 (TFDS mock data) through binaries/train.py.

Each run's own metrics say which data its clients trained on: with every
client in every round, `num_examples` is the whole training split once per
epoch (no example lost or duplicated by the partition), and `num_batches`
is the sum over clients of ceil(client size / batch size), which the
partition's client sizes fix (IID: equal shares, counted here by hand).
"""

import csv
import json
import math
import os

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import
import tensorflow_datasets as tfds

from tff_sparsify.binaries import train
from tff_sparsify.simulation import data_sources
from tests import fixtures

NUM_TRAIN = 400
BATCH = 16


def _train(out, **flags):
  values = dict(num_clients=4, clients_per_round=4, client_epochs_per_round=1,
                client_batch_size=BATCH, client_learning_rate=0.05, seed=7, progress=False,
                root_output_dir=out, experiment_name='exp', total_rounds=1)
  values.update(flags)
  code, _, err = fixtures.run_binary(train, [f'--{k}={v}' for k, v in values.items()])
  return code, err


def _round_one(out):
  with open(os.path.join(out, 'results', 'exp', 'metrics.csv')) as f:
    return [r for r in csv.DictReader(f) if r['round_num'] == '1'][0]


class TrainPartitionsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = fixtures.write_fashion_mnist_like(
        os.path.join(tf.compat.v1.test.get_temp_dir(), 'fmnist_p'), num_train=NUM_TRAIN)

  @classmethod
  def tearDownClass(cls):
    # The binary turns op determinism on for its process; later tests in
    # this worker (TFF's quantizer among them) need it off.
    tf_config.disable_op_determinism()
    super().tearDownClass()

  def test_iid_gives_equal_shares(self):
    out = self.create_tempdir().full_path
    code, err = _train(out, dataset='fashion_mnist', data_dir=self.data_dir, partition='iid')
    self.assertEqual(code, 0, err)
    row = _round_one(out)
    self.assertEqual(float(row['client_work/train/num_examples']), NUM_TRAIN)
    # 4 clients of 100 examples: 7 batches of 16 each.
    self.assertEqual(float(row['client_work/train/num_batches']), 4 * math.ceil(100 / BATCH))
    with open(os.path.join(out, 'results', 'exp', 'config.json')) as f:
      self.assertEqual(json.load(f)['partition'], 'iid')

  def test_dirichlet_uses_its_alpha_and_seed(self):
    out = self.create_tempdir().full_path
    code, err = _train(out, dataset='fashion_mnist', data_dir=self.data_dir,
                       partition='dirichlet', dirichlet_alpha=0.3)
    self.assertEqual(code, 0, err)
    row = _round_one(out)
    self.assertEqual(float(row['client_work/train/num_examples']), NUM_TRAIN)
    labels = data_sources.load_fashion_mnist_idx(self.data_dir).train_labels
    sizes = [len(s) for s in data_sources.partition(
        labels, partition_type='dirichlet', num_clients=4, seed=7, dirichlet_alpha=0.3)]
    self.assertEqual(sum(sizes), NUM_TRAIN)
    self.assertEqual(float(row['client_work/train/num_batches']),
                     sum(math.ceil(n / BATCH) for n in sizes))
    # Uneven shares (alpha 0.3): unlike IID's 4 x 100, so the count above
    # tells the two partitions apart.
    self.assertNotEqual(sorted(sizes), [100] * 4)

  def test_cifar10_mock_data_trains_the_cnn(self):
    out = self.create_tempdir().full_path
    with tfds.testing.mock_data(num_examples=24):
      code, err = _train(out, dataset='cifar10', partition='iid', num_clients=2,
                         clients_per_round=2, client_batch_size=8)
    self.assertEqual(code, 0, err)
    row = _round_one(out)
    self.assertEqual(float(row['client_work/train/num_examples']), 24)
    self.assertTrue(np.isfinite(float(row['client_work/train/loss'])))
    with open(os.path.join(out, 'results', 'exp', 'summary.json')) as f:
      summary = json.load(f)
    self.assertEqual(summary['total_rounds'], 1)
    model = tf.keras.models.load_model(os.path.join(out, 'results', 'exp', 'final_model.keras'))
    self.assertEqual(model.input_shape, (None, 32, 32, 3))
    # The paper's CNN: 1,609,930 trainable parameters.
    self.assertEqual(sum(w.numpy().size for w in model.trainable_weights), 1_609_930)
