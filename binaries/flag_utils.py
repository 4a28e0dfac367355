"""Flag validation and error reporting shared by the binaries.

A user mistake ends the program with one line on stderr naming the flag, the
value and what is allowed, and exit code 2: no stack trace.
"""

import os
import signal
import sys
import types
from typing import NoReturn

from absl import app
from absl import flags

from tff_sparsify import execution

USAGE_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130


def program_name() -> str:
  return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'train'


def fail_with(message: str) -> NoReturn:
  print(message, file=sys.stderr, flush=True)
  sys.exit(USAGE_EXIT_CODE)


def fail(holder: flags.FlagHolder, reason: str) -> NoReturn:
  fail_with(
      f'{program_name()}: error: --{holder.name}={holder.value!r}: {reason}'
  )


def check_positive(*holders: flags.FlagHolder):
  for holder in holders:
    if holder.value is None or not holder.value > 0:
      fail(holder, 'must be positive')


def flag_values_dict(module: types.ModuleType) -> dict:
  """The values of the flags a binary module defines, for its run record."""
  return {
      holder.name: holder.value
      for holder in vars(module).values()
      if isinstance(holder, flags.FlagHolder)
  }


def _parse_flags_or_exit(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail_with(f'{program_name()}: error: {e}')


def _interrupted() -> NoReturn:
  print(
      f'{program_name()}: interrupted; run the same command again to resume '
      'from the latest checkpoint', file=sys.stderr, flush=True,
  )
  sys.exit(INTERRUPTED_EXIT_CODE)


def run_main(main):
  """`app.run(main)` with one-line flag errors and a quiet Ctrl-C.

  A signal's exception raised inside TensorFlow's Python/C++ glue can come
  out as another exception (seen: a TypeError from the EagerTensor
  constructor after SIGINT). If a termination signal was received, any
  exception ends the program as that signal would.
  """
  try:
    app.run(main, flags_parser=_parse_flags_or_exit)
  except KeyboardInterrupt:
    _interrupted()
  except Exception:  # pylint: disable=broad-except
    signum = execution.pending_signal()
    if signum is None:
      raise
    if signum == signal.SIGINT:
      _interrupted()
    sys.exit(128 + signum)
