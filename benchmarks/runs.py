"""What the benchmarks that train through the binary share: a run, and the report."""

import os
import subprocess
import sys
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train(values: dict, name: str) -> subprocess.CompletedProcess:
  """Runs `binaries.train` with `--KEY=VALUE` flags, as a user would; RuntimeError on failure."""
  command = [sys.executable, '-m', 'binaries.train'] + [f'--{k}={v}' for k, v in values.items()]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    raise RuntimeError(f'{name}: exit {done.returncode}: {done.stderr[-2000:]}')
  return done


def run_binary(module: str, values: dict, who: str):
  """Runs `binaries.{module}` with `--KEY=VALUE` flags, its output shown as it comes; on
  failure, exits naming `who` (the binary printed its one-line reason above)."""
  command = [sys.executable, '-m', f'binaries.{module}'] + [
      f'--{k}={v}' for k, v in values.items()]
  print('$', ' '.join(['python'] + command[1:]), flush=True)
  done = subprocess.run(command, cwd=REPO, check=False)
  if done.returncode:
    sys.exit(f'{who}: {module} failed (exit {done.returncode}); its message is above')


def write_report(lines: list, path: Optional[str]):
  """Prints the Markdown `lines` and writes them to `path` if given."""
  text = '\n'.join(lines).rstrip('\n') + '\n'
  print(text)
  if path:
    with open(path, 'w') as f:
      f.write(text)
