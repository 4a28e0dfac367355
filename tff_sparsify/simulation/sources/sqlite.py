"""`--client_data=sqlite:PATH`: TFF's `SqlClientData` layout.

A SQLite file with tables `examples(split_name, client_id,
serialized_example_proto)` and `client_metadata(client_id, split_name,
num_examples)`, as TFF publishes EMNIST, Shakespeare, Stack Overflow,
CIFAR-100 and CelebA and as `tff.simulation.datasets.save_to_sql_client_data`
writes. Read with TFF's `SqlClientData` and `spec.batched_parser`; the split `train`
trains (or the only split, e.g. TFF's writer's `default_split`), the split
`test`, where present, evaluates. The element spec is the file's
`element_spec` table (written by `tff-sparsify-data`) or read off the first
example (`spec.py`).

`check` is sqlite3 only (before TensorFlow loads): TFF's own format check
(`sql_client_data._check_database_format`) is private and imports TFF.
"""

import collections
import os
import sqlite3

from tff_sparsify.simulation.sources import SourceError
from tff_sparsify.simulation.sources import TEST
from tff_sparsify.simulation.sources import TRAIN
from tff_sparsify.simulation.sources import spec as spec_lib

_TABLES = dict(examples=('split_name', 'client_id', 'serialized_example_proto'),
               client_metadata=('client_id', 'split_name', 'num_examples'))


def _connect(path: str) -> sqlite3.Connection:
  # Read-only: checking a user's file never changes it.
  return sqlite3.connect(f'file:{os.path.abspath(path)}?mode=ro', uri=True)


def check(path: str):
  """The file is a SQLite database with TFF's tables and a training split."""
  if not os.path.isfile(path):
    raise SourceError(f'{path}: no such file')
  try:
    with open(path, 'rb') as f:
      header = f.read(16)
    if header != b'SQLite format 3\x00':
      raise SourceError(f'{path}: not a SQLite database')
    connection = _connect(path)
    try:
      tables = {row[0] for row in connection.execute(
          "SELECT name FROM sqlite_master WHERE type = 'table'")}
      for table, columns in _TABLES.items():
        if table not in tables:
          raise SourceError(f'{path}: no table {table!r}: not TFF\'s SqlClientData layout '
                            '(tables examples and client_metadata)')
        found = {row[1] for row in connection.execute(f'PRAGMA table_info({table})')}
        missing = [c for c in columns if c not in found]
        if missing:
          raise SourceError(f'{path}: table {table!r} has no column {missing[0]!r}')
      _train_split(path, _splits(connection))
    finally:
      connection.close()
  except (OSError, sqlite3.Error) as e:
    raise SourceError(f'{path}: cannot be read ({e})') from None


def num_clients(path: str) -> int:
  """Clients of the training split (sqlite3 only)."""
  connection = _connect(path)
  try:
    split = _train_split(path, _splits(connection))
    return connection.execute('SELECT COUNT(DISTINCT client_id) FROM client_metadata '
                              'WHERE split_name = ?', (split,)).fetchone()[0]
  finally:
    connection.close()


def client_counts(path: str) -> dict[str, dict[str, int]]:
  """{split: {client id: examples}} from `client_metadata` (sqlite3 only).

  Keys are `train` (the training split, whatever the file calls it) and
  `test` where present; `split_names` gives the file's own names.
  """
  connection = _connect(path)
  try:
    names = split_names(path, connection)
    counts = {}
    for split, name in names.items():
      counts[split] = {row[0]: int(row[1]) for row in connection.execute(
          'SELECT client_id, num_examples FROM client_metadata WHERE split_name = ? '
          'ORDER BY client_id', (name,))}
    return counts
  finally:
    connection.close()


def split_names(path: str, connection=None) -> dict[str, str]:
  """{`train`: the file's training split, `test`: `test` where present}."""
  own = connection is None
  connection = connection or _connect(path)
  try:
    splits = _splits(connection)
  finally:
    if own:
      connection.close()
  names = {TRAIN: _train_split(path, splits)}
  if TEST in splits:
    names[TEST] = TEST
  return names


def records(root: str, client_id, split_name):
  """Graph: a client's serialized examples from the SQLite file at `root`.

  `client_id` and `split_name` are string tensors; quotes in them are
  doubled (SQL's string literal escape), as TFF's `SqlClientData` builds
  the same query by concatenation.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def quoted(value):
    return tf.strings.regex_replace(value, "'", "''")

  query = tf.strings.join([
      "SELECT serialized_example_proto FROM examples WHERE client_id = '",
      quoted(client_id), "' AND split_name = '", quoted(split_name), "'"])
  return tf.data.experimental.SqlDataset('sqlite', root, query, (tf.string,))


def _splits(connection) -> list[str]:
  return sorted(row[0] for row in connection.execute(
      'SELECT DISTINCT split_name FROM client_metadata'))


def _train_split(path: str, splits: list[str]) -> str:
  if TRAIN in splits:
    return TRAIN
  others = [s for s in splits if s != TEST]
  if len(others) == 1:
    return others[0]
  raise SourceError(f'{path}: no split {TRAIN!r} to train on (splits: '
                    f'{", ".join(splits) or "none"})')


def client_dataset(root: str, client_id, split_name, selected: dict, features: dict):
  """Graph: a client's examples, `OrderedDict(x, y)`, parsed (`spec.batched_parser`)."""
  return spec_lib.batched_parser(selected, features)(records(root, client_id, split_name))


def stored_spec(path: str):
  """The spec the writer stored (the `element_spec` table), or None (sqlite3 only)."""
  connection = _connect(path)
  try:
    tables = {row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if spec_lib.SPEC_TABLE not in tables:
      return None
    row = connection.execute(f'SELECT spec FROM {spec_lib.SPEC_TABLE}').fetchone()
  finally:
    connection.close()
  if row is None:
    raise SourceError(f'{path}: table {spec_lib.SPEC_TABLE} is empty')
  return spec_lib.from_json(row[0], f'{path} ({spec_lib.SPEC_TABLE})')


def read_spec(path: str) -> dict:
  """The file's element spec: the stored one, else its first example's."""
  spec = stored_spec(path)
  if spec is not None:
    return spec
  connection = _connect(path)
  try:
    row = connection.execute('SELECT serialized_example_proto FROM examples LIMIT 1').fetchone()
  finally:
    connection.close()
  if row is None:
    raise SourceError(f'{path}: no examples')
  return spec_lib.from_example(row[0], path)


def open_splits(path: str, features: dict[str, str]) -> collections.OrderedDict:
  """{split: ClientData of OrderedDict(x, y)}: `train` (the training split), `test` if present."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  selected = spec_lib.select(read_spec(path), features, path)
  connection = _connect(path)
  try:
    splits = _splits(connection)
  finally:
    connection.close()
  parse = spec_lib.batched_parser(selected, features)
  found = collections.OrderedDict()
  for split, name in ((TRAIN, _train_split(path, splits)), (TEST, TEST)):
    if name in splits:
      found[split] = tff.simulation.datasets.SqlClientData(path, name).preprocess(parse)
  return found
