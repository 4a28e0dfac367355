"""The one error type of a bad option, and the range checks the configurations share.

Pure Python (no TensorFlow). Every option of the package is checked once, in
the frozen configuration that holds it (`config.TrainConfig`,
`config.ExecutionConfig`, `learning.configs.*`); a `ConfigError` names the
field, the value given and what is allowed, and the binaries print it as
`--field=value: reason`.
"""

import dataclasses
import math
from typing import Any, Optional, Sequence


class ConfigError(ValueError):
  """A configuration value out of range: names the field, value and what is allowed."""

  def __init__(self, field: str, value: Any, reason: str):
    self.field = field
    self.value = value
    self.reason = reason
    super().__init__(f'{field}={value!r}: {reason}')


def is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def option(default, help: str, choices: Optional[Sequence[str]] = None):  # pylint: disable=redefined-builtin
  """A configuration field that is also a flag: default, help and allowed values, declared once.

  `binaries.flag_utils.define_flags` makes the flag of each such field
  (its kind from the field's type; an enum where `choices` are given), and
  `check_choices` checks the values against `choices`.
  """
  return dataclasses.field(default=default, metadata=dict(
      help=help, choices=None if choices is None else tuple(choices)))


def check_choices(config):
  """`check_choice` of every field of `config` declared with `option(choices=...)` (None passes)."""
  for field in dataclasses.fields(config):
    choices = field.metadata.get('choices')
    value = getattr(config, field.name)
    if choices is not None and value is not None:
      check_choice(field.name, value, choices)


def check_choice(field: str, value, allowed: Sequence[str]):
  if value not in allowed:
    raise ConfigError(field, value, f'must be one of {", ".join(allowed)}')


def check_positive_int(field: str, value):
  if not is_int(value) or value < 1:
    raise ConfigError(field, value, 'must be positive')


def check_positive_number(field: str, value):
  if not is_number(value) or not value > 0:
    raise ConfigError(field, value, 'must be positive')


def check_fraction(field: str, value):
  """In [0, 1)."""
  if not is_number(value) or not 0 <= value < 1:
    raise ConfigError(field, value, 'must be in [0, 1)')
