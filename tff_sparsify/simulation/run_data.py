"""Datasets and federated partitions for the FedSparsify experiments.

The paper (Stripelis et al., "Federated Progressive Sparsification
(Purge-Merge-Tune)+", Section 4) uses FashionMNIST and CIFAR-10 split over 10
or 100 clients, IID or Non-IID, where a Non-IID client holds examples of only
`classes_per_client` classes (2 of 10 for FashionMNIST, 5 of 10 for CIFAR-10,
following Zhao et al. 2018). A Dirichlet(alpha) split is offered as well.

FashionMNIST is read from the original IDX `.gz` files (the Debian package
`dataset-fashion-mnist` installs them under `DEFAULT_FASHION_MNIST_DIR`), so
training works offline; TFDS is used where a network exists.
"""

import collections
import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.learning.models import normalize  # The built-in models' input.
from tff_sparsify.simulation.data_sources import CentralizedData
from tff_sparsify.simulation.data_sources import DATASETS
from tff_sparsify.simulation.data_sources import DEFAULT_FASHION_MNIST_DIR
from tff_sparsify.simulation.data_sources import DataError
from tff_sparsify.simulation.data_sources import NUM_CLASSES
from tff_sparsify.simulation.data_sources import PARTITIONS
from tff_sparsify.simulation.data_sources import client_id
from tff_sparsify.simulation.data_sources import load_centralized
from tff_sparsify.simulation.data_sources import load_fashion_mnist_idx
from tff_sparsify.simulation.data_sources import load_tfds
from tff_sparsify.simulation.data_sources import partition
from tff_sparsify.simulation.data_sources import partition_by_classes
from tff_sparsify.simulation.data_sources import partition_dirichlet
from tff_sparsify.simulation.data_sources import partition_iid
from tff_sparsify.simulation.data_sources import partition_shards


@dataclasses.dataclass(frozen=True)
class FederatedData:
  """Clients' training data and the centralized test set."""

  train: tff.simulation.datasets.ClientData
  test_images: np.ndarray
  test_labels: np.ndarray
  partition: list[np.ndarray]


def to_client_data(
    images: np.ndarray, labels: np.ndarray, shards: list[np.ndarray]
) -> tff.simulation.datasets.ClientData:
  """A ClientData whose elements are `OrderedDict(x=uint8, y=int32)`, in shard order.

  `ClientData.from_clients_and_tf_fn`, TFF's general constructor: the
  dataset function looks a client id up in a static hash table and gathers
  the client's examples from the training arrays, so it is serializable
  (`dataset_computation`) as well as callable from Python.
  """
  ids = [client_id(i) for i in range(len(shards))]
  sizes = np.array([len(shard) for shard in shards], np.int64)
  ends = np.cumsum(sizes)
  order = tf.constant(np.concatenate(shards).astype(np.int64) if shards else
                      np.zeros(0, np.int64))
  starts_t, ends_t = tf.constant(ends - sizes), tf.constant(ends)
  images_t = tf.constant(images)
  labels_t = tf.constant(labels.astype(np.int32))
  table = tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(
          tf.constant(ids), tf.range(len(ids), dtype=tf.int64)), default_value=-1)

  def dataset_fn(cid) -> tf.data.Dataset:
    k = table.lookup(tf.convert_to_tensor(cid, tf.string))
    indices = order[starts_t[k]:ends_t[k]]
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=tf.gather(images_t, indices), y=tf.gather(labels_t, indices)))

  return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(ids, dataset_fn)


def federated_data(centralized: CentralizedData, shards: list[np.ndarray]) -> FederatedData:
  """The clients of `shards` (indices into the training split) and the test set."""
  return FederatedData(
      train=to_client_data(centralized.train_images, centralized.train_labels, shards),
      test_images=centralized.test_images, test_labels=centralized.test_labels,
      partition=shards,
  )


def load_federated(
    dataset: str, *, partition_type: str, num_clients: int, seed: int,
    classes_per_client: int = 2, dirichlet_alpha: float = 0.5,
    data_dir: Optional[str] = None,
) -> FederatedData:
  """Loads `dataset` and partitions its training split over `num_clients`."""
  data = load_centralized(dataset, data_dir)
  shards = partition(
      data.train_labels, partition_type=partition_type,
      num_clients=num_clients, seed=seed,
      classes_per_client=classes_per_client, dirichlet_alpha=dirichlet_alpha,
  )
  return federated_data(data, shards)


@dataclasses.dataclass(frozen=True)
class RunData:
  """What a training run reads: the clients' data and a test set, raw, and how to prepare them.

  Attributes:
    train: the clients' `ClientData` of `OrderedDict(x, y)` elements.
    test: the test examples (same elements) or None: the built-in test
      split, or the `test` split of every client of a file, pooled.
    element_fn: a (batched) element to the model's input: `normalize` for
      the built-in uint8 images, a cast to the model's input dtype for files.
    source: a line saying where the data come from.
    client_test: each client's test examples (`ClientData`) or None: a
      file's `test` split, or held out of `train` (`evaluation.held_out_split`).
    labels_max: the largest label of the clients and the test set where it
      is known without reading the datasets (the built-in arrays), else None.
  """
  train: tff.simulation.datasets.ClientData
  test: Optional[tf.data.Dataset]
  element_fn: Callable
  source: str
  client_test: Optional[tff.simulation.datasets.ClientData] = None
  labels_max: Optional[int] = None

  def test_batches(self, batch_size: int = 1000) -> Optional[tf.data.Dataset]:
    """The test set batched as `(x, y)` tuples for Keras, or None."""
    if self.test is None:
      return None
    return self.test.batch(batch_size).map(lambda e: tuple(self.element_fn(e).values()))


def builtin_run_data(centralized: CentralizedData, shards: Optional[list[np.ndarray]]) -> RunData:
  """The built-in dataset's clients of `shards` (None: no clients) and its test split."""
  return RunData(
      train=None if shards is None else to_client_data(
          centralized.train_images, centralized.train_labels, shards),
      test=tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
          x=centralized.test_images, y=centralized.test_labels.astype(np.int32))),
      element_fn=normalize, source='built-in',
      labels_max=int(max([centralized.test_labels.max()] + [
          centralized.train_labels[shard].max() for shard in shards or () if len(shard)])))


def cast_to(dtype) -> Callable:
  """An element function casting `x` to `dtype` and `y` to int32 (no scaling)."""
  def element_fn(element):
    return collections.OrderedDict(x=tf.cast(element['x'], dtype),
                                   y=tf.cast(element['y'], tf.int32))
  return element_fn


def file_run_data(splits, x_dtype, source: str) -> RunData:
  """A file source's splits (`sources.*.open_splits`): train, and the pooled test split if any."""
  # Seeded: TFF shuffles the clients' order (the sums then agree run to run).
  test = splits['test'].create_tf_dataset_from_all_clients(seed=0) if 'test' in splits else None
  return RunData(train=splits['train'], test=test, element_fn=cast_to(x_dtype), source=source,
                 client_test=splits.get('test'))


def preprocess_client_dataset(
    dataset: tf.data.Dataset, *, batch_size: int, epochs: int, seed: int,
    shuffle_buffer: int = 10_000, element_fn: Callable = None,
) -> tf.data.Dataset:
  """Shuffles (seeded), batches, repeats for local epochs and applies `element_fn` (`normalize`)."""
  return (
      dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
      .repeat(epochs)
      .batch(batch_size)
      .map(element_fn or normalize, num_parallel_calls=tf.data.AUTOTUNE)
      .prefetch(tf.data.AUTOTUNE)
  )


def test_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> tf.data.Dataset:
  """The centralized test set as batched `(x, y)` float32/int32 tuples."""
  ds = tf.data.Dataset.from_tensor_slices(
      collections.OrderedDict(x=images, y=labels.astype(np.int32))
  )
  return ds.batch(batch_size).map(lambda e: tuple(normalize(e).values()))
