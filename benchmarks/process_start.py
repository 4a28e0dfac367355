r"""Seconds a binary takes with and without the installed packages' bytecode.

uv installs no `.pyc` files unless asked (`--compile-bytecode`), and where
`PYTHONDONTWRITEBYTECODE` is set Python then compiles TensorFlow's and TFF's
sources again in every process. Each case runs `--repeats` times, the two
bytecode states interleaved; "without" points `PYTHONPYCACHEPREFIX` at an
empty directory with `PYTHONDONTWRITEBYTECODE=1`, which finds no bytecode and
writes none: the state of a venv installed without it.

Cases: `train` (one round of FedAvg, 3 built-in clients, the paper's FC
model) and `refusal` (an output directory others can write: refused before
TensorFlow loads).

  python -m benchmarks.process_start --repeats=3

Results: benchmarks/results/process_start.{json,md}.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

from benchmarks import runs
from tff_sparsify import files
from tff_sparsify.binaries import flag_utils

_REPEATS = flags.DEFINE_integer('repeats', 3, 'Runs per case and state.', lower_bound=1)
_OUTPUT = flags.DEFINE_string('output', 'benchmarks/results/process_start',
                              'Results prefix (.json and .md are written).')


def _cases(work):
  loose = os.path.join(work, 'loose')
  os.makedirs(loose)
  os.chmod(loose, 0o777)
  common = ['--experiment_name=exp', '--num_clients=3', '--clients_per_round=2',
            '--client_epochs_per_round=1', '--total_rounds=1', '--progress=false', '--seed=3']
  return {
      'train': (lambda i: [f'--root_output_dir={work}/train_{i}', *common], 0),
      'refusal': (lambda i: [f'--root_output_dir={loose}', *common], 2),
  }


def _time(argv, env, code):
  start = time.perf_counter()
  result = runs.call([sys.executable, '-m', 'binaries.train', *argv], env=env,
                     stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
  seconds = time.perf_counter() - start
  if result.returncode != code:
    raise RuntimeError(f'{argv}: exit {result.returncode}, expected {code}: '
                       f'{result.stderr.strip()[-500:]}')
  return seconds


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as work:
    empty = os.path.join(work, 'empty_pycache')
    os.makedirs(empty)
    base = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONDONTWRITEBYTECODE='1')
    envs = {'with bytecode': base,
            'without bytecode': dict(base, PYTHONPYCACHEPREFIX=empty)}
    times = {}
    run = 0
    for repeat in range(_REPEATS.value):
      for case, (make_argv, code) in _cases(os.path.join(work, f'r{repeat}')).items():
        for state, env in envs.items():
          run += 1
          seconds = _time(make_argv(run), env, code)
          times.setdefault(case, {}).setdefault(state, []).append(seconds)
          print(f'{case} {state}: {seconds:.2f} s', flush=True)
  result = {'command': 'python -m benchmarks.process_start '
                       f'--repeats={_REPEATS.value}',
            'machine': f'{os.cpu_count()} CPUs, {platform.python_version()}',
            'seconds': times}
  files.atomic_write_text(_OUTPUT.value + '.json', json.dumps(result, indent=2) + '\n')
  rows = []
  for case, states in times.items():
    med = {s: statistics.median(v) for s, v in states.items()}
    for state, values in states.items():
      rows.append({'case': case, 'state': state, 's (median)': f'{med[state]:.2f}',
                   'min-max': f'{min(values):.2f}-{max(values):.2f}',
                   'speed-up': f'{med["without bytecode"] / med[state]:.2f}x'})
  lines = ['# Seconds per binary run, with and without installed bytecode', '',
           f'{result["machine"]}; {_REPEATS.value} runs per row, interleaved. Command: '
           f'`{result["command"]}`.', '']
  lines += files.markdown_table(['case', 'state', 's (median)', 'min-max', 'speed-up'], rows)
  files.atomic_write_text(_OUTPUT.value + '.md', '\n'.join(lines) + '\n')
  print('\n'.join(lines))


if __name__ == '__main__':
  flag_utils.run_main(main)
