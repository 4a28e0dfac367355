r"""Round time on one local worker when two processes' rounds alternate on it (issue 34).

Found while timing `client_data_round_time`: rounds of every variant often
end at 10.4-10.5 s whatever their work. Here one local worker serves the
FashionMNIST SQLite clients of that benchmark (shards, 10 clients, 4 local
epochs, batch 32) by client id; `--mode=repeat` runs FedAvg's round
`--rounds` times, `--mode=alternate` alternates FedAvg's and
FedSparsify-Global 0.9's rounds on the same worker. Per round: its seconds
and the seconds of its longest call to the worker (`create_call`, where the
worker trains). Both modes run one after the other in this process.

  python -m benchmarks.alternating_computations --rounds=8

Results: benchmarks/results/alternating_computations.{json,md}. Needs the
SQLite file `client_data_round_time` writes (`--work_dir`).
"""

import dataclasses
import json
import os
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags  # pylint: disable=g-import-not-at-top
import tensorflow as tf

from tff_sparsify import config as config_lib
from tff_sparsify import files
from tff_sparsify.binaries import flag_utils
from tff_sparsify.learning import registry
from tff_sparsify.simulation import client_ids
from tff_sparsify.simulation import run_data as data
from tff_sparsify.simulation import execution
from tff_sparsify.simulation import training
from tff_sparsify.simulation.sources import sqlite

_ROUNDS = flags.DEFINE_integer('rounds', 8, 'Rounds per mode.')
_WORK_DIR = flags.DEFINE_string('work_dir', '/tmp/tff_sparsify_bench',
                                'Where client_data_round_time wrote its SQLite file.')
_OUTPUT = flags.DEFINE_string(
    'output', os.path.join(os.path.dirname(__file__), 'results', 'alternating_computations'),
    'Output path prefix (.json and .md are appended).')
SEED = 1990


def _longest_call(calls):
  return max((seconds for _, seconds in calls), default=0.0)


def main(argv):
  del argv
  path = os.path.join(_WORK_DIR.value, 'fashion_mnist_shards10.sqlite')
  if not os.path.exists(path):
    flag_utils.fail(_WORK_DIR, 'holds no fashion_mnist_shards10.sqlite (run '
                    'benchmarks.client_data_round_time first)')
  calls = []
  original = execution.DeadlineStub._call  # pylint: disable=protected-access

  def timed_call(self, name, request):
    start = time.perf_counter()
    try:
      return original(self, name, request)
    finally:
      calls.append((name, time.perf_counter() - start))

  execution.DeadlineStub._call = timed_call  # pylint: disable=protected-access
  execution.drop_import_time_default_context()
  splits = sqlite.open_splits(path, dict(x='x', y='y'))
  run_data = data.file_run_data(splits, tf.float32, source=f'sqlite:{path}')
  base = config_lib.TrainConfig(
      algorithm='fedavg', partition='shards', num_clients=10, clients_per_round=10,
      client_epochs_per_round=4, client_batch_size=32, client_learning_rate=0.02,
      total_rounds=2 * _ROUNDS.value + 2, seed=SEED)
  processes = []
  for config in (base, dataclasses.replace(base, algorithm='fedsparsify_global',
                                           final_sparsity=0.9)):
    tf.keras.utils.set_random_seed(SEED)
    processes.append(registry.build_from_config(config, run_data.train)[0])
  result = {'command': f'python -m benchmarks.alternating_computations --rounds={_ROUNDS.value}',
            'machine': f'{os.cpu_count()} CPUs', 'modes': {}}
  with execution.worker_pool_context(num_local_workers=1, client_data=f'sqlite:{path}') as pool:
    federation = client_ids.discover(pool, shared=True)
    computation = client_ids.build_dataset_computation(
        federation, dict(x='x', y='y'), lambda d, seed: data.preprocess_client_dataset(
            d, batch_size=32, epochs=4, seed=seed, element_fn=run_data.element_fn),
        graph_seed=SEED)
    by_id = [training.ByIdProcess(p, computation, pool) for p in processes]
    select = training.build_id_selection_fn(federation, clients_per_round=10, seed=SEED)
    states = [p.initialize() for p in by_id]
    round_num = 0
    for mode in ('repeat', 'alternate'):
      rows = []
      for i in range(_ROUNDS.value):
        which = i % 2 if mode == 'alternate' else 0
        round_num += 1
        calls.clear()
        start = time.perf_counter()
        states[which] = by_id[which].next(states[which], select(round_num)).state
        seconds = time.perf_counter() - start
        rows.append({'round': round_num, 'process': ('fedavg', 'fedsparsify_global')[which],
                     'seconds': seconds, 'longest_call_seconds': _longest_call(calls)})
        print(f'{mode} round {round_num} {rows[-1]["process"]}: {seconds:.2f} s '
              f'(longest call {rows[-1]["longest_call_seconds"]:.2f} s)', flush=True)
      result['modes'][mode] = rows
  lines = ['# Rounds on one worker: one process repeated, or two alternating', '',
           f'`{result["command"]}` ({result["machine"]}). FashionMNIST from SQLite by client id, '
           '10 clients, 4 local epochs; the first round of each mode includes warm-up.', '',
           '| mode | round | process | s | longest call s |', '|---|---|---|---|---|']
  for mode, rows in result['modes'].items():
    lines += [f'| {mode} | {r["round"]} | {r["process"]} | {r["seconds"]:.2f} | '
              f'{r["longest_call_seconds"]:.2f} |' for r in rows]
    later = [r['seconds'] for r in rows[1:]]
    lines.append(f'| {mode} | median of rounds 2.. | | {statistics.median(later):.2f} | |')
  files.atomic_write_text(_OUTPUT.value + '.json', json.dumps(result, indent=2) + '\n')
  files.atomic_write_text(_OUTPUT.value + '.md', '\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  flag_utils.run_main(main)
