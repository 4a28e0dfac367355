"""The grid of benchmarks/paper.py: environments, methods, runs, and reading their results.

Shared by `benchmarks.paper` (training) and `benchmarks.paper_report`
(tables and figures); see `benchmarks/paper.py` for the protocol.
"""

import collections
import csv
import glob
import gzip
import io
import os
import shutil
import statistics
import tarfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'benchmarks', 'results', 'paper')
# Committed copies that outlive the work_dir (a session's disk is not kept):
# the per-round metrics of every finished run, and the latest checkpoint of
# each unfinished one (`save_progress`), unpacked again before it resumes.
ARCHIVE = os.path.join(RESULTS, 'metrics')
IN_PROGRESS = os.path.join(RESULTS, 'in_progress')
NUM_PARAMS = 118_282
LAST_ROUNDS = 10
PAPER_SEED = 1990
SPARSITIES = ('0.8', '0.85', '0.9', '0.95', '0.99')

ENVIRONMENTS = collections.OrderedDict([
    ('shards10', dict(partition='shards', num_clients=10, clients_per_round=10)),
    ('iid10', dict(partition='iid', num_clients=10, clients_per_round=10)),
    ('shards100', dict(partition='shards', num_clients=100, clients_per_round=10)),
    ('iid100', dict(partition='iid', num_clients=100, clients_per_round=10)),
])
COMMON_FLAGS = dict(
    dataset='fashion_mnist', classes_per_client=2, client_batch_size=32,
    client_learning_rate=0.02, initial_sparsity=0.0, sparsify_start_round=1,
    sparsify_frequency=1, sparsify_exponent=3.0, rounds_per_eval=1,
    rounds_per_checkpoint=5, progress=False)


def _methods():
  methods = collections.OrderedDict([
      ('fedavg', dict(algorithm='fedavg')),
      ('fedprox', dict(algorithm='fedprox', proximal_strength=0.001)),
  ])
  for s in SPARSITIES:
    methods[f'global_{s}'] = dict(algorithm='fedsparsify_global', final_sparsity=s)
    methods[f'local_{s}'] = dict(algorithm='fedsparsify_local', final_sparsity=s)
    methods[f'random_{s}'] = dict(algorithm='random_pruning', final_sparsity=s)
    methods[f'snip_{s}'] = dict(algorithm='snip', final_sparsity=s)
    methods[f'grasp_{s}'] = dict(algorithm='grasp', final_sparsity=s)
  # PruneFL at the paper's 0.3 (readjusted every 50 rounds, ratio 0.3 * 0.5^(t/1000)).
  methods['prunefl_0.3'] = dict(algorithm='prunefl', final_sparsity='0.3')
  # Figure 3: FedSparsify-Global at 0.95 with sparsification frequency F.
  for f in (2, 5, 10, 20):
    methods[f'global_0.95_F{f}'] = dict(algorithm='fedsparsify_global',
                                        final_sparsity='0.95', sparsify_frequency=f)
  # Figure 4: FedSparsify-Local at 0.9, plain averaging instead of the vote.
  methods['local_0.9_mean'] = dict(algorithm='fedsparsify_local', final_sparsity='0.9',
                                   mask_aggregation='mean')
  return methods


METHODS = _methods()
PAPER_PROTOCOL = (200, 4)
SHORT_PROTOCOL = (200, 1)


class Run(collections.namedtuple('Run', 'environment method rounds epochs seed')):
  """One training run of the grid."""

  @property
  def name(self) -> str:
    suffix = '' if self.seed == PAPER_SEED else f'_seed{self.seed}'
    return f'{self.environment}_{self.method}_{self.rounds}x{self.epochs}{suffix}'

  def flags(self, work_dir: str) -> dict:
    return dict(COMMON_FLAGS, **ENVIRONMENTS[self.environment], **METHODS[self.method],
                total_rounds=self.rounds, client_epochs_per_round=self.epochs,
                seed=self.seed, root_output_dir=work_dir, experiment_name=self.name)


def _plan_required() -> list[Run]:
  """What the issue requires at the paper's protocol, most important first."""
  rounds, epochs = PAPER_PROTOCOL
  first = ['fedavg', 'global_0.9', 'global_0.99', 'fedprox', 'random_0.9',
           'random_0.99', 'snip_0.9', 'snip_0.99', 'grasp_0.9', 'grasp_0.99',
           'prunefl_0.3', 'local_0.9', 'local_0.99', 'global_0.8', 'global_0.85',
           'global_0.95']
  runs = [Run('shards10', m, rounds, epochs, PAPER_SEED) for m in first]
  runs += [Run('shards10', m, rounds, epochs, seed)
           for seed in (PAPER_SEED + 1, PAPER_SEED + 2) for m in ('fedavg', 'global_0.9')]
  return runs


def _plan_short() -> list[Run]:
  """The rest of the grid at 200 rounds x 1 epoch (stated as such in the results)."""
  rounds, epochs = SHORT_PROTOCOL
  grid = ['fedavg', 'fedprox'] + [f'{m}_{s}' for m in ('global', 'local', 'random',
                                                        'snip', 'grasp')
                                  for s in SPARSITIES] + ['prunefl_0.3']
  runs = [Run(env, m, rounds, epochs, PAPER_SEED) for env in ENVIRONMENTS for m in grid]
  runs += [Run('shards10', f'global_0.95_F{f}', rounds, epochs, PAPER_SEED)
           for f in (2, 5, 10, 20)]
  runs += [Run(env, m, rounds, epochs, PAPER_SEED) for env in ('shards10', 'iid10')
           for m in ('local_0.9', 'local_0.9_mean')]
  return runs


PLANS = {'required': _plan_required, 'short': _plan_short}


def _metrics_path(work_dir: str, run: Run) -> str:
  return os.path.join(work_dir, 'results', run.name, 'metrics.csv')


def _archive_path(run: Run) -> str:
  return os.path.join(ARCHIVE, f'{run.name}.csv.gz')


def _finished(rows, run: Run):
  rows = [r for r in rows if int(r['round_num']) >= 1]
  rows.sort(key=lambda r: int(r['round_num']))
  if not rows or int(rows[-1]['round_num']) < run.rounds:
    return None
  return rows[:run.rounds]


def read_rows(work_dir: str, run: Run):
  """The run's per-round metrics if it has finished all its rounds, else None.

  Looks in `work_dir` first, then in the committed archive (`ARCHIVE`).
  """
  path = _metrics_path(work_dir, run)
  if os.path.exists(path):
    with open(path) as f:
      rows = _finished(list(csv.DictReader(f)), run)
    if rows is not None:
      return rows
  if os.path.exists(_archive_path(run)):
    with gzip.open(_archive_path(run), 'rt') as f:
      return _finished(list(csv.DictReader(f)), run)
  return None


def archive(work_dir: str, run: Run) -> bool:
  """Copies a finished run's metrics.csv from `work_dir` into `ARCHIVE` (gzip).

  The bytes depend only on the CSV (no time stamp), so archiving again
  changes no committed file. Removes the run's `IN_PROGRESS` pack. Returns
  whether `work_dir` held the finished run.
  """
  path = _metrics_path(work_dir, run)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    if _finished(list(csv.DictReader(f)), run) is None:
      return False
  with open(path, 'rb') as f:
    data = f.read()
  os.makedirs(ARCHIVE, exist_ok=True)
  buffer = io.BytesIO()
  with gzip.GzipFile(fileobj=buffer, mode='wb', mtime=0, filename='') as z:
    z.write(data)
  with open(_archive_path(run) + '.tmp', 'wb') as f:
    f.write(buffer.getvalue())
  os.replace(_archive_path(run) + '.tmp', _archive_path(run))
  pack = os.path.join(IN_PROGRESS, f'{run.name}.tar.gz')
  if os.path.exists(pack):
    os.remove(pack)
  return True


def _latest_checkpoint(work_dir: str, run: Run):
  found = []
  for path in glob.glob(os.path.join(work_dir, 'checkpoints', run.name, 'program_state_*')):
    suffix = os.path.basename(path)[len('program_state_'):]
    if suffix.isdigit():
      found.append((int(suffix), path))
  return max(found)[1] if found else None


def save_progress(work_dir: str, run: Run) -> bool:
  """Packs an unfinished run's latest checkpoint and results into `IN_PROGRESS`."""
  if read_rows(work_dir, run) is not None:
    return False
  checkpoint = _latest_checkpoint(work_dir, run)
  results = os.path.join(work_dir, 'results', run.name)
  if checkpoint is None or not os.path.isdir(results):
    return False
  os.makedirs(IN_PROGRESS, exist_ok=True)
  pack = os.path.join(IN_PROGRESS, f'{run.name}.tar.gz')
  with tarfile.open(pack + '.tmp', 'w:gz') as tar:
    tar.add(checkpoint, arcname=os.path.relpath(checkpoint, work_dir))
    tar.add(results, arcname=os.path.relpath(results, work_dir))
  os.replace(pack + '.tmp', pack)
  return True


def restore_progress(work_dir: str, run: Run) -> bool:
  """Unpacks the run's `IN_PROGRESS` pack when `work_dir` has no checkpoint of it."""
  pack = os.path.join(IN_PROGRESS, f'{run.name}.tar.gz')
  if not os.path.exists(pack) or _latest_checkpoint(work_dir, run) is not None:
    return False
  shutil.rmtree(os.path.join(work_dir, 'results', run.name), ignore_errors=True)
  with tarfile.open(pack) as tar:
    tar.extractall(work_dir, filter='data')
  return True


def summarize(run: Run, rows) -> collections.OrderedDict:
  """Accuracy (final and mean of the last 10 rounds), sparsity and exchange of one run."""
  accuracy = [float(r['evaluation/accuracy']) for r in rows]
  config = METHODS[run.method]
  if 'finalizer/nonzero_params' in rows[0]:
    nonzero = int(rows[-1]['finalizer/nonzero_params'])
    sparsity = float(rows[-1]['finalizer/sparsity'])
    exchanged = sum(int(r['client_work/communication/params_downloaded'])
                    + int(r['client_work/communication/params_uploaded']) for r in rows)
    mbits = sum(float(r['client_work/communication/transmission_mbits']) for r in rows)
  else:  # TFF's FedAvg: every parameter both ways (Appendix E counts the same).
    nonzero, sparsity = NUM_PARAMS, 0.0
    exchanged = len(rows) * 2 * ENVIRONMENTS[run.environment]['clients_per_round'] * NUM_PARAMS
    mbits = 32 * exchanged / 1e6
  return collections.OrderedDict(
      run=run.name, environment=run.environment, method=run.method,
      algorithm=config['algorithm'], target_sparsity=float(config.get('final_sparsity', 0.0)),
      rounds=run.rounds, epochs=run.epochs, seed=run.seed,
      sparsity=round(sparsity, 4), nonzero_params=nonzero,
      final_accuracy=round(accuracy[-1], 4),
      mean_accuracy_last_10=round(statistics.mean(accuracy[-LAST_ROUNDS:]), 4),
      params_exchanged_millions=round(exchanged / 1e6, 1),
      transmission_mbits=round(mbits, 1), measured_mb=_measured_mb(rows))


def _measured_mb(rows):
  """The bytes our encoders wrote, uploads and broadcasts, cumulative (MB)."""
  if 'cumulative/bytes_uploaded' not in rows[-1]:
    return 'not measured (TFF FedAvg)'
  total = float(rows[-1]['cumulative/bytes_uploaded']) + float(
      rows[-1]['cumulative/bytes_downloaded'])
  return round(total / 1e6, 1)


_INTS = ('rounds', 'epochs', 'seed', 'nonzero_params')
_FLOATS = ('target_sparsity', 'sparsity', 'final_accuracy', 'mean_accuracy_last_10',
           'params_exchanged_millions', 'transmission_mbits')


def committed_summaries() -> dict:
  """{run name: summary} of the committed runs.csv (the last report's rows)."""
  path = os.path.join(RESULTS, 'runs.csv')
  if not os.path.exists(path):
    return {}
  summaries = {}
  with open(path) as f:
    for row in csv.DictReader(f):
      summary = collections.OrderedDict(row)
      for key in _INTS:
        summary[key] = int(summary[key])
      for key in _FLOATS:
        summary[key] = float(summary[key])
      measured = summary.pop('measured_mb', '')
      if measured:
        summary['measured_mb'] = (float(measured) if measured.replace('.', '', 1).isdigit()
                                  else measured)
      summaries[row['run']] = summary
  return summaries


def all_runs() -> list[Run]:
  seen = collections.OrderedDict()
  for plan in PLANS.values():
    for run in plan():
      seen[run] = None
  return list(seen)
