r"""Writes federated data for `--client_data` (TFF's SQLite layout, a TFRecord directory).

Examples:

  # FashionMNIST, partitioned as binaries.train partitions it:
  tff-sparsify-data --input=fashion_mnist --partition=shards --num_clients=10 \
    --output=sqlite:data/fmnist.sqlite,tfrecord_dir:data/fmnist_tfrecords
  # Your clients: one <client id>.npz per client (x, y, optionally x_test, y_test)
  tff-sparsify-data --input=npz_dir:my_clients --output=sqlite:data/mine.sqlite
  # A CSV with client_id, label, optional split (train/test) and the input columns
  tff-sparsify-data --input=csv:hospital_records.csv --output=tfrecord_dir:data/records

Then `tff-sparsify-train --client_data=sqlite:data/mine.sqlite --model=my_model.keras`.
Each output appears whole or not at all; an existing one is kept unless
--overwrite. See `tff_sparsify/simulation/sources/writer.py`.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from tff_sparsify import config as config_lib
from tff_sparsify.binaries import flag_utils
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import sources

_INPUT = flags.DEFINE_string(
    'input', None, 'fashion_mnist (the built-in data, partitioned by the flags below), '
    'npz_dir:DIR (DIR/<client id>.npz with arrays x, y and optionally x_test, y_test) or '
    'csv:PATH (columns client_id, label, optional split, the rest the input vector).')
_OUTPUT = flags.DEFINE_list(
    'output', None, 'sqlite:PATH, tfrecord_dir:DIR and/or tensor_dir:DIR (two whole '
    'tensors per client, the fastest to write and read), comma-separated.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace outputs that exist.')
_PARTITION = flags.DEFINE_enum(
    'partition', 'non_iid', list(config_lib.PARTITIONS),
    'With --input=fashion_mnist: as binaries.train --partition.')
_NUM_CLIENTS = flags.DEFINE_integer('num_clients', 10, 'With --input=fashion_mnist.')
_CLASSES_PER_CLIENT = flags.DEFINE_integer(
    'classes_per_client', 2, 'With --input=fashion_mnist: for non_iid and shards.')
_DIRICHLET_ALPHA = flags.DEFINE_float(
    'dirichlet_alpha', 0.5, 'With --input=fashion_mnist: for dirichlet.')
_SEED = flags.DEFINE_integer('seed', 1990, 'With --input=fashion_mnist: the partition seed.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'With --input=fashion_mnist: the IDX files (as binaries.train).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  if not _INPUT.value:
    flag_utils.fail(_INPUT, 'is required: fashion_mnist, npz_dir:DIR or csv:PATH')
  if not _OUTPUT.value:
    flag_utils.fail(_OUTPUT, 'is required: sqlite:PATH and/or tfrecord_dir:DIR')
  for output in _OUTPUT.value:
    try:
      _, path = sources.parse(output)
    except sources.SourceError as e:
      flag_utils.fail(_OUTPUT, f'{output}: {e}')
    if os.path.lexists(path) and not _OVERWRITE.value:
      flag_utils.fail(_OUTPUT, f'{path} exists; pass --overwrite to replace it')
  from tff_sparsify.simulation.sources import writer  # pylint: disable=g-import-not-at-top  (TF)
  try:
    clients = writer.read_input(
        _INPUT.value, partition=_PARTITION.value, num_clients=_NUM_CLIENTS.value,
        seed=_SEED.value, classes_per_client=_CLASSES_PER_CLIENT.value,
        dirichlet_alpha=_DIRICHLET_ALPHA.value, data_dir=_DATA_DIR.value)
    writer.check_clients(clients, _INPUT.value)
  except (writer.WriterError, data_sources.DataError) as e:
    flag_utils.fail(_INPUT, str(e))
  for output in _OUTPUT.value:
    try:
      path = writer.write(clients, output, overwrite=_OVERWRITE.value)
    except (writer.WriterError, OSError) as e:
      flag_utils.fail(_OUTPUT, f'{output}: {e}')
    counts = {split: (len(c), sum(len(y) for _, y in c.values())) for split, c in clients.items()}
    print(f'wrote {path}: ' + ', '.join(f'{split} {n} clients, {m} examples'
                                       for split, (n, m) in counts.items()), flush=True)


def run():
  flag_utils.run_main(main)


if __name__ == '__main__':
  run()
