"""A fix for TensorFlow 2.14 with typing-extensions >= 4.6 (tensorflow#60687).

The pinned stack needs typing-extensions 4.15 (pydantic 2, for DeepSparse), but
from 4.6 on its runtime-checkable protocols probe instances with
`inspect.getattr_static`, which raises `TypeError` on TensorFlow's wrapt-based
`_DictWrapper`. TF 2.14 runs `isinstance(value, SupportsTracingProtocol)` on
every tf.function argument, so saving any structure holding a dict (TFF's
`FileProgramStateManager` checkpoints, among others) fails with
"this __dict__ descriptor does not support '_DictWrapper' objects".

Importing this module applies the fix (`apply()`, idempotent): it gives `SupportsTracingProtocol` a metaclass whose isinstance check
falls back, on that TypeError only, to what Python 3.11's own `typing` does: a
plain attribute lookup of `__tf_tracing_type__`. It changes nothing where the
bug is absent (checked before patching).
"""

from tensorflow.python.trackable import data_structures
from tensorflow.python.types import trace


def _bug_present() -> bool:
  try:
    isinstance(data_structures._DictWrapper({}), trace.SupportsTracingProtocol)  # pylint: disable=protected-access
  except TypeError:
    return True
  return False


def apply():
  protocol = trace.SupportsTracingProtocol
  if not _bug_present():
    return
  base_meta = type(protocol)

  class _SafeProtocolMeta(base_meta):

    def __instancecheck__(cls, instance):
      try:
        return super().__instancecheck__(instance)
      except TypeError:
        return hasattr(type(instance), '__tf_tracing_type__')

  protocol.__class__ = _SafeProtocolMeta


apply()
