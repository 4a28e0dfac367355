r"""Seconds for the coordinator's label check on a SQLite federation: all clients in one pass.

Before training on `--client_data` with local workers, the coordinator
checks that every label fits the model (`run_inputs._labels_max`). It
made one dataset per client from Python (`before`, kept here); it now
reads all clients in one dataset (TFF's `create_tf_dataset_from_all_clients`).
`--sizes` clients of `--examples_per_client` FashionMNIST training
examples each, in a SQLite file written by `tff-sparsify-data`'s writer;
`before` is run on the sizes up to `--before_up_to` only (it took
42-43 ms a client in `results/label_scan.md`).

  python -m benchmarks.label_scan

Results: benchmarks/results/label_scan.{json,md}.
"""

import collections
import os
import platform
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf

from benchmarks import runs
from tff_sparsify import files
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import execution
from tff_sparsify.simulation import run_data
from tff_sparsify.simulation import run_inputs
from tff_sparsify.simulation.sources import sqlite
from tff_sparsify.simulation.sources import writer

_SIZES = flags.DEFINE_list('sizes', ['1000', '10000', '100000'], 'Numbers of clients.')
_EXAMPLES = flags.DEFINE_integer('examples_per_client', 8, 'Examples per client.')
_BEFORE_UP_TO = flags.DEFINE_integer('before_up_to', 10000,
                                     'Largest size the per-client scan is timed on.')
_OUTPUT = flags.DEFINE_string(
    'output', os.path.join(os.path.dirname(__file__), 'results', 'label_scan'),
    'Output path prefix (.json and .md are appended).')
SEED = 1990

execution.drop_import_time_default_context()


def _before(data: run_data.RunData) -> int:
  """The check as it was: one dataset per client, from Python."""
  found = -1
  for c in data.train.client_ids:
    found = max(found, int(data.train.create_tf_dataset_for_client(c).map(
        lambda e: tf.cast(e['y'], tf.int64)).reduce(tf.constant(-1, tf.int64), tf.maximum)))
  return found


def _timed(fn, data):
  start = time.perf_counter()
  found = fn(data)
  return time.perf_counter() - start, found


def main(argv):
  del argv
  centralized = data_sources.load_centralized('fashion_mnist')
  rng = np.random.default_rng(SEED)
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    for size in (int(s) for s in _SIZES.value):
      picks = rng.integers(0, len(centralized.train_labels), (size, _EXAMPLES.value))
      path = writer.write({'train': collections.OrderedDict(
          (data_sources.client_id(i), (centralized.train_images[p],
                                       centralized.train_labels[p].astype(np.int64)))
          for i, p in enumerate(picks))}, f'sqlite:{tmp}/fm_{size}.sqlite')
      data = run_data.RunData(train=sqlite.open_splits(path, dict(x='x', y='y'))['train'],
                              test=None, element_fn=lambda e: e, source=path)
      row = dict(clients=size, expected=int(centralized.train_labels[picks].max()))
      row['one_pass_s'], row['one_pass_found'] = _timed(
          run_inputs._labels_max, data)  # pylint: disable=protected-access
      if size <= _BEFORE_UP_TO.value:
        row['before_s'], row['before_found'] = _timed(_before, data)
      print(row, flush=True)
      rows.append(row)
  meta = dict(cpus=os.cpu_count(), machine=platform.processor() or platform.machine(),
              args=runs.flag_args(('sizes', 'examples_per_client', 'before_up_to')))
  lines = ['# The coordinator\'s label check on a SQLite federation', '',
           f'{meta["cpus"]} CPUs. Command: `python -m benchmarks.label_scan {meta["args"]}`. '
           'One run per size; `found` is the largest label each read, `expected` NumPy\'s.', '']
  lines += files.markdown_table(
      ['clients', 'before: s', 'one pass: s', 'ms per client, before / one pass', 'found',
       'expected'],
      [{'clients': r['clients'],
        'before: s': f'{r["before_s"]:.1f}' if 'before_s' in r else 'not run',
        'one pass: s': f'{r["one_pass_s"]:.1f}',
        'ms per client, before / one pass': (
            (f'{1e3 * r["before_s"] / r["clients"]:.1f}' if 'before_s' in r else '-') +
            f' / {1e3 * r["one_pass_s"] / r["clients"]:.2f}'),
        'found': f'{r.get("before_found", "-")} / {r["one_pass_found"]}',
        'expected': r['expected']} for r in rows])
  runs.write_results(_OUTPUT.value, dict(meta=meta, rows=rows), '\n'.join(lines) + '\n')


if __name__ == '__main__':
  app.run(main)
