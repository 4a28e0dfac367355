r"""Differential privacy with sparsity: does the sparse model lose less accuracy to the noise?

Issue 38's benchmark: FashionMNIST, 100 clients, 10 per round (shards and
Dirichlet 0.5), 200 rounds of 1 epoch; test accuracy against the noise
multiplier (0, 0.3, 0.7, 1.0) for FedAvg and FedSparsify-Global at 0.9 and
0.95, each with its epsilon (`learning.privacy_accounting`: sampling 10 of
100 without replacement, replace-one, delta = 1/100). Every run clips the
clients' updates to `--clip` (noise 0: clipping only, no guarantee), so
the runs of one algorithm differ only by the noise. The noise's standard
deviation on the mean is z * clip / 10 per coordinate; FedSparsify-Global
masks the noised model, so the noise that stays is on the kept
coordinates only (1/10 and 1/20 of them at the end).

Each run goes through the training binary, as a user would, into
`--runs_dir`: a run that is there and finished is read, an unfinished one
resumes from its checkpoints (the benchmark can be stopped and started
again across sessions). The table is written when every run has finished:

  python -m benchmarks.privacy --output=benchmarks/results/privacy.md

`--seed` trains another seed (runs named `..._s{seed}`; 1990's keep their
names) and `--mechanism=distributed_skellam` the distributed mechanism
(`..._ddp`; z = 0 clips only, the same run as the Gaussian's).
"""

import itertools
import json
import os

from absl import app
from absl import flags

from benchmarks import runs

REPO = runs.REPO
ALGORITHMS = {
    'fedavg': dict(algorithm='fedavg'),
    'global_0.9': dict(algorithm='fedsparsify_global', final_sparsity=0.9),
    'global_0.95': dict(algorithm='fedsparsify_global', final_sparsity=0.95),
}
PARTITIONS = {'shards': dict(partition='shards', classes_per_client=2),
              'dirichlet': dict(partition='dirichlet', dirichlet_alpha=0.5)}

_OUTPUT = flags.DEFINE_string('output', None, 'Markdown file for the table.')
_RUNS_DIR = flags.DEFINE_string('runs_dir', os.path.join(REPO, 'output', 'privacy_runs'),
                                'Where the runs are written (and resumed from).')
_ROUNDS = flags.DEFINE_integer('rounds', 200, 'Rounds per run.')
_NUM_CLIENTS = flags.DEFINE_integer('num_clients', 100, 'Clients of the federation.')
_CLIENTS_PER_ROUND = flags.DEFINE_integer('clients_per_round', 10, 'Clients per round.')
_NOISE = flags.DEFINE_list('noise', ['0', '0.3', '0.7', '1.0'], 'Noise multipliers.')
_CLIP = flags.DEFINE_float('clip', 0.2, "L2 clip of each client's update.")
_ALGORITHMS = flags.DEFINE_list('algorithms', list(ALGORITHMS), 'Of ' + ', '.join(ALGORITHMS))
_PARTITIONS = flags.DEFINE_list('partitions', list(PARTITIONS), 'Of ' + ', '.join(PARTITIONS))
_SEED = flags.DEFINE_integer('seed', 1990, 'Training seed (client sampling, shuffling, model).')
_MECHANISM = flags.DEFINE_enum('mechanism', 'gaussian', ['gaussian', 'distributed_skellam'],
                               'gaussian: central DP, its noise seeded (1); distributed_skellam: '
                               "the clients' Skellam noise under a secure sum (no seed).")


def distributed(noise: str) -> bool:
  return _MECHANISM.value == 'distributed_skellam' and float(noise) > 0


def flag_values(algorithm: str, partition: str, noise: str) -> dict:
  mechanism = (dict(dp_mechanism='distributed_skellam') if distributed(noise)
               else dict(dp_noise_seed=1))
  return dict(
      dataset='fashion_mnist', num_clients=_NUM_CLIENTS.value,
      clients_per_round=_CLIENTS_PER_ROUND.value, total_rounds=_ROUNDS.value,
      client_epochs_per_round=1, seed=_SEED.value, progress=False,
      rounds_per_eval=_ROUNDS.value, rounds_per_checkpoint=10, dp_clip_norm=_CLIP.value,
      dp_noise_multiplier=float(noise), **mechanism, **ALGORITHMS[algorithm],
      **PARTITIONS[partition])


def run_one(algorithm: str, partition: str, noise: str) -> dict:
  """The run's summary.json, training (or resuming) it first if it has none."""
  name = (f'{algorithm}_{partition}_z{noise}' + ('' if _SEED.value == 1990 else f'_s{_SEED.value}')
          + ('_ddp' if distributed(noise) else ''))
  summary_path = os.path.join(_RUNS_DIR.value, 'results', name, 'summary.json')
  if not os.path.exists(summary_path):
    runs.train(dict(flag_values(algorithm, partition, noise), root_output_dir=_RUNS_DIR.value,
                    experiment_name=name), name)
  with open(summary_path) as f:
    return json.load(f)


def table(found: dict) -> str:
  noises = _NOISE.value
  lines = [
      '# Differential privacy with sparsity (FashionMNIST)', '',
      '`python -m benchmarks.privacy` with `--rounds={} --num_clients={} --clients_per_round={} '
      '--clip={}`; common training flags: `{}`'.format(
          _ROUNDS.value, _NUM_CLIENTS.value, _CLIENTS_PER_ROUND.value, _CLIP.value,
          ' '.join(f'--{k}={v}' for k, v in flag_values(
              _ALGORITHMS.value[0], _PARTITIONS.value[0], noises[0]).items()
                   if k not in ('algorithm', 'final_sparsity', 'partition', 'classes_per_client',
                                'dirichlet_alpha', 'dp_noise_multiplier', 'dp_mechanism',
                                'dp_noise_seed'))) + (
          ', `--dp_mechanism=distributed_skellam` where z > 0.'
          if _MECHANISM.value != 'gaussian' else ', `--dp_noise_seed=1`.'),
      '', 'Test accuracy at the end (epsilon at delta = 1/clients; noise 0 clips only and has '
      'no guarantee).', '',
      '| partition | algorithm | ' + ' | '.join(f'z = {z}' for z in noises) + ' |',
      '|---|---|' + '---|' * len(noises)]
  for partition, algorithm in itertools.product(_PARTITIONS.value, _ALGORITHMS.value):
    cells = []
    for z in noises:
      summary = found[algorithm, partition, z]
      eps = summary.get('dp_epsilon')
      cells.append(f'{summary["test_accuracy"]:.4f}' + ('' if eps is None else f' (eps {eps:.3g})'))
    lines.append(f'| {partition} | {algorithm} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  found = {}
  for partition, algorithm, z in itertools.product(
      _PARTITIONS.value, _ALGORITHMS.value, _NOISE.value):
    found[algorithm, partition, z] = run_one(algorithm, partition, z)
    print(algorithm, partition, z, found[algorithm, partition, z], flush=True)
  runs.write_report([table(found)], _OUTPUT.value)


if __name__ == '__main__':
  app.run(main)
