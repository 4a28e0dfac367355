"""`--client_data=tensor_dir:DIR`: each client's examples as two whole tensors.

`DIR/<client id>.tensors` is a TFRecord file of two records, the client's
inputs and labels each as one serialized `TensorProto`
(`tf.io.serialize_tensor`); `DIR/test/<client id>.tensors` its test
examples where present; `DIR/element_spec.json` the spec and
`DIR/clients.json` each client's example count (`{split: {id: count}}`).

The built-in datasets go to the workers this way (`client_ids.write_builtin`):
a client is two tensors, written with one `serialize_tensor` each where
`tf.train.Example`s need one proto per example (60,000 for FashionMNIST,
seconds per run), and read back without parsing. `write` is the writer.
"""

import collections
import json
import os

from tff_sparsify.simulation.sources import SourceError
from tff_sparsify.simulation.sources import TEST
from tff_sparsify.simulation.sources import TRAIN
from tff_sparsify.simulation.sources import spec as spec_lib

SUFFIX = '.tensors'
COUNTS_FILE = 'clients.json'


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise SourceError(f'{path}: cannot be read ({e})') from None


def check(path: str):
  """A readable directory with `clients.json`, `element_spec.json` and every client's file."""
  if not os.path.isdir(path):
    raise SourceError(f'{path}: no such directory')
  counts = client_counts(path)
  stored_spec(path)
  for split, clients in counts.items():
    for client_id in clients:
      name = _file(path, split, client_id)
      if not os.access(name, os.R_OK):
        raise SourceError(f'{name}: cannot be read')


def client_counts(path: str) -> dict[str, dict[str, int]]:
  counts = _read_json(os.path.join(path, COUNTS_FILE))
  if (not isinstance(counts, dict) or TRAIN not in counts or not set(counts) <= {TRAIN, TEST}
      or not all(isinstance(c, dict) and all(isinstance(n, int) for n in c.values())
                 for c in counts.values())):
    raise SourceError(f'{os.path.join(path, COUNTS_FILE)}: must be {{"train": {{id: count}}, '
                      '"test": ...}}')
  return counts


def num_clients(path: str) -> int:
  return len(client_counts(path)[TRAIN])


def split_names(path: str) -> dict[str, str]:
  del path
  return {TRAIN: TRAIN, TEST: TEST}


def stored_spec(path: str) -> dict:
  spec_path = os.path.join(path, spec_lib.SPEC_FILE)
  if not os.path.exists(spec_path):
    raise SourceError(f'{spec_path}: missing')
  try:
    with open(spec_path) as f:
      return spec_lib.from_json(f.read(), spec_path)
  except OSError as e:
    raise SourceError(f'{spec_path}: cannot be read ({e})') from None


read_spec = stored_spec


def _file(root: str, split: str, client_id: str) -> str:
  directory = root if split == TRAIN else os.path.join(root, TEST)
  return os.path.join(directory, client_id + SUFFIX)


def client_dataset(root: str, client_id, split_name, selected: dict, features: dict):
  """Graph: a client's examples, `OrderedDict(x, y)` (y int32), from `root`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  del features
  x_dtype = tf.dtypes.as_dtype(selected['x']['dtype'])
  y_dtype = tf.dtypes.as_dtype(selected['y']['dtype'])
  directory = tf.where(tf.equal(split_name, TEST), root + '/' + TEST + '/', root + '/')
  # The two tensors are read when the computation runs, and the dataset
  # slices them: a lazy `TFRecordDataset(...).map(parse).unbatch()` holds no
  # less in memory (a client is one record) and made rounds by id slower
  # than rounds with the examples sent (`benchmarks/results/
  # scaling_paired_lazy_read.md` against `scaling_paired.md`).
  pair = tf.data.TFRecordDataset(
      tf.strings.join([directory, client_id, SUFFIX])).batch(2).get_single_element()
  x = tf.ensure_shape(tf.io.parse_tensor(pair[0], x_dtype), [None] + selected['x']['shape'])
  y = tf.ensure_shape(tf.io.parse_tensor(pair[1], y_dtype), [None])
  return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=tf.cast(y, tf.int32)))


def open_splits(path: str, features: dict[str, str]) -> collections.OrderedDict:
  """{split: ClientData of OrderedDict(x, y)} (TFF's `FilePerUserClientData`)."""
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  selected = spec_lib.select(stored_spec(path), features, path)
  found = collections.OrderedDict()
  for split, clients in client_counts(path).items():
    if not clients:  # TFF's FilePerUserClientData takes no empty split.
      continue

    def dataset_fn(file_path, split=split):
      # A str from `create_tf_dataset_for_client`, a string tensor from the
      # serializable path (`dataset_computation`, all clients at once).
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      name = tf.strings.split(file_path, '/')[-1]
      client_id = tf.strings.substr(name, 0, tf.strings.length(name) - len(SUFFIX))
      return client_dataset(path, client_id, split, selected, features)
    found[split] = tff.simulation.datasets.FilePerUserClientData(
        {c: _file(path, split, c) for c in clients}, dataset_fn)
  return found


def write(clients: dict, directory: str):
  """Writes `{split: {id: (x, y)}}` (NumPy) to the new `directory` (TensorFlow)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  first_x, _ = next(iter(clients[TRAIN].values()))
  spec = dict(x=dict(dtype=first_x.dtype.name, shape=list(first_x.shape[1:])),
              y=dict(dtype='int64', shape=[]))
  os.makedirs(directory)
  counts = {}
  for split, by_client in clients.items():
    os.makedirs(os.path.dirname(_file(directory, split, 'x')), exist_ok=True)
    counts[split] = {}
    for client_id, (x, y) in by_client.items():
      with tf.io.TFRecordWriter(_file(directory, split, client_id)) as writer:
        writer.write(tf.io.serialize_tensor(x).numpy())
        writer.write(tf.io.serialize_tensor(y.astype('int64')).numpy())
      counts[split][client_id] = int(len(y))
  with open(os.path.join(directory, spec_lib.SPEC_FILE), 'w') as f:
    f.write(spec_lib.to_json(spec) + '\n')
  with open(os.path.join(directory, COUNTS_FILE), 'w') as f:
    json.dump(counts, f, sort_keys=True)
