"""`--client_data=tfrecord_dir:DIR`: one TFRecord file of `tf.train.Example`s per client.

`DIR/<client id>.tfrecord` holds a client's training examples and, where
present, `DIR/test/<client id>.tfrecord` its test examples; the element spec
is `DIR/element_spec.json` (written by `tff-sparsify-data`) or read off the
first record (`spec.py`). Read as TFF's `FilePerUserClientData` (FLAIR's
layout), each file through `tf.data.TFRecordDataset`.
"""

import collections
import os

from tff_sparsify.simulation.sources import SourceError
from tff_sparsify.simulation.sources import TEST
from tff_sparsify.simulation.sources import TRAIN
from tff_sparsify.simulation.sources import spec as spec_lib

SUFFIX = '.tfrecord'


def client_files(directory: str) -> dict[str, str]:
  """{client id: path} of the `*.tfrecord` files directly in `directory`."""
  return {name[:-len(SUFFIX)]: os.path.join(directory, name)
          for name in sorted(os.listdir(directory))
          if name.endswith(SUFFIX) and len(name) > len(SUFFIX)}


def check(path: str):
  """`path` is a readable directory with at least one client's `.tfrecord` file."""
  if not os.path.isdir(path):
    raise SourceError(f'{path}: no such directory')
  try:
    files = client_files(path)
  except OSError as e:
    raise SourceError(f'{path}: cannot be read ({e})') from None
  if not files:
    raise SourceError(f'{path}: holds no <client id>{SUFFIX} file')
  for name in files.values():
    if not os.access(name, os.R_OK):
      raise SourceError(f'{name}: cannot be read')


def num_clients(path: str) -> int:
  return len(client_files(path))


def count_records(path: str) -> int:
  """Records in a TFRecord file, from its length headers (pure Python).

  Each record is `uint64 length, uint32 crc, data, uint32 crc`; SourceError
  if the file does not end on a record boundary.
  """
  count, offset = 0, 0
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    while offset < size:
      header = f.read(8)
      if len(header) < 8:
        raise SourceError(f'{path}: not a TFRecord file (truncated record header)')
      offset += 16 + int.from_bytes(header, 'little')
      if offset > size:
        raise SourceError(f'{path}: not a TFRecord file (a record runs past its end)')
      f.seek(offset)
      count += 1
  return count


def client_counts(path: str) -> dict[str, dict[str, int]]:
  """{split: {client id: examples}}: `train`, and `test` if `DIR/test` has files."""
  counts = {TRAIN: {cid: count_records(f) for cid, f in client_files(path).items()}}
  test_dir = os.path.join(path, TEST)
  if os.path.isdir(test_dir) and client_files(test_dir):
    counts[TEST] = {cid: count_records(f) for cid, f in client_files(test_dir).items()}
  return counts


def split_names(path: str) -> dict[str, str]:
  del path
  return {TRAIN: TRAIN, TEST: TEST}


def records(root: str, client_id, split_name):
  """Graph: a client's serialized examples: `root/<id>.tfrecord`, or `root/test/<id>.tfrecord`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  directory = tf.where(tf.equal(split_name, TEST), root + '/' + TEST + '/', root + '/')
  return tf.data.TFRecordDataset(tf.strings.join([directory, client_id, SUFFIX]))


def client_dataset(root: str, client_id, split_name, selected: dict, features: dict):
  """Graph: a client's examples, `OrderedDict(x, y)`, parsed (`spec.batched_parser`)."""
  return spec_lib.batched_parser(selected, features)(records(root, client_id, split_name))


def stored_spec(path: str):
  """The spec the writer stored (`element_spec.json`), or None (pure Python)."""
  spec_path = os.path.join(path, spec_lib.SPEC_FILE)
  if not os.path.exists(spec_path):
    return None
  try:
    with open(spec_path) as f:
      return spec_lib.from_json(f.read(), spec_path)
  except OSError as e:
    raise SourceError(f'{spec_path}: cannot be read ({e})') from None


def read_spec(path: str) -> dict:
  """The stored spec, else the first record's."""
  spec = stored_spec(path)
  if spec is not None:
    return spec
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  first = next(iter(client_files(path).values()))
  try:
    record = next(iter(tf.data.TFRecordDataset(first).take(1)), None)
  except tf.errors.OpError as e:
    raise SourceError(f'{first}: not a TFRecord file ({e.message.splitlines()[0]})') from None
  if record is None:
    raise SourceError(f'{first}: no records')
  return spec_lib.from_example(record.numpy(), first)


def open_splits(path: str, features: dict[str, str]) -> collections.OrderedDict:
  """{split: ClientData of OrderedDict(x, y)}: `train`, and `test` if `DIR/test` exists."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  selected = spec_lib.select(read_spec(path), features, path)
  parse = spec_lib.batched_parser(selected, features)

  def dataset_fn(file_path):
    return parse(tf.data.TFRecordDataset(file_path))

  found = collections.OrderedDict()
  found[TRAIN] = tff.simulation.datasets.FilePerUserClientData(client_files(path), dataset_fn)
  test_dir = os.path.join(path, TEST)
  if os.path.isdir(test_dir) and client_files(test_dir):
    found[TEST] = tff.simulation.datasets.FilePerUserClientData(
        client_files(test_dir), dataset_fn)
  return found
