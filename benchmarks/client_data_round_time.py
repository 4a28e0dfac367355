r"""Round time from a SQLite file against the built-in path (issue 33).

The paper's FashionMNIST protocol (shards partition, 10 clients, all of them
every round, 4 local epochs, batch 32, the paper's FC model), FedAvg and
FedSparsify-Global at 0.9, each once on the built-in data (NumPy arrays
embedded in the client datasets) and once on the same clients written by
`tff-sparsify-data` to TFF's SQLite layout. A round is the selection of the
clients' datasets (as `simulation.training` builds them) plus `process.next`.
With `--path=ids` (the default, what `binaries.train` does since issue 34)
each source is served by a local worker of its own and a round sends client
ids: the built-in clients written once as `tensor_dir` (`client_ids.write_builtin`),
the SQLite file read by `SqlDataset`, both at the worker. With
`--path=datasets` (the binary's path before issue 34) the clients' datasets
are built on the coordinator (the built-in examples embedded as constants)
and sent to one local worker.
Variants are interleaved round by round, so machine noise hits them alike;
each runs `--warmup_rounds` untimed rounds, then `--rounds` timed ones.
Reported: per variant the median round time and its spread, and per
algorithm the ratio SQLite / built-in of the medians and the median of the
per-round ratios.

  python -m benchmarks.client_data_round_time --rounds=5
  python -m benchmarks.client_data_round_time --rounds=5 --path=datasets

Results: benchmarks/results/client_data_round_time.{json,md}.
"""

import collections
import contextlib
import json
import os
import platform
import shutil
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import flags  # pylint: disable=g-import-not-at-top
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import config as config_lib
from tff_sparsify import files
from tff_sparsify.binaries import flag_utils
from tff_sparsify.learning import registry
from tff_sparsify.simulation import client_ids
from tff_sparsify.simulation import run_data as data
from tff_sparsify.simulation import data_sources
from tff_sparsify.simulation import execution
from tff_sparsify.simulation import training
from tff_sparsify.simulation.sources import sqlite
from tff_sparsify.simulation.sources import writer

_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Timed rounds per variant.')
_WARMUP_ROUNDS = flags.DEFINE_integer('warmup_rounds', 1, 'Untimed rounds per variant.')
_EPOCHS = flags.DEFINE_integer('client_epochs_per_round', 4, 'Local epochs (the paper: 4).')
_WORK_DIR = flags.DEFINE_string('work_dir', '/tmp/tff_sparsify_bench', 'Where the SQLite file goes.')
_WORKER_TIMEOUT = flags.DEFINE_float(
    'worker_timeout_seconds', 60.0, 'The local workers\' timeout (as binaries.train\'s flag).')
_PATH = flags.DEFINE_enum('path', 'ids', ['ids', 'datasets'],
                          'ids: client ids, data read at the workers (the binary\'s path); '
                          'datasets: datasets built on the coordinator (before issue 34).')
_OUTPUT = flags.DEFINE_string(
    'output', os.path.join(os.path.dirname(__file__), 'results', 'client_data_round_time'),
    'Output path prefix (.json and .md are appended).')
SEED = 1990
ALGORITHMS = ('fedavg', 'fedsparsify_global')


def _config(algorithm: str, rounds: int) -> config_lib.TrainConfig:
  return config_lib.TrainConfig(
      algorithm=algorithm, partition='shards', num_clients=10, clients_per_round=10,
      client_epochs_per_round=_EPOCHS.value, client_batch_size=32, client_learning_rate=0.02,
      final_sparsity=0.9, total_rounds=rounds, seed=SEED)


def _sources():
  """{name: (RunData, served KIND:PATH)}: the built-in clients and the same clients from SQLite."""
  centralized = data_sources.load_centralized('fashion_mnist')
  shards = data_sources.partition(centralized.train_labels, partition_type='shards',
                                  num_clients=10, seed=SEED)
  path = os.path.join(_WORK_DIR.value, 'fashion_mnist_shards10.sqlite')
  if not os.path.exists(path):
    writer.write(writer.fashion_mnist(partition='shards', num_clients=10, seed=SEED),
                 f'sqlite:{path}')
  builtin_dir = os.path.join(_WORK_DIR.value, 'fashion_mnist_shards10_builtin')
  shutil.rmtree(builtin_dir, ignore_errors=True)
  served = client_ids.write_builtin(shards, centralized.train_images, centralized.train_labels,
                                    builtin_dir)  # As the binary writes it, once per run.
  splits = sqlite.open_splits(path, dict(x='x', y='y'))
  return collections.OrderedDict(
      builtin=(data.builtin_run_data(centralized, shards), served),
      sqlite=(data.file_run_data(splits, tf.float32, source=f'sqlite:{path}'), f'sqlite:{path}'))


def _by_id(process, run_data, context, config):
  """The binary's path (`binaries.train`): ids to `context`'s worker, which reads the data."""
  federation = client_ids.discover(context, shared=True)

  def preprocess(dataset, seed):
    return data.preprocess_client_dataset(
        dataset, batch_size=config.client_batch_size, epochs=config.client_epochs_per_round,
        seed=seed, element_fn=run_data.element_fn)

  computation = client_ids.build_dataset_computation(
      federation, dict(x='x', y='y'), preprocess, graph_seed=SEED)
  select = training.build_id_selection_fn(federation, clients_per_round=10, seed=SEED)
  return training.ByIdProcess(process, computation, context), select


def main(argv):
  del argv
  execution.drop_import_time_default_context()
  rounds = _WARMUP_ROUNDS.value + _ROUNDS.value
  sources = _sources()
  variants = collections.OrderedDict()
  with contextlib.ExitStack() as stack:
    contexts = {name: stack.enter_context(execution.worker_pool_context(
        num_local_workers=1, client_data=served if _PATH.value == 'ids' else None,
        worker_timeout=_WORKER_TIMEOUT.value))
                for name, (_, served) in sources.items()}
    for algorithm in ALGORITHMS:
      config = _config(algorithm, rounds + 1)
      for name, (run_data, _) in sources.items():
        tf.keras.utils.set_random_seed(SEED)
        process, _ = registry.build_from_config(config, run_data.train)
        if _PATH.value == 'ids':
          process, select = _by_id(process, run_data, contexts[name], config)
        else:
          select = training.build_training_selection_fn(
              run_data.train, clients_per_round=10, batch_size=32,
              epochs=config.client_epochs_per_round, seed=SEED, element_fn=run_data.element_fn)
        variants[f'{algorithm}/{name}'] = [process, select, None, [], contexts[name]]
    for variant in variants.values():
      with tff.framework.get_context_stack().install(variant[4]):
        variant[2] = variant[0].initialize()
    for round_num in range(1, rounds + 1):
      for name, variant in variants.items():
        process, select, state, times, context = variant
        with tff.framework.get_context_stack().install(context):
          start = time.perf_counter()
          state = process.next(state, select(round_num)).state
          elapsed = time.perf_counter() - start
        variant[2] = state
        if round_num > _WARMUP_ROUNDS.value:
          times.append(elapsed)
        print(f'round {round_num} {name}: {elapsed:.2f} s', flush=True)
  _write({name: variant[3] for name, variant in variants.items()})


def _write(times: dict):
  summary = collections.OrderedDict()
  for name, values in times.items():
    summary[name] = dict(median_s=statistics.median(values), min_s=min(values),
                         max_s=max(values), rounds_s=values)
  ratios = collections.OrderedDict()
  for algorithm in ALGORITHMS:
    builtin, sql = times[f'{algorithm}/builtin'], times[f'{algorithm}/sqlite']
    paired = [s / b for s, b in zip(sql, builtin)]
    ratios[algorithm] = dict(
        ratio_of_medians=statistics.median(sql) / statistics.median(builtin),
        median_paired_ratio=statistics.median(paired), min_paired=min(paired),
        max_paired=max(paired))
  result = dict(command='python -m benchmarks.client_data_round_time '
                f'--rounds={_ROUNDS.value} --warmup_rounds={_WARMUP_ROUNDS.value} '
                f'--client_epochs_per_round={_EPOCHS.value} --path={_PATH.value} '
                f'--worker_timeout_seconds={_WORKER_TIMEOUT.value:g}',
                machine=f'{platform.machine()}, {os.cpu_count()} cores', variants=summary,
                ratios=ratios)
  files.atomic_write_text(_OUTPUT.value + '.json', json.dumps(result, indent=2) + '\n')
  lines = [
      '# Round time: SQLite client data against the built-in path', '',
      f'`{result["command"]}` ({result["machine"]}). FashionMNIST, shards, 10 clients all '
      f'training, {_EPOCHS.value} local epochs, batch 32, the paper\'s FC model; a round is the '
      'clients\' selection plus `process.next`; variants interleaved round by round. '
      + ('Client ids sent, each source read at a local worker of its own (the binary\'s path).'
         if _PATH.value == 'ids' else
         'Datasets built on the coordinator and sent to one local worker (before issue 34).'),
      '', '| variant | median s | min s | max s |', '|---|---|---|---|']
  lines += [f'| {name} | {s["median_s"]:.2f} | {s["min_s"]:.2f} | {s["max_s"]:.2f} |'
            for name, s in summary.items()]
  lines += ['', '| algorithm | SQLite / built-in (medians) | per-round ratio: median '
            '[min, max] |', '|---|---|---|']
  lines += [f'| {a} | {r["ratio_of_medians"]:.3f} | {r["median_paired_ratio"]:.3f} '
            f'[{r["min_paired"]:.3f}, {r["max_paired"]:.3f}] |' for a, r in ratios.items()]
  files.atomic_write_text(_OUTPUT.value + '.md', '\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  flag_utils.run_main(main)
