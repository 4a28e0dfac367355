r"""Coordinator memory and seconds per round against the number of clients (issue 34).

A federation of `--sizes` clients (a SQLite file written by `tff-sparsify-data`'s
writer, `--examples_per_client` examples each drawn from FashionMNIST's
training split), served by one local worker by client id, FedAvg on the
paper's FC model, `--clients_per_round` clients per round, 1 local epoch.
Each size runs in a child process of its own, so that its peak RSS
(VmHWM of the coordinator process; the worker is another process) is its
own; a round is `process.next` on the sampled ids. Reported per size:
peak RSS, median seconds per round (and spread) after `--warmup_rounds`,
the manifest's bytes, and both as ratios to the smallest size.

  python -m benchmarks.federation_size --sizes=100,10000,100000

Results: benchmarks/results/federation_size.{json,md}. The files are cached
in `--work_dir` (writing 100,000 clients takes minutes).
"""

import collections
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags  # pylint: disable=g-import-not-at-top
import numpy as np

from benchmarks import runs
from tff_sparsify import files
from tff_sparsify.binaries import flag_utils

_SIZES = flags.DEFINE_list('sizes', ['100', '10000', '100000'], 'Numbers of clients.')
_EXAMPLES = flags.DEFINE_integer('examples_per_client', 8, 'Examples per client.')
_PER_ROUND = flags.DEFINE_integer('clients_per_round', 50, 'Clients per round.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds.')
_WARMUP = flags.DEFINE_integer('warmup_rounds', 1, 'Untimed rounds.')
_WORK_DIR = flags.DEFINE_string('work_dir', '/tmp/tff_sparsify_federation_size',
                                'Where the SQLite files are cached.')
_CHILD = flags.DEFINE_integer('child', None, 'Internal: measure this size in this process.')
_OUTPUT = flags.DEFINE_string(
    'output', os.path.join(os.path.dirname(__file__), 'results', 'federation_size'),
    'Output path prefix (.json and .md are appended).')
SEED = 1990


def _file(size: int) -> str:
  from tff_sparsify.simulation import data_sources  # pylint: disable=g-import-not-at-top
  from tff_sparsify.simulation.sources import writer  # pylint: disable=g-import-not-at-top
  path = os.path.join(_WORK_DIR.value, f'fashion_mnist_{size}x{_EXAMPLES.value}.sqlite')
  if not os.path.exists(path):
    data = data_sources.load_centralized('fashion_mnist')
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, len(data.train_labels), (size, _EXAMPLES.value))
    clients = {'train': collections.OrderedDict(
        (data_sources.client_id(i), (data.train_images[p], data.train_labels[p].astype(np.int64)))
        for i, p in enumerate(picks))}
    writer.write(clients, f'sqlite:{path}')
  return path


def _peak_rss_mb() -> float:
  """This process's peak RSS (VmHWM): unlike `ru_maxrss`, not inherited from the
  parent across fork and exec (the parent holds the clients it wrote)."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  raise RuntimeError('no VmHWM in /proc/self/status')


def _child(size: int) -> dict:
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from tff_sparsify import config as config_lib
  from tff_sparsify.learning import registry
  from tff_sparsify.simulation import client_ids
  from tff_sparsify.simulation import run_data as data
  from tff_sparsify.simulation import execution
  from tff_sparsify.simulation import training
  # pylint: enable=g-import-not-at-top
  path = _file(size)
  rss_before = _peak_rss_mb()
  execution.drop_import_time_default_context()
  tf.keras.utils.set_random_seed(SEED)
  config = config_lib.TrainConfig(algorithm='fedavg', num_clients=size,
                                  clients_per_round=_PER_ROUND.value, client_epochs_per_round=1,
                                  total_rounds=_WARMUP.value + _ROUNDS.value + 1, seed=SEED)
  process, _ = registry.build_from_config(config)
  times = []
  with execution.worker_pool_context(num_local_workers=1,
                                     client_data=f'sqlite:{path}') as context:
    federation = client_ids.discover(context, shared=True)
    manifest_bytes = len(json.dumps(federation.manifests[0]))
    computation = client_ids.build_dataset_computation(
        federation, dict(x='x', y='y'), lambda d, seed: data.preprocess_client_dataset(
            d, batch_size=config.client_batch_size, epochs=1, seed=seed),
        graph_seed=SEED)
    by_id = training.ByIdProcess(process, computation, context)
    select = training.build_id_selection_fn(
        federation, clients_per_round=_PER_ROUND.value, seed=SEED)
    state = by_id.initialize()
    for round_num in range(1, _WARMUP.value + _ROUNDS.value + 1):
      start = time.perf_counter()
      state = by_id.next(state, select(round_num)).state
      elapsed = time.perf_counter() - start
      if round_num > _WARMUP.value:
        times.append(elapsed)
  return dict(size=size, peak_rss_mb=_peak_rss_mb(),
              rss_after_imports_mb=rss_before, manifest_bytes=manifest_bytes,
              seconds=times, median_s=statistics.median(times), min_s=min(times),
              max_s=max(times))


def main(argv):
  del argv
  os.makedirs(_WORK_DIR.value, exist_ok=True)
  if _CHILD.value is not None:
    print(json.dumps(_child(_CHILD.value)), flush=True)
    return
  rows = []
  for size in (int(s) for s in _SIZES.value):
    _file(size)  # Written outside the measured child.
    passed = [f'--{name}={flags.FLAGS[name].value}' for name in (
        'examples_per_client', 'clients_per_round', 'rounds', 'warmup_rounds', 'work_dir')]
    result = runs.call([sys.executable, '-m', 'benchmarks.federation_size',
                        f'--child={size}', *passed], capture_output=True, text=True,
                       check=True, timeout=3600)
    rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(rows[-1], flush=True)
  base = rows[0]
  for row in rows:
    row['rss_ratio'] = row['peak_rss_mb'] / base['peak_rss_mb']
    row['seconds_ratio'] = row['median_s'] / base['median_s']
  command = ('python -m benchmarks.federation_size --sizes=' + ','.join(_SIZES.value) +
             f' --examples_per_client={_EXAMPLES.value} --clients_per_round='
             f'{_PER_ROUND.value} --rounds={_ROUNDS.value} --warmup_rounds={_WARMUP.value}')
  result = dict(command=command, machine=f'{platform.machine()}, {os.cpu_count()} cores',
                rows=rows)
  files.atomic_write_text(_OUTPUT.value + '.json', json.dumps(result, indent=2) + '\n')
  lines = ['# Coordinator memory and round time against the number of clients', '',
           f'`{command}` ({result["machine"]}). FedAvg, the paper\'s FC model, one local '
           'worker serving a SQLite file by client id; the coordinator holds the manifest '
           '(ids and counts), never the examples. Peak RSS is the coordinator process\'s.',
           '', '| clients | peak RSS MB | x smallest | s/round median | min-max | x smallest | '
           'manifest bytes |', '|---|---|---|---|---|---|---|']
  lines += [f'| {r["size"]} | {r["peak_rss_mb"]:.0f} | {r["rss_ratio"]:.2f} | '
            f'{r["median_s"]:.2f} | {r["min_s"]:.2f}-{r["max_s"]:.2f} | '
            f'{r["seconds_ratio"]:.2f} | {r["manifest_bytes"]} |' for r in rows]
  files.atomic_write_text(_OUTPUT.value + '.md', '\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  flag_utils.run_main(main)
