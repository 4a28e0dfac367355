"""Behaviour fingerprint: final weights of short runs, hashed, before and after a refactor.

Runs the training binary (`python -m binaries.train`, as a user runs it) for
each algorithm and compression mode, 3 rounds on 3 of 30 FashionMNIST
clients, and records the SHA-256 of each run's `final_weights.npz` arrays
(names, dtypes, shapes and bytes). A refactor that claims to preserve
behaviour must reproduce every hash bit for bit:

    python -m benchmarks.fingerprint --output=benchmarks/results/fingerprint.json
    python -m benchmarks.fingerprint --check=benchmarks/results/fingerprint.json

(`--check` exits 1 naming each run whose weights changed; `--update=FILE
--runs=...` re-records those runs only, for a change meant to alter them.) The run with TFF's
quantizer is recorded but not compared: TFF's uniform quantization rounds
with unseeded randomness, so two runs of the same command differ (measured).
"""

import argparse
import concurrent.futures
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

from benchmarks import runs
from tff_sparsify import signals

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMON = dict(
    dataset='fashion_mnist', partition='non_iid', classes_per_client=2,
    num_clients=30, clients_per_round=3, total_rounds=3,
    client_epochs_per_round=1, client_batch_size=32, client_learning_rate=0.02,
    seed=1990, final_sparsity=0.8, progress=False, rounds_per_eval=3,
)
BATCH_NORM_MODEL = '{out}/batch_norm.keras'  # Written by `write_batch_norm_model`.
RUNS = {
    'fedavg': dict(algorithm='fedavg'),
    'fedavg_momentum': dict(algorithm='fedavg_momentum'),
    'fedprox': dict(algorithm='fedprox'),
    'global': dict(algorithm='fedsparsify_global'),
    'local': dict(algorithm='fedsparsify_local'),
    'local_mean': dict(algorithm='fedsparsify_local', mask_aggregation='mean'),
    'random': dict(algorithm='random_pruning'),
    'oneshot': dict(algorithm='oneshot_pruning'),
    'global_compute': dict(algorithm='fedsparsify_global', sparsity_placement='compute'),
    'message_pruning': dict(algorithm='fedavg', client_message_prune_rate=0.5,
                            server_message_prune_rate=0.3),
    'local_message_pruning': dict(algorithm='fedsparsify_local',
                                  client_message_prune_rate=0.5),
    'quantize_tff': dict(algorithm='fedsparsify_global', quantize_bits=8,
                         quantizer='tff'),
    'quantize_sparse': dict(algorithm='fedsparsify_global', quantize_bits=8,
                            quantizer='sparse'),
    'quantize_sparse_local_pruned': dict(
        algorithm='fedsparsify_local', quantize_bits=8, quantizer='sparse',
        client_message_prune_rate=0.5),
    # Added for issue 36, recorded before the algorithms moved into modules of their own.
    'snip': dict(algorithm='snip'),
    'grasp': dict(algorithm='grasp'),
    'prunefl': dict(algorithm='prunefl', final_sparsity=0.3, readjust_every=2,
                    initial_reconfigurations=2),
    'global_uniform': dict(algorithm='fedsparsify_global', sparsity_placement='uniform'),
    'global_channel': dict(algorithm='fedsparsify_global', sparsity_granularity='channel',
                           channel_multiple=4),
    'local_channel': dict(algorithm='fedsparsify_local', sparsity_granularity='channel',
                          final_sparsity=0.5),
    'delta_sparse': dict(algorithm='fedsparsify_global', client_message_prune_rate=0.5,
                         message_prune_target='delta', quantize_bits=8, quantizer='sparse'),
    'fedprox_momentum': dict(algorithm='fedprox', client_momentum=0.5),
    'batch_norm_global': dict(algorithm='fedsparsify_global', model=BATCH_NORM_MODEL),
    'batch_norm_fedavg': dict(algorithm='fedavg', model=BATCH_NORM_MODEL),
    # Issue 38: the seeded noise, fixed and adaptive clipping, the secure sum.
    'dp_global': dict(algorithm='fedsparsify_global', dp_clip_norm=0.5,
                      dp_noise_multiplier=0.5, dp_noise_seed=3),
    'dp_adaptive_fedavg': dict(algorithm='fedavg', dp_clip_norm=0.5, dp_noise_multiplier=0.2,
                               dp_target_quantile=0.5, dp_noise_seed=3),
    'secure_dp_global': dict(algorithm='fedsparsify_global', dp_clip_norm=0.5,
                             dp_noise_multiplier=0.5, dp_noise_seed=3, secure_aggregation=True),
    'secure_fedavg': dict(algorithm='fedavg', secure_aggregation=True),
}
NOT_REPRODUCIBLE = frozenset({'quantize_tff'})


def write_batch_norm_model(path: str):
  """A seeded 28x28-32-BN-10 Keras model (moving statistics aggregated) saved at `path`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.keras.utils.set_random_seed(7)
  inputs = tf.keras.Input((28, 28))
  x = tf.keras.layers.Dense(32)(tf.keras.layers.Flatten()(inputs))
  x = tf.keras.layers.BatchNormalization(momentum=0.5)(x)
  x = tf.keras.layers.ReLU()(x)
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(10)(x))
  model.save(path)


def weights_hash(path: str) -> str:
  digest = hashlib.sha256()
  with np.load(path) as arrays:
    for name in sorted(arrays.files):
      value = arrays[name]
      digest.update(f'{name}:{value.dtype.str}:{value.shape}'.encode())
      digest.update(np.ascontiguousarray(value).tobytes())
  return digest.hexdigest()


def run_one(name: str, out: str) -> str:
  flags = dict(COMMON, **RUNS[name], root_output_dir=out, experiment_name=name)
  command = [sys.executable, '-m', 'binaries.train'] + [
      f'--{k}={v}'.replace('{out}', out) for k, v in flags.items()]
  done = runs.call(command, cwd=REPO, capture_output=True, text=True, timeout=900)
  if done.returncode != 0:
    raise RuntimeError(f'{name}: exit {done.returncode}: {done.stderr[-2000:]}')
  return weights_hash(os.path.join(out, 'results', name, 'final_weights.npz'))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--output', help='write the hashes to this JSON file')
  parser.add_argument('--check', help='compare with the hashes in this JSON file')
  parser.add_argument('--update', help='re-record --runs in this JSON file, keeping the others '
                      '(a change meant to alter those runs; say why in BUILD_NOTES.md)')
  parser.add_argument('--runs', default=','.join(RUNS),
                      help='comma-separated subset of: ' + ', '.join(RUNS))
  parser.add_argument('--parallel', type=int, default=2)
  args = parser.parse_args()
  names = args.runs.split(',')
  unknown = [n for n in names if n not in RUNS]
  if unknown:
    parser.error(f'--runs: unknown run {unknown[0]!r}; known: {", ".join(RUNS)}')
  with tempfile.TemporaryDirectory() as out:
    if any(RUNS[n].get('model') == BATCH_NORM_MODEL for n in names):
      write_batch_norm_model(BATCH_NORM_MODEL.format(out=out))
    signals.handle_termination_signals()
    with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
      try:
        hashes = dict(zip(names, pool.map(lambda n: run_one(n, out), names)))
      except BaseException:  # A failed run or a signal: the other runs end too.
        pool.shutdown(wait=False, cancel_futures=True)
        runs.end_all()
        raise
  for name, value in hashes.items():
    print(f'{name:30s} {value}')
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(dict(flags=COMMON, runs=RUNS, hashes=hashes), f, indent=2)
      f.write('\n')
  if args.update:
    with open(args.update) as f:
      recorded = json.load(f)
    recorded['hashes'].update(hashes)
    recorded['runs'] = RUNS
    with open(args.update, 'w') as f:
      json.dump(recorded, f, indent=2)
      f.write('\n')
  if args.check:
    with open(args.check) as f:
      expected = json.load(f)['hashes']
    changed = [n for n in names
               if n not in NOT_REPRODUCIBLE and expected.get(n) != hashes[n]]
    for name in changed:
      print(f'CHANGED: {name}', file=sys.stderr)
    if changed:
      sys.exit(1)
    compared = [n for n in names if n not in NOT_REPRODUCIBLE]
    print(f'all {len(compared)} compared runs bit for bit equal to {args.check}')


if __name__ == '__main__':
  main()
