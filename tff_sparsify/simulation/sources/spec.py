"""The element spec a client data file carries, and the features a run reads.

Files hold `tf.train.Example`s, which keep values flat and untyped beyond
float / int64 / bytes: the shapes and dtypes come from a small JSON spec
the writer (`tff-sparsify-data`) stores with the data (beside a TFRecord
directory's files as `element_spec.json`; inside a SQLite file as the table
`element_spec`, which TFF's readers ignore):

    {"x": {"dtype": "float32", "shape": [28, 28]}, "y": {"dtype": "int64", "shape": []}}

Data without a spec (TFF's own published SQLite files) is read from its
first record: each feature a flat vector of its length (a scalar if 1),
float32 or int64.

`--features=x:NAME,y:NAME` names the input and label features (default
`x:x,y:y`). Pure Python.
"""

import json

SPEC_FILE = 'element_spec.json'
SPEC_TABLE = 'element_spec'
DTYPES = ('float32', 'int64', 'int32', 'uint8')
ROLES = ('x', 'y')
DEFAULT_FEATURES = 'x:x,y:y'


class SpecError(ValueError):
  """A spec or a features value that cannot be used; the message says why."""


def parse_features(features: str) -> dict[str, str]:
  """'x:NAME,y:NAME' -> {'x': NAME, 'y': NAME}; SpecError saying what is allowed."""
  found = {}
  for part in features.split(','):
    role, sep, name = part.strip().partition(':')
    if not sep or role not in ROLES or not name or role in found:
      raise SpecError('must be x:NAME,y:NAME (the input and the label feature)')
    found[role] = name
  if set(found) != set(ROLES):
    raise SpecError('must be x:NAME,y:NAME (the input and the label feature)')
  return found


def to_json(spec: dict) -> str:
  return json.dumps(spec, sort_keys=True)


def from_json(text: str, where: str) -> dict:
  """A spec from JSON text; SpecError naming `where` if it is not one."""
  try:
    spec = json.loads(text)
  except ValueError as e:
    raise SpecError(f'{where}: not JSON ({e})') from None
  if not isinstance(spec, dict) or not spec:
    raise SpecError(f'{where}: not a JSON object of features')
  for name, entry in spec.items():
    if (not isinstance(entry, dict) or entry.get('dtype') not in DTYPES
        or not isinstance(entry.get('shape'), list)
        or not all(isinstance(d, int) and d > 0 for d in entry['shape'])):
      raise SpecError(f'{where}: feature {name!r} must be {{"dtype": one of '
                      f'{", ".join(DTYPES)}, "shape": [positive ints]}}')
  return spec


def from_example(serialized: bytes, where: str) -> dict:
  """A spec read off one serialized `tf.train.Example` (flat vectors)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  example = tf.train.Example()
  try:
    example.ParseFromString(serialized)
  except Exception as e:  # pylint: disable=broad-except  (protobuf's DecodeError)
    raise SpecError(f'{where}: a record is not a tf.train.Example ({e})') from None
  spec = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof('kind')
    if kind == 'bytes_list' or kind is None:
      continue
    values = getattr(feature, kind).value
    spec[name] = dict(dtype='float32' if kind == 'float_list' else 'int64',
                      shape=[] if len(values) == 1 else [len(values)])
  return spec


def select(spec: dict, features: dict[str, str], where: str) -> dict:
  """The entries of the features named for x and y; SpecError naming a missing one."""
  for role in ROLES:
    if features[role] not in spec:
      raise SpecError(
          f'{where} has no feature {features[role]!r} (--features={role}:...); it has '
          f'{", ".join(sorted(spec)) or "none"}')
  label = spec[features['y']]
  if label['shape'] or label['dtype'] == 'float32':
    raise SpecError(f'{where}: label feature {features["y"]!r} must be one integer per '
                    f'example, got {label["dtype"]} of shape {label["shape"]}')
  return {role: spec[features[role]] for role in ROLES}


def spec_of_arrays(x, y) -> dict:
  """The spec of NumPy arrays of examples (first axis: examples), for the writer."""
  dtype = 'float32' if x.dtype.kind == 'f' else 'int64'
  return dict(x=dict(dtype=dtype, shape=list(x.shape[1:])),
              y=dict(dtype='int64', shape=[]))


def batched_parser(selected: dict, features: dict[str, str], batch_size: int = 256):
  """`dataset of serialized tf.train.Example -> dataset of OrderedDict(x, y)`, cached.

  Parses and converts `batch_size` records per call (TFF's own parser takes
  one: the paper's FashionMNIST protocol then ran 2.9x the built-in path's
  round time, `client_data_round_time_per_example_parser.md`) and caches the
  parsed client dataset, so that a client's local epochs read its file once.
  x keeps the spec's dtype, y becomes int32.
  """
  import collections  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x_name, y_name = features['x'], features['y']
  x_dtype = tf.dtypes.as_dtype(selected['x']['dtype'])
  parse_spec = {
      x_name: tf.io.FixedLenFeature(selected['x']['shape'],
                                    tf.float32 if x_dtype.is_floating else tf.int64),
      y_name: tf.io.FixedLenFeature([], tf.int64)}

  def to_xy(parsed):
    return collections.OrderedDict(x=tf.cast(parsed[x_name], x_dtype),
                                   y=tf.cast(parsed[y_name], tf.int32))

  def parse(dataset):
    # Parsed and converted a batch at a time, then unbatched: a map per
    # example after `unbatch` cost more than the whole read (issue 33).
    return (dataset.batch(batch_size)
            .map(lambda b: to_xy(tf.io.parse_example(b, parse_spec)))
            .unbatch().cache())

  return parse
