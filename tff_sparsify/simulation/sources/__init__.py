"""Client data sources: one module per on-disk format, one registry.

`--client_data=KIND:PATH` names a source; `KIND` is a key of `SOURCES`, whose
module has

- `check(path) -> None`: pure Python (sqlite3, os), run before TensorFlow
  loads; raises `SourceError` saying what is wrong with the file;
- `num_clients(path) -> int`: the training clients, pure Python;
- `stored_spec(path) -> dict | None`: the spec the writer stored, pure Python;
- `open_splits(path, features) -> dict[split name, ClientData]`: TFF
  `ClientData` of `OrderedDict(x=..., y=...)` elements per split present
  (`train`, and `test` where the data has one), parsed with the element
  spec the data carries (`spec.py`);
- `client_counts(path)`, `split_names(path)`: pure Python, for a worker's
  manifest (`silo.py`); `client_dataset(root, id, split, selected, features)`:
  the graph that reads one client where the data is (`client_ids.py`).

A new format is one module and one entry here. The built-in datasets
(`--dataset`, partitioned by `--partition`) are not a file source; the writer
(`tff-sparsify-data`, `sources.writer`) puts them, a directory of per-client
`.npz` files or a CSV with a client-id column into every format here.
"""

import importlib

SOURCES = {
    'sqlite': 'tff_sparsify.simulation.sources.sqlite',
    'tfrecord_dir': 'tff_sparsify.simulation.sources.tfrecord_dir',
    'tensor_dir': 'tff_sparsify.simulation.sources.tensor_dir',
}
TRAIN, TEST = 'train', 'test'


class SourceError(ValueError):
  """Client data that cannot be used; the message says why (the binaries name the flag)."""


def parse(client_data: str) -> tuple[str, str]:
  """`KIND:PATH` -> (kind, path); SourceError saying what is allowed."""
  kind, sep, path = client_data.partition(':')
  if not sep or kind not in SOURCES or not path:
    raise SourceError(f'must be KIND:PATH with KIND one of {", ".join(SOURCES)}')
  return kind, path


def module(kind: str):
  return importlib.import_module(SOURCES[kind])


def check(client_data: str):
  """Pure-Python checks of the file (exists, readable, TFF's layout); SourceError if not."""
  kind, path = parse(client_data)
  module(kind).check(path)


def num_clients(client_data: str) -> int:
  kind, path = parse(client_data)
  return module(kind).num_clients(path)


def check_features(client_data: str, features: dict):
  """With a stored spec, that it has the features named (pure Python); `spec.SpecError` if not."""
  from tff_sparsify.simulation.sources import spec  # pylint: disable=g-import-not-at-top
  kind, path = parse(client_data)
  stored = module(kind).stored_spec(path)
  if stored is not None:
    spec.select(stored, features, path)
