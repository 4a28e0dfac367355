"""Data files and client partitions, in NumPy only (no TensorFlow import).

FashionMNIST is read from the original IDX `.gz` files (the Debian package
`dataset-fashion-mnist` installs them under `DEFAULT_FASHION_MNIST_DIR`), each
file's magic number, shape and length checked, so training works offline and
a bad file is named in one line before TensorFlow loads. CIFAR-10 (and
FashionMNIST where no IDX files exist) come from TFDS. Partitions (Stripelis
et al., Section 4): IID, Non-IID by `classes_per_client` classes per client
(Zhao et al. 2018), Dirichlet(alpha); deterministic by seed.
"""

import collections
import dataclasses
import gzip
import os
import struct
from typing import Optional

import numpy as np

DEFAULT_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_APT_COMMAND = 'apt-get install -y dataset-fashion-mnist'
DATASETS = ('fashion_mnist', 'cifar10')
PARTITIONS = ('iid', 'non_iid', 'dirichlet', 'shards')
NUM_CLASSES = 10

_IDX_IMAGES_MAGIC = 2051
_IDX_LABELS_MAGIC = 2049
_FASHION_MNIST_FILES = collections.OrderedDict(
    train_images='train-images-idx3-ubyte.gz',
    train_labels='train-labels-idx1-ubyte.gz',
    test_images='t10k-images-idx3-ubyte.gz',
    test_labels='t10k-labels-idx1-ubyte.gz',
)


class DataError(ValueError):
  """A data file or a data request is invalid; the message says why."""


@dataclasses.dataclass(frozen=True)
class CentralizedData:
  """A labelled train/test split held in memory as uint8 images."""

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray



def _read_idx(path: str, magic: int, expected_dims: tuple[int, ...]) -> np.ndarray:
  """Reads one gzip'd IDX file, validating header and payload size."""
  if not os.path.isfile(path):
    raise DataError(f'{path}: file not found')
  try:
    with gzip.open(path, 'rb') as f:
      raw = f.read()
  except (OSError, EOFError) as e:
    raise DataError(f'{path}: not a readable gzip file ({e})') from e
  ndim = len(expected_dims) + 1
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise DataError(f'{path}: truncated header ({len(raw)} bytes)')
  found_magic = struct.unpack('>i', raw[:4])[0]
  if found_magic != magic:
    raise DataError(
        f'{path}: bad magic number {found_magic}, expected {magic}'
    )
  dims = struct.unpack(f'>{ndim}i', raw[4:header_size])
  if tuple(dims[1:]) != expected_dims:
    raise DataError(
        f'{path}: item shape {tuple(dims[1:])}, expected {expected_dims}'
    )
  expected_bytes = int(np.prod(dims))
  payload = len(raw) - header_size
  if payload != expected_bytes:
    raise DataError(
        f'{path}: header says {dims[0]} items ({expected_bytes} bytes) but the '
        f'file holds {payload} bytes: truncated or corrupted'
    )
  return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def load_fashion_mnist_idx(data_dir: str = DEFAULT_FASHION_MNIST_DIR) -> CentralizedData:
  """Loads FashionMNIST from the four original IDX `.gz` files in `data_dir`.

  Raises:
    DataError: naming the file, if one is missing, truncated or inconsistent.
  """
  if not os.path.isdir(data_dir):
    raise DataError(
        f'FashionMNIST directory {data_dir} does not exist; install the data '
        f'with `{FASHION_MNIST_APT_COMMAND}` or point --data_dir at the four '
        'IDX .gz files'
    )
  arrays = {}
  for key, name in _FASHION_MNIST_FILES.items():
    path = os.path.join(data_dir, name)
    if key.endswith('images'):
      arrays[key] = _read_idx(path, _IDX_IMAGES_MAGIC, (28, 28))
    else:
      labels = _read_idx(path, _IDX_LABELS_MAGIC, ())
      if labels.size and labels.max() >= NUM_CLASSES:
        raise DataError(
            f'{path}: label {int(labels.max())} outside [0, {NUM_CLASSES})'
        )
      arrays[key] = labels
  for split in ('train', 'test'):
    n_images = len(arrays[f'{split}_images'])
    n_labels = len(arrays[f'{split}_labels'])
    if n_images != n_labels:
      raise DataError(
          f'{data_dir}: {split} split has {n_images} images but {n_labels} '
          'labels'
      )
  return CentralizedData(**arrays)


def load_tfds(name: str, data_dir: Optional[str] = None, download: bool = True) -> CentralizedData:
  """Loads a TFDS image classification dataset ('fashion_mnist', 'cifar10').

  With download=False only a dataset TFDS has already prepared loads (no
  network); TFDS raises otherwise.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  splits = tfds.load(
      name, split=['train', 'test'], as_supervised=True, data_dir=data_dir,
      download=download
  )

  def to_numpy(ds):
    xs, ys = zip(*tfds.as_numpy(ds.batch(10_000)))
    return np.concatenate(xs), np.concatenate(ys)

  (train_x, train_y), (test_x, test_y) = map(to_numpy, splits)
  if name == 'fashion_mnist':
    train_x, test_x = train_x[..., 0], test_x[..., 0]
  return CentralizedData(
      train_images=train_x, train_labels=train_y.astype(np.int64),
      test_images=test_x, test_labels=test_y.astype(np.int64),
  )


def load_centralized(dataset: str, data_dir: Optional[str] = None) -> CentralizedData:
  """Loads `dataset`: FashionMNIST from IDX files when present, else TFDS."""
  if dataset not in DATASETS:
    raise DataError(f'dataset must be one of {DATASETS}, got {dataset!r}')
  if dataset == 'fashion_mnist':
    idx_dir = data_dir or DEFAULT_FASHION_MNIST_DIR
    if data_dir is not None or os.path.isdir(idx_dir):
      return load_fashion_mnist_idx(idx_dir)
    try:
      return load_tfds('fashion_mnist')
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(
          f'FashionMNIST not found in {DEFAULT_FASHION_MNIST_DIR} and TFDS '
          f'could not load it ({type(e).__name__}); install it with '
          f'`{FASHION_MNIST_APT_COMMAND}` or pass --data_dir'
      ) from e
  return load_tfds(dataset, data_dir=data_dir)


def _check_positive(name: str, value: int):
  if value < 1:
    raise DataError(f'{name} must be a positive integer, got {value}')


def partition_iid(labels: np.ndarray, num_clients: int, seed: int) -> list[np.ndarray]:
  """Shuffles the examples and deals them into `num_clients` equal shards."""
  _check_positive('num_clients', num_clients)
  if num_clients > len(labels):
    raise DataError(
        f'num_clients ({num_clients}) exceeds the number of examples '
        f'({len(labels)})'
    )
  order = np.random.default_rng(seed).permutation(len(labels))
  return [np.sort(shard) for shard in np.array_split(order, num_clients)]


def partition_by_classes(
    labels: np.ndarray, num_clients: int, classes_per_client: int, seed: int
) -> list[np.ndarray]:
  """Non-IID split: each client holds examples of `classes_per_client` classes.

  Classes are taken in a seeded random order and client `i` receives the k
  consecutive classes `order[(s_i + j) mod C]`, `j < k`, with
  `s_i = i * k + floor(i * k / C)`: each pass over the classes is shifted by
  one, so classes are spread evenly and clients differ (10 clients x 2 of 10
  classes: every class at exactly 2 clients, 10 distinct pairs). The examples
  of a class are split evenly among the clients holding it.
  """
  _check_positive('num_clients', num_clients)
  num_classes = int(labels.max()) + 1 if len(labels) else 0
  if not 1 <= classes_per_client <= num_classes:
    raise DataError(
        f'classes_per_client must be in [1, {num_classes}], got '
        f'{classes_per_client}'
    )
  if num_clients > len(labels):
    raise DataError(
        f'num_clients ({num_clients}) exceeds the number of examples '
        f'({len(labels)})'
    )
  rng = np.random.default_rng(seed)
  class_order = rng.permutation(num_classes)
  holders = collections.defaultdict(list)
  for client in range(num_clients):
    start = client * classes_per_client
    start += start // num_classes
    for j in range(classes_per_client):
      holders[class_order[(start + j) % num_classes]].append(client)
  shards = [[] for _ in range(num_clients)]
  for label, clients in holders.items():
    examples = rng.permutation(np.flatnonzero(labels == label))
    if len(examples) < len(clients):
      raise DataError(
          f'class {label} has {len(examples)} examples for {len(clients)} '
          'clients; use fewer clients or more classes_per_client'
      )
    for client, part in zip(clients, np.array_split(examples, len(clients))):
      shards[client].append(part)
  return [np.sort(np.concatenate(parts)) for parts in shards]


def partition_dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, seed: int,
    max_attempts: int = 100,
) -> list[np.ndarray]:
  """Per class, splits the examples by proportions drawn from Dir(alpha).

  Draws are repeated (deterministically) until every client has an example.
  """
  _check_positive('num_clients', num_clients)
  if not alpha > 0:
    raise DataError(f'dirichlet_alpha must be > 0, got {alpha}')
  if num_clients > len(labels):
    raise DataError(
        f'num_clients ({num_clients}) exceeds the number of examples '
        f'({len(labels)})'
    )
  rng = np.random.default_rng(seed)
  for _ in range(max_attempts):
    shards = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
      examples = rng.permutation(np.flatnonzero(labels == label))
      proportions = rng.dirichlet(np.full(num_clients, alpha))
      cuts = (np.cumsum(proportions)[:-1] * len(examples)).astype(int)
      for client, part in enumerate(np.split(examples, cuts)):
        shards[client].append(part)
    result = [np.sort(np.concatenate(parts)) for parts in shards]
    if min(len(r) for r in result) > 0:
      return result
  raise DataError(
      f'dirichlet_alpha={alpha} left a client without examples in '
      f'{max_attempts} draws; raise dirichlet_alpha or lower num_clients'
  )


def partition_shards(
    labels: np.ndarray, num_clients: int, classes_per_client: int,
) -> list[np.ndarray]:
  """The FedSparsify authors' non-IID split, exactly (no randomness).

  As `PartitioningScheme.non_iid_partition` in their repository
  (dstripelis/FedSparsify, `utils/data_distribution.py`): the examples are
  sorted by label (stably, so each class keeps the dataset's order) and cut
  into `num_clients * classes_per_client` equal chunks; each client in turn
  takes, from the chunks left, the first one and then each next chunk none
  of whose classes it already holds, until it has `classes_per_client`
  chunks. FashionMNIST, 10 clients x 2 classes: clients 0 and 1 hold
  classes {0, 1} (half of each), clients 2 and 3 classes {2, 3}, and so on;
  100 clients x 2: 20 clients per class pair, 600 examples each.

  Returns:
    Per client, the indices of its examples, chunk after chunk.

  Raises:
    DataError: the examples do not cut into equal chunks, more classes per
      client than classes, or a client finds no chunk of a new class (the
      authors' code then fails with "Not all training data have been
      assigned").
  """
  _check_positive('num_clients', num_clients)
  _check_positive('classes_per_client', classes_per_client)
  num_classes = len(np.unique(labels))
  if classes_per_client > num_classes:
    raise DataError(f'classes_per_client ({classes_per_client}) exceeds the number of '
                    f'classes ({num_classes}) for partition shards')
  num_chunks = num_clients * classes_per_client
  if len(labels) % num_chunks:
    raise DataError(
        f'partition shards cuts the {len(labels)} training examples into num_clients x '
        f'classes_per_client = {num_chunks} equal chunks, which does not divide them')
  size = len(labels) // num_chunks
  by_label = np.argsort(labels, kind='stable')
  chunks = [by_label[i:i + size] for i in range(0, len(by_label), size)]
  left = list(range(num_chunks))
  shards = []
  for client in range(num_clients):
    taken, held = [], set()
    for chunk in left:
      if len(taken) == classes_per_client:
        break
      chunk_classes = set(labels[chunks[chunk]].tolist())
      if not held & chunk_classes:
        taken.append(chunk)
        held |= chunk_classes
    if len(taken) < classes_per_client:
      raise DataError(
          f'partition shards: client {client} finds {len(taken)} chunks of classes it does not '
          f'hold, not {classes_per_client}; use other num_clients or classes_per_client')
    left = [chunk for chunk in left if chunk not in taken]
    shards.append(np.concatenate([chunks[chunk] for chunk in taken]))
  return shards


def partition(
    labels: np.ndarray, *, partition_type: str, num_clients: int, seed: int,
    classes_per_client: int = 2, dirichlet_alpha: float = 0.5,
) -> list[np.ndarray]:
  """Dispatches to the partition named by `partition_type`."""
  if partition_type == 'iid':
    return partition_iid(labels, num_clients, seed)
  if partition_type == 'non_iid':
    return partition_by_classes(labels, num_clients, classes_per_client, seed)
  if partition_type == 'dirichlet':
    return partition_dirichlet(labels, num_clients, dirichlet_alpha, seed)
  if partition_type == 'shards':
    return partition_shards(labels, num_clients, classes_per_client)
  raise DataError(f'partition must be one of {PARTITIONS}, got {partition_type!r}')


def client_id(index: int) -> str:
  return f'client_{index:04d}'
