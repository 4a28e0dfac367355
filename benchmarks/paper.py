r"""The paper's FashionMNIST experiments as the authors ran them (issue 13).

Stripelis et al., Appendix C: FC model, batch 32, SGD lr 0.02, FedProx mu
0.001, t_0 = 1, S_0 = 0, F = 1, n = 3, seed 1990. Environments: `shards`
(the authors' non-IID partition, 2 classes per client) and `iid`, with 10
clients all participating or 100 clients of which 10 are sampled per round.

Each run is one `binaries/train.py` process (evaluating every round,
checkpointing every 5 rounds), named `{environment}_{method}_{T}x{E}[_seed{N}]`
under `--work_dir`, so running this again resumes every unfinished run from
its last checkpoint. `--parallel` runs go at once (2 on this 2-core machine).

  python -m benchmarks.paper --plan=required          # train what is missing
  python -m benchmarks.paper --report_only            # tables and figures only
  python -m benchmarks.paper --save_progress          # before the disk goes away

A session's disk does not outlive it, so what must survive is committed:
every finished run's per-round metrics (`results/paper/metrics/*.csv.gz`,
written by every report and --save_progress into the code's own checkout),
and with `--save_progress` the latest checkpoint of each unfinished run
(`results/paper/in_progress/`), unpacked into the work_dir again when
training resumes it.

Results go to benchmarks/results/paper/ (index.md maps each paper figure and
table to its file); every file names the command that made it.
"""

import os
import subprocess
import sys
import time

from absl import app
from absl import flags

from benchmarks import paper_grid as grid
from benchmarks import runs
from benchmarks.paper_grid import PLANS, REPO, Run, read_rows
from tff_sparsify import signals

_PLAN = flags.DEFINE_list('plan', ['required'], f'Plans to train, in order: {list(PLANS)}.')
_ONLY = flags.DEFINE_list('only', None,
                          'Train only these run names (of the plans), in this order.')
_PARALLEL = flags.DEFINE_integer('parallel', 2, 'Runs trained at once.')
_WORK_DIR = flags.DEFINE_string(
    'work_dir', os.path.join(REPO, 'output', 'paper'),
    'root_output_dir of the runs (their checkpoints, for resuming).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'FashionMNIST IDX directory.')
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Do not train; report what is there.')
_SAVE_PROGRESS = flags.DEFINE_bool(
    'save_progress', False,
    'Do not train: pack the latest checkpoint of every unfinished run of --plan into '
    'benchmarks/results/paper/in_progress/ (to commit), archive the finished ones, report.')
_MAX_HOURS = flags.DEFINE_float('max_hours', None,
                                'Start no new run after this many hours.')


def _command(run: Run, work_dir: str) -> list[str]:
  argv = run.flags(work_dir)
  if _DATA_DIR.value:
    argv['data_dir'] = _DATA_DIR.value
  return [sys.executable, '-m', 'binaries.train'] + [f'--{k}={v}' for k, v in argv.items()]


def train(plan: list[Run], work_dir: str, parallel: int, deadline=None):
  """Trains the unfinished runs of `plan`, `parallel` at a time; each resumes if
  interrupted. A termination signal ends the runs under way (they resume)."""
  todo = [r for r in plan if read_rows(work_dir, r) is None]
  os.makedirs(work_dir, exist_ok=True)
  running = {}
  failed = []
  signals.handle_termination_signals()
  try:
    _train_loop(todo, work_dir, parallel, deadline, running, failed)
  except BaseException:
    for process, log in running.values():
      runs.end(process)
      log.close()
    raise
  if failed:
    print(f'failed (see their logs in {work_dir}): {", ".join(failed)}', flush=True)


def _train_loop(todo, work_dir, parallel, deadline, running, failed):
  """`train`'s loop: starts runs as slots free up, records those that end."""
  while todo or running:
    while todo and len(running) < parallel and (deadline is None or time.time() < deadline):
      run = todo.pop(0)
      if grid.restore_progress(work_dir, run):
        print(f'[{time.strftime("%H:%M:%S")}] unpacked {run.name} from '
              f'{os.path.relpath(grid.IN_PROGRESS, REPO)}', flush=True)
      log = open(os.path.join(work_dir, f'{run.name}.log'), 'a')  # pylint: disable=consider-using-with
      print(f'[{time.strftime("%H:%M:%S")}] start {run.name}', flush=True)
      running[run] = (subprocess.Popen(_command(run, work_dir), cwd=REPO, stdout=log,
                                       stderr=subprocess.STDOUT), log)
    if not running:
      break
    time.sleep(5)
    for run, (process, log) in list(running.items()):
      if process.poll() is not None:
        log.close()
        del running[run]
        print(f'[{time.strftime("%H:%M:%S")}] end {run.name}: exit {process.returncode}',
              flush=True)
        if process.returncode:
          failed.append(run.name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  unknown = [p for p in _PLAN.value if p not in PLANS]
  if unknown:
    raise app.UsageError(f'--plan: unknown {unknown}; allowed: {list(PLANS)}')
  if _PARALLEL.value < 1:
    raise app.UsageError(f'--parallel must be >= 1, got {_PARALLEL.value}')
  work_dir = os.path.abspath(_WORK_DIR.value)
  runs = [r for p in _PLAN.value for r in PLANS[p]()]
  if _ONLY.value:
    by_name = {r.name: r for r in runs}
    missing = [n for n in _ONLY.value if n not in by_name]
    if missing:
      raise app.UsageError(f'--only: {missing} are not runs of --plan={_PLAN.value}')
    runs = [by_name[n] for n in dict.fromkeys(_ONLY.value)]
  if _SAVE_PROGRESS.value:
    packed = [r.name for r in runs if grid.save_progress(work_dir, r)]
    print(f'packed into {os.path.relpath(grid.IN_PROGRESS, REPO)}: '
          f'{", ".join(packed) if packed else "nothing"}', flush=True)
  elif not _REPORT_ONLY.value:
    if not _ONLY.value:  # New results first; runs whose summary is kept only lack curves.
      kept = grid.committed_summaries()
      runs.sort(key=lambda r: r.name in kept)
    deadline = time.time() + 3600 * _MAX_HOURS.value if _MAX_HOURS.value else None
    train(runs, work_dir, _PARALLEL.value, deadline)
  for run in grid.all_runs():
    grid.archive(work_dir, run)
  # pylint: disable=g-import-not-at-top
  from benchmarks import paper_report
  paper_report.write(work_dir, grid.all_runs())


if __name__ == '__main__':
  app.run(main)
