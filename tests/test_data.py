"""Tests for tff_sparsify.simulation.run_data."""

import collections
import gzip
import os
from unittest import mock

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import fixtures
from tff_sparsify.simulation import run_data as data
from tff_sparsify.simulation import data_sources


class IdxLoaderTest(tf.test.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = fixtures.write_fashion_mnist_like(self.create_tempdir().full_path)

  def test_loads_valid_files(self):
    d = data.load_fashion_mnist_idx(self.dir)
    self.assertEqual(d.train_images.shape, (400, 28, 28))
    self.assertEqual(d.test_images.shape, (100, 28, 28))
    self.assertEqual(d.train_images.dtype, np.uint8)
    self.assertCountEqual(np.unique(d.train_labels), range(10))

  def _path(self, key):
    return os.path.join(self.dir, fixtures.FILES[key])

  def test_truncated_file_names_file(self):
    path = self._path('train_images')
    with gzip.open(path, 'rb') as f:
      raw = f.read()
    fixtures.write_gz(path, raw[:-100])
    with self.assertRaisesRegex(data.DataError, 'train-images.*truncated'):
      data.load_fashion_mnist_idx(self.dir)

  @parameterized.named_parameters(
      ('not_gzip', 'test_labels', b'not gzip at all', False,
       't10k-labels.*gzip'),
      ('bad_magic', 'train_labels', fixtures.idx_bytes(np.zeros(400), 2051),
       True, 'train-labels.*magic number 2051'),
      ('label_out_of_range', 'test_labels',
       fixtures.idx_bytes(np.full(100, 12), 2049), True,
       r't10k-labels.*label 12 outside \[0, 10\)'),
      ('wrong_image_size', 'test_images',
       fixtures.idx_bytes(np.zeros((100, 32, 32)), 2051), True,
       r't10k-images.*\(32, 32\), expected \(28, 28\)'),
      ('count_mismatch', 'train_labels', fixtures.idx_bytes(np.zeros(399), 2049),
       True, '400 images but 399 labels'),
  )
  def test_bad_file_names_file_and_fault(self, key, payload, gzipped, regex):
    if gzipped:
      fixtures.write_gz(self._path(key), payload)
    else:
      with open(self._path(key), 'wb') as f:
        f.write(payload)
    with self.assertRaisesRegex(data.DataError, regex):
      data.load_fashion_mnist_idx(self.dir)

  def test_missing_file(self):
    os.remove(self._path('train_images'))
    with self.assertRaisesRegex(data.DataError, 'train-images-idx3-ubyte.gz: file not found'):
      data.load_fashion_mnist_idx(self.dir)

  def test_missing_directory_says_how_to_install(self):
    with self.assertRaisesRegex(data.DataError, 'apt-get install -y dataset-fashion-mnist'):
      data.load_fashion_mnist_idx(os.path.join(self.dir, 'nope'))

  @parameterized.parameters(
      ('fashion_mnist', (28, 28)), ('cifar10', (32, 32, 3)))
  def test_tfds_with_mock_data(self, name, shape):
    with tfds.testing.mock_data(num_examples=20):
      d = data.load_tfds(name)
    self.assertEqual(d.train_images.shape[1:], shape)
    self.assertEqual(len(d.train_images), len(d.train_labels))
    self.assertTrue(np.all((d.test_labels >= 0) & (d.test_labels < 10)))

  def test_unknown_dataset(self):
    with self.assertRaisesRegex(data.DataError, "dataset must be one of .*'mnist'"):
      data.load_centralized('mnist')


class PartitionTest(tf.test.TestCase, parameterized.TestCase):

  labels = np.repeat(np.arange(10), 30)  # 300 examples, 30 per class.

  def test_iid_covers_everything_once(self):
    shards = data.partition_iid(self.labels, 7, seed=3)
    self.assertLen(shards, 7)
    all_idx = np.concatenate(shards)
    self.assertCountEqual(all_idx, range(300))
    self.assertLessEqual(max(map(len, shards)) - min(map(len, shards)), 1)

  @parameterized.parameters('iid', 'non_iid', 'dirichlet')
  def test_deterministic_by_seed(self, partition_type):
    a = data.partition(self.labels, partition_type=partition_type,
                       num_clients=5, seed=1)
    b = data.partition(self.labels, partition_type=partition_type,
                       num_clients=5, seed=1)
    c = data.partition(self.labels, partition_type=partition_type,
                       num_clients=5, seed=2)
    for x, y in zip(a, b):
      self.assertAllEqual(x, y)
    self.assertFalse(all(np.array_equal(x, y) for x, y in zip(a, c)))

  @parameterized.parameters((10, 2), (100, 2), (10, 5), (3, 4))
  def test_non_iid_classes_per_client(self, num_clients, k):
    labels = np.repeat(np.arange(10), 200)
    shards = data.partition_by_classes(labels, num_clients, k, seed=1990)
    for shard in shards:
      self.assertLen(np.unique(labels[shard]), k)
    flat = np.concatenate(shards)
    self.assertLen(np.unique(flat), len(flat))  # No example twice.
    if num_clients * k % 10 == 0:
      self.assertLen(flat, len(labels))  # Every class is used.

  def test_non_iid_ten_clients_two_classes_spread_evenly(self):
    shards = data.partition_by_classes(self.labels, 10, 2, seed=1990)
    classes = [frozenset(self.labels[s]) for s in shards]
    self.assertLen(set(classes), 10)  # No two clients hold the same pair.
    holders = collections.Counter(c for pair in classes for c in pair)
    self.assertEqual(set(holders.values()), {2})
    self.assertEqual({len(s) for s in shards}, {30})

  def test_dirichlet_large_alpha_is_near_uniform(self):
    labels = np.repeat(np.arange(10), 1000)
    shards = data.partition_dirichlet(labels, 10, alpha=1000.0, seed=0)
    sizes = np.array([len(s) for s in shards])
    self.assertAllClose(sizes / sizes.sum(), np.full(10, 0.1), atol=0.01)
    self.assertLen(np.concatenate(shards), 10000)

  @parameterized.named_parameters(
      ('k_too_big', dict(partition_type='non_iid', classes_per_client=11),
       r'classes_per_client must be in \[1, 10\], got 11'),
      ('k_zero', dict(partition_type='non_iid', classes_per_client=0),
       r'classes_per_client must be in \[1, 10\], got 0'),
      ('alpha_zero', dict(partition_type='dirichlet', dirichlet_alpha=0.0),
       'dirichlet_alpha must be > 0, got 0.0'),
      ('alpha_negative', dict(partition_type='dirichlet', dirichlet_alpha=-1.0),
       'dirichlet_alpha must be > 0, got -1.0'),
      ('unknown', dict(partition_type='pathological'),
       "partition must be one of .* got 'pathological'"),
  )
  def test_impossible_requests(self, kwargs, regex):
    with self.assertRaisesRegex(data.DataError, regex):
      data.partition(self.labels, num_clients=5, seed=0, **kwargs)

  @parameterized.parameters('iid', 'non_iid', 'dirichlet')
  def test_more_clients_than_examples(self, partition_type):
    with self.assertRaisesRegex(data.DataError, r'num_clients \(301\) exceeds the number of examples \(300\)'):
      data.partition(self.labels, partition_type=partition_type,
                     num_clients=301, seed=0)

  def test_client_data_and_preprocessing(self):
    images = np.arange(300 * 28 * 28, dtype=np.int64).reshape(300, 28, 28) % 256
    shards = data.partition_iid(self.labels, 3, seed=0)
    cd = data.to_client_data(images.astype(np.uint8), self.labels, shards)
    self.assertEqual(cd.client_ids, ['client_0000', 'client_0001', 'client_0002'])
    ds = data.preprocess_client_dataset(
        cd.create_tf_dataset_for_client('client_0001'), batch_size=32,
        epochs=2, seed=5)
    batches = list(ds)
    self.assertEqual(sum(len(b['y']) for b in batches), 2 * len(shards[1]))
    x = batches[0]['x']
    self.assertEqual(x.dtype, tf.float32)
    self.assertAllInRange(x, 0.0, 1.0)
    again = list(data.preprocess_client_dataset(
        cd.create_tf_dataset_for_client('client_0001'), batch_size=32,
        epochs=2, seed=5))
    self.assertAllEqual(batches[0]['y'], again[0]['y'])


class ShardsPartitionTest(tf.test.TestCase, parameterized.TestCase):
  """The authors' split, pinned on FashionMNIST's label layout (6,000 per class)."""

  def setUp(self):
    super().setUp()
    # Labels in a scrambled dataset order, 6,000 of each of 10 classes.
    self.labels = np.random.default_rng(5).permutation(np.repeat(np.arange(10), 6000))

  def test_ten_clients_two_classes(self):
    shards = data.partition_shards(self.labels, 10, 2)
    pairs = [sorted(set(self.labels[s].tolist())) for s in shards]
    self.assertEqual(pairs, [[0, 1], [0, 1], [2, 3], [2, 3], [4, 5], [4, 5],
                             [6, 7], [6, 7], [8, 9], [8, 9]])
    self.assertEqual({len(s) for s in shards}, {6000})
    for s in shards:  # Half of each of its classes: 3,000 and 3,000.
      self.assertEqual(sorted(np.bincount(self.labels[s]).tolist())[-2:], [3000, 3000])
    # Client 0 has the first half (in dataset order) of classes 0 and 1.
    first_half_of_0 = np.flatnonzero(self.labels == 0)[:3000]
    self.assertAllEqual(shards[0][:3000], first_half_of_0)
    self.assertAllEqual(np.sort(np.concatenate(shards)), np.arange(60000))

  def test_hundred_clients_two_classes(self):
    shards = data.partition_shards(self.labels, 100, 2)
    pairs = [tuple(sorted(set(self.labels[s].tolist()))) for s in shards]
    self.assertEqual(pairs, [(c, c + 1) for c in range(0, 10, 2) for _ in range(20)])
    self.assertEqual({len(s) for s in shards}, {600})
    self.assertAllEqual(np.sort(np.concatenate(shards)), np.arange(60000))

  def test_no_randomness(self):
    via_partition = data.partition(self.labels, partition_type='shards', num_clients=10,
                                   seed=1, classes_per_client=2)
    for a, b in zip(via_partition, data.partition_shards(self.labels, 10, 2)):
      self.assertAllEqual(a, b)

  @parameterized.named_parameters(
      ('chunks_do_not_divide', 7, 2, r'into num_clients x classes_per_client = 14 equal chunks, '
                                     'which does not divide them'),
      ('more_classes_than_exist', 10, 11, r'classes_per_client \(11\) exceeds the number of classes \(10\)'),
      # 3 clients x 4 classes: 12 chunks of 5,000; the third client finds only
      # chunks of classes it already holds.
      ('no_new_class_left', 3, 4, 'client 2 finds 2 chunks of classes it does not hold, not 4'),
  )
  def test_bad_combinations(self, clients, k, regex):
    with self.assertRaisesRegex(data.DataError, regex):
      data.partition_shards(self.labels, clients, k)


class DataErrorsTest(tf.test.TestCase):
  """The data errors a user meets, each one clear DataError."""

  def test_dirichlet_gives_up_when_a_client_stays_empty(self):
    # 10 examples of 2 classes, 8 clients, alpha 0.01: each class's examples
    # land on about one client, so 8 clients never all get one.
    labels = np.arange(10) % 2
    with self.assertRaisesRegex(
        data.DataError, r'dirichlet_alpha=0.01 left a client without examples in 3 draws; '
        'raise dirichlet_alpha or lower num_clients'):
      data.partition_dirichlet(labels, 8, alpha=0.01, seed=0, max_attempts=3)

  def test_a_class_with_fewer_examples_than_its_clients(self):
    # 4 clients x 1 class of 2: each class is held by 2 clients; class 0 has 1 example.
    labels = np.array([0] + [1] * 10)
    with self.assertRaisesRegex(
        data.DataError, r'class 0 has 1 examples for 2 clients; use fewer clients or more '
        'classes_per_client'):
      data.partition_by_classes(labels, 4, 1, seed=0)

  def test_fashion_mnist_missing_and_tfds_failing_says_how_to_install(self):
    missing = os.path.join(self.create_tempdir().full_path, 'nothing_here')

    def offline(*args, **kwargs):
      raise ConnectionError('no network')

    with mock.patch.object(data_sources, 'DEFAULT_FASHION_MNIST_DIR', missing), \
        mock.patch.object(data_sources, 'load_tfds', offline):
      with self.assertRaisesRegex(
          data.DataError, f'FashionMNIST not found in {missing} and TFDS could not load it '
          r'\(ConnectionError\); install it with `.*apt-get install -y dataset-fashion-mnist` '
          'or pass --data_dir'):
        data.load_centralized('fashion_mnist')
