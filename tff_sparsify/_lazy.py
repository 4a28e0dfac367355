"""A module imported at its first use, so that pure-Python code can name TensorFlow code.

The algorithm modules (`learning.algorithms`) hold their configuration and
registry entry, which the binaries read before TensorFlow loads (a bad flag
is refused in well under a second), beside their TensorFlow code, which runs
only when a process is built. They name what they use as

    tf = _lazy.load('tensorflow')
    masks_lib = _lazy.load('tff_sparsify.core.masks')

and the module is imported when one of its attributes is first read. The
package's import graph (`tests/test_layers.py`) counts these as imports.
(The idea of TensorFlow's own `tensorflow.python.util.lazy_loader`, which
cannot be used here: importing it imports TensorFlow.)
"""

import importlib
import types


class _LazyModule(types.ModuleType):
  """Stands for module `name` until an attribute is read, then forwards to it."""

  def __init__(self, name: str):
    super().__init__(name)
    self._lazy_name = name
    self._lazy_module = None

  def __getattr__(self, attribute):
    if attribute.startswith('_lazy_'):
      raise AttributeError(attribute)
    if self._lazy_module is None:
      self._lazy_module = importlib.import_module(self._lazy_name)
    return getattr(self._lazy_module, attribute)

  def __repr__(self):
    state = 'imported' if self._lazy_module is not None else 'not imported yet'
    return f'<lazy module {self._lazy_name!r}, {state}>'


def load(name: str) -> types.ModuleType:
  """Module `name`, imported when one of its attributes is first read."""
  return _LazyModule(name)
