"""Flag validation and error reporting shared by the binaries.

A user mistake ends the program with one line on stderr naming the flag, the
value and what is allowed, and exit code 2: no stack trace.
"""

import dataclasses
import os
import signal
import sys
from typing import NoReturn, Optional

from absl import app
from absl import flags
from absl import logging

from tff_sparsify import signals
from tff_sparsify import validation

USAGE_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130


def program_name() -> str:
  return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else 'train'


def fail_with(message: str, code: int = USAGE_EXIT_CODE) -> NoReturn:
  print(message, file=sys.stderr, flush=True)
  sys.exit(code)


def fail(holder: flags.FlagHolder, reason: str) -> NoReturn:
  fail_with(
      f'{program_name()}: error: --{holder.name}={holder.value!r}: {reason}'
  )


def _flag_kind(field):
  """The absl DEFINE function of a configuration field, from its type."""
  kinds = {str: flags.DEFINE_string, Optional[str]: flags.DEFINE_string,
           int: flags.DEFINE_integer, Optional[int]: flags.DEFINE_integer,
           float: flags.DEFINE_float, Optional[float]: flags.DEFINE_float,
           bool: flags.DEFINE_bool, tuple[str, ...]: flags.DEFINE_list, tuple: flags.DEFINE_list}
  if field.type not in kinds:
    raise TypeError(f'field {field.name} of type {field.type} has no flag kind')
  return kinds[field.type]


def define_flags(config_class, module_name: str) -> tuple[str, ...]:
  """Defines a flag for each field of `config_class` declared with `validation.option`.

  Name, default, help and allowed values are the field's (declared once);
  an enum where the field has `choices`. `module_name` is the binary's
  module (whose flags `--help` lists). Returns the flags' names.
  """
  names = []
  for field in dataclasses.fields(config_class):
    if 'help' not in field.metadata:
      continue
    help_text, choices = field.metadata['help'], field.metadata['choices']
    default = list(field.default) if isinstance(field.default, tuple) else field.default
    if choices is not None:
      flags.DEFINE_enum(field.name, default, list(choices), help_text, module_name=module_name)
    else:
      _flag_kind(field)(field.name, default, help_text, module_name=module_name)
    names.append(field.name)
  return tuple(names)


def fail_flag(name: str, reason: str) -> NoReturn:
  """`fail` of the flag called `name`."""
  fail(flags.FLAGS[name], reason)


def config_from_flags(config_class, **values):
  """`config_class` made from the flags of its fields' names (and `values`).

  Its `__post_init__` is the one check of each option; a `ConfigError` ends
  the program naming the flag, as `fail` does.
  """
  for field in dataclasses.fields(config_class):
    if field.name not in values and field.name in flags.FLAGS:
      values[field.name] = flags.FLAGS[field.name].value
  try:
    return config_class(**values)
  except validation.ConfigError as e:
    holder = flags.FLAGS[e.field] if e.field in flags.FLAGS else None
    if holder is None:
      fail_with(f'{program_name()}: error: {e}')
    fail(holder, e.reason)


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
  """Parses the flags with absl, then runs `main(argv)`: one-line errors, quiet Ctrl-C.

  Not `absl.app.run`: measured, TensorFlow imported inside `app.run`'s main
  (our binaries import it only after the flags are checked) builds Keras
  models wrongly (a Flatten layer sees eager mode during functional
  construction and fails). absl's own parser and help flags are kept.

  A signal's exception raised inside TensorFlow's Python/C++ glue can come
  out as another exception (seen: a TypeError from the EagerTensor
  constructor after SIGINT). If a termination signal was received, any
  exception ends the program as that signal would.
  """
  app.define_help_flags()
  argv = _parse_flags_or_exit(sys.argv)
  logging.use_absl_handler()
  try:
    main(argv)
  except app.UsageError as e:
    fail_with(f'{program_name()}: error: {e}')
  except KeyboardInterrupt:
    _interrupted()
  except Exception:  # pylint: disable=broad-except
    signum = signals.pending_signal()
    if signum is None:
      raise
    if signum == signal.SIGINT:
      _interrupted()
    sys.exit(128 + signum)
