r"""Seconds per round and coordinator<->worker bytes on 1, 2 and 4 local workers.

Two ways of giving the workers the clients' data, side by side (`--modes`):
`datasets` (TFF's default and this package's before issue 34: each sampled
client's dataset, examples included, built on the coordinator and sent every
round) and `ids` (what the binaries do now: the workers read their own data,
the coordinator sends client ids, `simulation.client_ids`). The broadcast
model's bytes are reported beside, for the ratio per worker.

FedAvg on the paper's FashionMNIST FC model, real FashionMNIST, non-IID (2
classes per client), 1 local epoch, batch 32; two environments: 100 clients
with 10 sampled per round, and 10 clients all training. The same local
workers serve every worker count (`WorkerPoolContext` over the first n), and
the worker counts are interleaved round by round, so machine noise hits them
alike. Each count runs `--warmup_rounds` untimed rounds first (TFF compiles
the computations on first use). Reported per count: median seconds per
round and its spread (min-max), the ratio to 1 worker, and the bytes of the
gRPC payloads per round between this coordinator and all workers (state and
client data out, partial aggregates and results back), counted by
`execution.DeadlineStub`.

  python -m benchmarks.scaling --rounds=7

Results: benchmarks/results/scaling.{json,md}. On 2 cores the workers share
the same two cores, so this measures the coordination overhead, not speed-up.
"""

import collections
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from benchmarks import runs
from tff_sparsify import config as config_lib
from tff_sparsify import files
from tff_sparsify.learning import registry
from tff_sparsify.simulation import client_ids
from tff_sparsify.simulation import run_data as data
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import execution
from tff_sparsify.simulation import sources
from tff_sparsify.simulation import training
from tff_sparsify.simulation.sources import writer

# Before absl parses the flags: a flag it refuses exits at once, and TFF's
# import-time context would then print a traceback at shutdown.
execution.drop_import_time_default_context()

_WORKERS = flags.DEFINE_list('workers', ['1', '2', '4'], 'Worker counts.')
_ENVIRONMENTS = flags.DEFINE_list(
    'environments', ['100x10', '10x10'],
    'NUM_CLIENTSxCLIENTS_PER_ROUND environments.')
_ROUNDS = flags.DEFINE_integer('rounds', 7, 'Timed rounds per worker count.')
_WARMUP_ROUNDS = flags.DEFINE_integer('warmup_rounds', 1, 'Untimed rounds.')
_ALGORITHM = flags.DEFINE_enum('algorithm', 'fedavg', list(registry.names()),
                               'Algorithm.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'FashionMNIST IDX dir.')
_MERGE_AT = flags.DEFINE_enum(
    'merge_at', 'coordinator', ['coordinator', 'first_worker'],
    'Where partial aggregates are merged: a local worker of the coordinator (as with '
    'silos, --workers) or the first worker (local workers). Its bytes are not counted.')
_MODES = flags.DEFINE_list('modes', ['datasets', 'ids'], 'How the clients\' data reach '
                           'the workers: datasets (sent) or ids (read at the worker).')
_CLIENT_FORMAT = flags.DEFINE_enum(
    'client_format', 'tensor_dir', ['tensor_dir', 'sqlite', 'tfrecord_dir'],
    'How the workers read the clients with `ids`: tensor_dir (what the binaries write for the '
    'built-in data), or a user\'s format (the writer\'s SQLite file or TFRecord directory).')
_OUTPUT = flags.DEFINE_string(
    'output', os.path.join(os.path.dirname(__file__), 'results', 'scaling'),
    'Output path prefix (.json and .md are appended).')
SEED = 1990


def _environment(spec: str, centralized):
  num_clients, per_round = (int(x) for x in spec.split('x'))
  config = config_lib.TrainConfig(
      algorithm=_ALGORITHM.value, num_clients=num_clients,
      clients_per_round=per_round, client_epochs_per_round=1,
      total_rounds=_WARMUP_ROUNDS.value + _ROUNDS.value + 1, seed=SEED)
  shards = data_sources.partition(
      centralized.train_labels, partition_type='non_iid',
      num_clients=num_clients, seed=SEED, classes_per_client=2)
  federated = data.federated_data(centralized, shards)
  process, keras_model_fn = registry.build_from_config(config)
  model_bytes = sum(w.numpy().nbytes for w in keras_model_fn().trainable_weights)
  return config, federated.train, shards, process, model_bytes


def _write_clients(shards, centralized, path) -> str:
  """The built-in clients where the workers read them, in `--client_format`."""
  if _CLIENT_FORMAT.value == 'tensor_dir':
    return client_ids.write_builtin(shards, centralized.train_images, centralized.train_labels,
                                    path)
  clients = {sources.TRAIN: collections.OrderedDict(
      (data_sources.client_id(i), (centralized.train_images[s],
                                   centralized.train_labels[s].astype(np.int64)))
      for i, s in enumerate(shards))}
  return f'{_CLIENT_FORMAT.value}:' + writer.write(clients, f'{_CLIENT_FORMAT.value}:{path}')


def _measure(spec, centralized, counts):
  config, train, shards, process, model_bytes = _environment(spec, centralized)
  modes = list(_MODES.value)
  with tempfile.TemporaryDirectory() as tmp, execution.worker_pool_context(
      num_local_workers=max(counts) + 1,
      client_data=_write_clients(shards, centralized, os.path.join(tmp, 'clients'))) as pool:
    federation = client_ids.discover(pool, shared=True)
    computation = client_ids.build_dataset_computation(
        federation, dict(x='x', y='y'), lambda d, seed: data.preprocess_client_dataset(
            d, batch_size=config.client_batch_size, epochs=1, seed=seed),
        graph_seed=SEED)
    select = dict(
        datasets=training.build_training_selection_fn(
            train, clients_per_round=config.clients_per_round,
            batch_size=config.client_batch_size, epochs=1, seed=SEED),
        ids=training.build_id_selection_fn(
            federation, clients_per_round=config.clients_per_round, seed=SEED))
    keys = [(m, n) for m in modes for n in counts]
    merger = pool.workers[-1] if _MERGE_AT.value == 'coordinator' else None
    pools = {n: execution.WorkerPoolContext(pool.workers[:n], merge_worker=merger)
             for n in counts}
    processes = {(m, n): process if m == 'datasets' else
                 training.ByIdProcess(process, computation, pools[n]) for m, n in keys}
    states, seconds, sent, received = {}, {k: [] for k in keys}, {k: [] for k in keys}, {
        k: [] for k in keys}
    for key in keys:
      with tff.framework.get_context_stack().install(pools[key[1]]):
        states[key] = processes[key].initialize()
    for round_num in range(_WARMUP_ROUNDS.value + _ROUNDS.value):
      clients = {m: select[m](round_num + 1) for m in modes}
      # Reversed every other round, so that no key always runs first (or
      # right after the same other key) and position effects cancel out.
      for key in (keys if round_num % 2 == 0 else keys[::-1]):
        mode, n = key
        worker_pool = pools[n]
        before = worker_pool.bytes_sent, worker_pool.bytes_received
        with tff.framework.get_context_stack().install(worker_pool):
          start = time.perf_counter()
          states[key] = processes[key].next(states[key], clients[mode]).state
          elapsed = time.perf_counter() - start
        if round_num >= _WARMUP_ROUNDS.value:
          seconds[key].append(elapsed)
          sent[key].append(worker_pool.bytes_sent - before[0])
          received[key].append(worker_pool.bytes_received - before[1])
        print(f'{spec} round {round_num} {mode} workers {n}: {elapsed:.2f} s', flush=True)
    for worker_pool in pools.values():
      worker_pool.close()
  rows = []
  for mode, n in keys:
    median = statistics.median(seconds[(mode, n)])
    base = statistics.median(seconds[(mode, counts[0])])
    out = statistics.median(sent[(mode, n)])
    rows.append(dict(
        environment=spec, mode=mode, workers=n, median_s=median,
        min_s=min(seconds[(mode, n)]), max_s=max(seconds[(mode, n)]),
        ratio_to_1=median / base, seconds=seconds[(mode, n)],
        mb_sent_per_round=out / 1e6, model_mb=model_bytes / 1e6,
        sent_per_worker_over_model=out / n / model_bytes,
        mb_received_per_round=statistics.median(received[(mode, n)]) / 1e6,
        **_paired_to_datasets(seconds, mode, n)))
  return rows


def _paired_to_datasets(seconds, mode, n):
  """Round-by-round ratio of this mode's seconds to `datasets`' (same round)."""
  if mode == 'datasets' or ('datasets', n) not in seconds:
    return {}
  ratios = sorted(a / b for a, b in zip(seconds[(mode, n)], seconds[('datasets', n)]))
  quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
  return dict(paired_ratio_to_datasets=statistics.median(ratios),
              paired_ratio_q1=quartiles[0], paired_ratio_q3=quartiles[-1],
              rounds_faster_than_datasets=sum(r < 1 for r in ratios),
              paired_rounds=len(ratios))


def _markdown(rows, meta):
  lines = [
      f'# Seconds per round on local workers ({meta["algorithm"]}, FashionMNIST FC)',
      '',
      f'{meta["cpus"]} CPUs, {meta["rounds"]} timed rounds per count after '
      f'{meta["warmup_rounds"]} warm-up, counts and modes interleaved round by round '
      '(order reversed every other round). '
      'Command: `python -m benchmarks.scaling ' + meta['args'] + '`.',
      '',
  ]
  lines += files.markdown_table(
      ['clients (total x per round)', 'data', 'workers', 's/round (median)', 'min-max',
       'ratio to 1 worker', 'MB out / round', 'out per worker / model', 'MB back / round',
       'vs datasets, same round (median, IQR, faster)'],
      [{'clients (total x per round)': r['environment'], 'data': r['mode'],
        'workers': r['workers'],
        's/round (median)': f'{r["median_s"]:.2f}',
        'min-max': f'{r["min_s"]:.2f}-{r["max_s"]:.2f}',
        'ratio to 1 worker': f'{r["ratio_to_1"]:.2f}x',
        'MB out / round': f'{r["mb_sent_per_round"]:.2f}',
        'out per worker / model': f'{r["sent_per_worker_over_model"]:.2f}x',
        'MB back / round': f'{r["mb_received_per_round"]:.2f}',
        'vs datasets, same round (median, IQR, faster)': (
            f'{r["paired_ratio_to_datasets"]:.2f}x ({r["paired_ratio_q1"]:.2f}-'
            f'{r["paired_ratio_q3"]:.2f}), {r["rounds_faster_than_datasets"]}/'
            f'{r["paired_rounds"]}' if 'paired_ratio_to_datasets' in r else '-')}
       for r in rows])
  lines += ['', f'The broadcast model: {rows[0]["model_mb"]:.3f} MB (float32 trainable '
            'weights). `datasets`: examples sent from the coordinator; `ids`: read at the '
            f'workers. Partial aggregates merged at the {meta["merge_at"].replace("_", " ")} '
            '(with `coordinator`, on a local worker of the coordinator, as runs on silos do; '
            'its bytes are not counted). Last column: per round, `ids` seconds over '
            '`datasets` seconds on as many workers in that same round (the keys run in '
            'turn, reversed every other round); median, interquartile range, and in how '
            'many rounds `ids` was faster.']
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  tf.keras.utils.set_random_seed(SEED)
  execution.drop_import_time_default_context()
  centralized = data_sources.load_centralized('fashion_mnist', _DATA_DIR.value)
  counts = [int(n) for n in _WORKERS.value]
  rows = []
  for spec in _ENVIRONMENTS.value:
    rows.extend(_measure(spec, centralized, counts))
  meta = dict(algorithm=_ALGORITHM.value, cpus=os.cpu_count(), merge_at=_MERGE_AT.value,
              machine=platform.processor() or platform.machine(),
              rounds=_ROUNDS.value, warmup_rounds=_WARMUP_ROUNDS.value,
              args=runs.flag_args(('workers', 'environments', 'rounds', 'warmup_rounds',
                                   'algorithm', 'modes', 'merge_at', 'client_format')))
  runs.write_results(_OUTPUT.value, dict(meta=meta, rows=rows), _markdown(rows, meta))


if __name__ == '__main__':
  app.run(main)
