"""What the benchmarks that train through the binary share: a run, and the report."""

import os
import subprocess
import sys
import threading
from typing import Optional

from tff_sparsify import signals

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# How long a child has, after SIGTERM, to end (write its checkpoint) before SIGKILL.
END_GRACE_SECONDS = 60


_LIVE = set()  # The children `call` started that still run, from any thread.
_LIVE_LOCK = threading.Lock()


def end(process: subprocess.Popen):
  """Ends `process` if it still runs: SIGTERM, then SIGKILL after END_GRACE_SECONDS."""
  if process.poll() is not None:
    return
  process.terminate()
  try:
    process.wait(END_GRACE_SECONDS)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()


def call(command: list, *, check: bool = False, capture_output: bool = False,
         timeout: Optional[float] = None, **kwargs) -> subprocess.CompletedProcess:
  """`subprocess.run`, except that the child ends with this benchmark.

  `subprocess.run` kills its child only on an exception; a SIGTERM or SIGHUP
  to the benchmark would end the benchmark alone and leave its training run
  going. Here termination signals become exceptions in the main thread
  (`signals.handle_termination_signals`) and the child is sent SIGTERM, then
  SIGKILL after END_GRACE_SECONDS; on `timeout` it is ended the same way.
  Called from other threads, the children are ended by `end_all` (which the
  main thread runs in a `finally`).
  """
  if threading.current_thread() is threading.main_thread():
    signals.handle_termination_signals()
  if capture_output:
    kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  with subprocess.Popen(command, **kwargs) as process:
    with _LIVE_LOCK:
      _LIVE.add(process)
    try:
      stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:  # The timeout, or a signal turned into an exception.
      end(process)
      raise
    finally:
      with _LIVE_LOCK:
        _LIVE.discard(process)
  done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
  if check:
    done.check_returncode()
  return done


def end_all():
  """Ends every child `call` started that still runs (threads' children included)."""
  with _LIVE_LOCK:
    live = list(_LIVE)
  for process in live:
    end(process)


def train(values: dict, name: str) -> subprocess.CompletedProcess:
  """Runs `binaries.train` with `--KEY=VALUE` flags, as a user would; RuntimeError on failure."""
  command = [sys.executable, '-m', 'binaries.train'] + [f'--{k}={v}' for k, v in values.items()]
  done = call(command, cwd=REPO, capture_output=True, text=True)
  if done.returncode != 0:
    raise RuntimeError(f'{name}: exit {done.returncode}: {done.stderr[-2000:]}')
  return done


def run_binary(module: str, values: dict, who: str):
  """Runs `binaries.{module}` with `--KEY=VALUE` flags, its output shown as it comes; on
  failure, exits naming `who` (the binary printed its one-line reason above)."""
  command = [sys.executable, '-m', f'binaries.{module}'] + [
      f'--{k}={v}' for k, v in values.items()]
  print('$', ' '.join(['python'] + command[1:]), flush=True)
  done = call(command, cwd=REPO)
  if done.returncode:
    sys.exit(f'{who}: {module} failed (exit {done.returncode}); its message is above')


def write_report(lines: list, path: Optional[str]):
  """Prints the Markdown `lines` and writes them to `path` if given."""
  text = '\n'.join(lines).rstrip('\n') + '\n'
  print(text)
  if path:
    with open(path, 'w') as f:
      f.write(text)


def flag_args(names) -> str:
  """`--name=value` of each absl flag in `names`, as parsed: the command a result came from."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  return ' '.join(f'--{n}={flags.FLAGS[n].serialize().split("=", 1)[1]}' for n in names)


def write_results(prefix: str, payload: dict, markdown: str):
  """`payload` to `prefix`.json and `markdown` to `prefix`.md; prints the Markdown."""
  import json  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(prefix) or '.', exist_ok=True)
  with open(prefix + '.json', 'w') as f:
    json.dump(payload, f, indent=2)
  with open(prefix + '.md', 'w') as f:
    f.write(markdown)
  print(markdown)


def channel_settings(values: list) -> list:
  """`--settings`' 'sparsity:multiple' pairs as (float, int); app.UsageError if malformed."""
  from absl import app  # pylint: disable=g-import-not-at-top
  try:
    return [(float(a), int(b)) for a, b in (s.split(':') for s in values)]
  except ValueError as e:
    raise app.UsageError(f'--settings: want sparsity:multiple pairs, got {values}') from e
