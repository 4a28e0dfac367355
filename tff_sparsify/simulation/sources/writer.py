"""Writes federated data to the formats of `sources` (`tff-sparsify-data`).

Inputs (`read_input`):
- `fashion_mnist`: the built-in FashionMNIST, its training split partitioned
  as `binaries.train` partitions it (same flags, same seed: the same clients)
  and its test split by the same partition, so that each client's test
  examples are of the classes it trains on and all of them make the test set;
  images stored as float32 in [0, 1] (TFF's EMNIST convention), `x / 255`
  exactly as the built-in path computes it;
- `npz_dir:DIR`: one `<client id>.npz` per client with arrays `x` and `y`
  (and optionally `x_test`, `y_test`);
- `csv:PATH`: a CSV with a header; a client-id column, a label column, an
  optional split column (`train` / `test`), every other column a number of
  the input vector.

Outputs (`write`): `sqlite:PATH` (TFF's SqlClientData tables, `train` and
`test` splits, and the `element_spec` table) and `tfrecord_dir:DIR`
(`DIR/<id>.tfrecord`, `DIR/test/<id>.tfrecord`, `DIR/element_spec.json`),
features `x` and `y`. Each output appears whole or not at all: written under
a temporary name beside it, then renamed.

Not TFF's `save_to_sql_client_data`: it gives each client one split, so a
client cannot have both training and test examples (TFF's own EMNIST has
both); the tables written are its tables.
"""

import collections
import csv
import os
import sqlite3

import numpy as np

from tff_sparsify import files
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import sources
from tff_sparsify.simulation.sources import spec as spec_lib
from tff_sparsify.simulation.sources import tfrecord_dir

TRAIN, TEST = sources.TRAIN, sources.TEST
INPUTS = ('fashion_mnist', 'npz_dir', 'csv')


class WriterError(ValueError):
  """Input that cannot be written; the message says why."""


# {split: {client id: (x, y)}}
Clients = dict


def _check_client_id(client_id: str, where: str):
  if (not client_id or client_id.startswith('.') or '/' in client_id or '\0' in client_id
      or "'" in client_id):
    raise WriterError(f'{where}: client id {client_id!r} cannot name a file (no "/", "\'", '
                      'no leading ".")')


def check_clients(clients: Clients, where: str):
  """Every client has x and y of the same length, one shape and kind of x, integer labels >= 0."""
  if not clients.get(TRAIN):
    raise WriterError(f'{where}: no training examples')
  shapes = set()
  for split, by_client in clients.items():
    for client_id, (x, y) in by_client.items():
      _check_client_id(client_id, where)
      if len(x) != len(y):
        raise WriterError(f'{where}: client {client_id} ({split}) has {len(x)} inputs but '
                          f'{len(y)} labels')
      if y.dtype.kind not in 'iu' or (len(y) and y.min() < 0):
        raise WriterError(f'{where}: client {client_id} ({split}): labels must be integers '
                          '>= 0')
      if x.dtype.kind not in 'fiub':
        raise WriterError(f'{where}: client {client_id} ({split}): inputs must be numbers, '
                          f'got {x.dtype}')
      shapes.add((x.shape[1:], x.dtype.kind == 'f'))
  if len(shapes) != 1:
    raise WriterError(f'{where}: clients differ in input shape or kind: {sorted(shapes)}')


def fashion_mnist(*, partition: str, num_clients: int, seed: int, classes_per_client: int = 2,
                  dirichlet_alpha: float = 0.5, data_dir=None) -> Clients:
  """The built-in FashionMNIST's clients, as `binaries.train` makes them."""
  data = data_sources.load_centralized('fashion_mnist', data_dir)
  clients = collections.OrderedDict()
  for split, images, labels in ((TRAIN, data.train_images, data.train_labels),
                                (TEST, data.test_images, data.test_labels)):
    try:
      shards = data_sources.partition(
          labels, partition_type=partition, num_clients=num_clients, seed=seed,
          classes_per_client=classes_per_client, dirichlet_alpha=dirichlet_alpha)
    except data_sources.DataError as e:
      raise WriterError(f'the {split} split: {e}') from None
    clients[split] = collections.OrderedDict(
        (data_sources.client_id(i), (images[s].astype(np.float32) / np.float32(255),
                                     labels[s].astype(np.int64)))
        for i, s in enumerate(shards))
  return clients


def npz_dir(directory: str) -> Clients:
  """`DIR/<client id>.npz` files with `x`, `y` (and `x_test`, `y_test`)."""
  if not os.path.isdir(directory):
    raise WriterError(f'{directory}: no such directory')
  names = sorted(n for n in os.listdir(directory) if n.endswith('.npz'))
  if not names:
    raise WriterError(f'{directory}: holds no <client id>.npz file')
  clients = collections.OrderedDict([(TRAIN, collections.OrderedDict()),
                                     (TEST, collections.OrderedDict())])
  for name in names:
    path = os.path.join(directory, name)
    try:
      with np.load(path, allow_pickle=False) as arrays:
        found = {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError) as e:
      raise WriterError(f'{path}: not a readable .npz file ({e})') from None
    for key in ('x', 'y'):
      if key not in found:
        raise WriterError(f'{path}: has no array {key!r} (has {", ".join(sorted(found))})')
    client_id = name[:-len('.npz')]
    clients[TRAIN][client_id] = (found['x'], found['y'])
    if 'x_test' in found and 'y_test' in found:
      clients[TEST][client_id] = (found['x_test'], found['y_test'])
  if not clients[TEST]:
    del clients[TEST]
  return clients


def csv_file(path: str, *, client_column: str = 'client_id', label_column: str = 'label',
             split_column: str = 'split') -> Clients:
  """A CSV: client id, label, optional split (train/test), the rest the input vector."""
  try:
    with open(path, newline='') as f:
      rows = list(csv.DictReader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise WriterError(f'{path}: cannot be read as CSV ({e})') from None
  if not rows:
    raise WriterError(f'{path}: no rows')
  header = list(rows[0])
  for column in (client_column, label_column):
    if column not in header:
      raise WriterError(f'{path}: no column {column!r} (columns: {", ".join(header)})')
  inputs = [c for c in header if c not in (client_column, label_column, split_column)]
  if not inputs:
    raise WriterError(f'{path}: no input columns besides {client_column} and {label_column}')
  grouped = collections.defaultdict(lambda: collections.defaultdict(list))
  for line, row in enumerate(rows, start=2):
    split = row.get(split_column) or TRAIN
    if split not in (TRAIN, TEST):
      raise WriterError(f'{path}:{line}: split {split!r} must be {TRAIN} or {TEST}')
    try:
      values = [float(row[c]) for c in inputs]
      label = int(row[label_column])
    except (TypeError, ValueError):
      raise WriterError(f'{path}:{line}: the inputs must be numbers and the label an '
                        'integer') from None
    grouped[split][row[client_column]].append((values, label))
  clients = collections.OrderedDict()
  for split in (TRAIN, TEST):
    if split in grouped:
      clients[split] = collections.OrderedDict(
          (cid, (np.array([v for v, _ in rows_], np.float32),
                 np.array([label for _, label in rows_], np.int64)))
          for cid, rows_ in sorted(grouped[split].items()))
  return clients


def _serialize(x, y) -> bytes:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  flat = np.ravel(x)
  feature = (tf.train.Feature(float_list=tf.train.FloatList(value=flat))
             if flat.dtype.kind == 'f' else
             tf.train.Feature(int64_list=tf.train.Int64List(value=flat.astype(np.int64))))
  return tf.train.Example(features=tf.train.Features(feature=dict(
      x=feature, y=tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y)]))
  ))).SerializeToString()


def _spec(clients: Clients) -> dict:
  return spec_lib.spec_of_arrays(*next(iter(clients[TRAIN].values())))


def _write_sqlite(clients: Clients, path: str):
  connection = sqlite3.connect(path)
  try:
    connection.execute('CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT '
                       'NOT NULL, serialized_example_proto BLOB NOT NULL)')
    connection.execute('CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name '
                       'TEXT NOT NULL, num_examples INTEGER NOT NULL)')
    connection.execute(f'CREATE TABLE {spec_lib.SPEC_TABLE} (spec TEXT NOT NULL)')
    connection.execute(f'INSERT INTO {spec_lib.SPEC_TABLE} VALUES (?)',
                       (spec_lib.to_json(_spec(clients)),))
    for split, by_client in clients.items():
      for client_id, (x, y) in by_client.items():
        connection.executemany(
            'INSERT INTO examples VALUES (?, ?, ?)',
            ((split, client_id, _serialize(xi, yi)) for xi, yi in zip(x, y)))
        connection.execute('INSERT INTO client_metadata VALUES (?, ?, ?)',
                           (client_id, split, len(y)))
    # TFF's reader selects one client's examples by client_id and split: without
    # an index every client read scans the whole table.
    connection.execute('CREATE INDEX examples_client ON examples (client_id, split_name)')
    connection.commit()
  finally:
    connection.close()


def _write_tfrecord_dir(clients: Clients, directory: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with open(os.path.join(directory, spec_lib.SPEC_FILE), 'w') as f:
    f.write(spec_lib.to_json(_spec(clients)) + '\n')
  for split, by_client in clients.items():
    target = directory if split == TRAIN else os.path.join(directory, TEST)
    os.makedirs(target, exist_ok=True)
    for client_id, (x, y) in by_client.items():
      with tf.io.TFRecordWriter(os.path.join(target, client_id + tfrecord_dir.SUFFIX)) as writer:
        for xi, yi in zip(x, y):
          writer.write(_serialize(xi, yi))


def write(clients: Clients, output: str, *, overwrite: bool = False) -> str:
  """Writes `clients` to `output` (`sqlite:PATH` or `tfrecord_dir:DIR`); returns the path."""
  kind, path = sources.parse(output)
  check_clients(clients, 'input')
  if os.path.lexists(path) and not overwrite:
    raise WriterError(f'{path} exists; pass --overwrite to replace it')
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  with files.atomic_path(path) as temp:
    if kind == 'sqlite':
      _write_sqlite(clients, temp)
    elif kind == 'tfrecord_dir':
      os.makedirs(temp)
      _write_tfrecord_dir(clients, temp)
    else:
      from tff_sparsify.simulation.sources import tensor_dir  # pylint: disable=g-import-not-at-top
      tensor_dir.write(clients, temp)
  return path


def read_input(spec: str, **kwargs) -> Clients:
  """The clients of an input spec: `fashion_mnist`, `npz_dir:DIR` or `csv:PATH`."""
  kind, _, path = spec.partition(':')
  if kind == 'fashion_mnist' and not path:
    return fashion_mnist(**kwargs)
  if kind == 'npz_dir' and path:
    return npz_dir(path)
  if kind == 'csv' and path:
    return csv_file(path)
  raise WriterError('must be fashion_mnist, npz_dir:DIR or csv:PATH')
