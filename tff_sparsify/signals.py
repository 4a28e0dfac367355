"""Termination signals as exceptions, so that every `finally` runs on them.

Pure Python: the binaries use it before TensorFlow is imported.
"""

import signal

_pending_signal = None


def _raise_for(signum):
  if signum == signal.SIGINT:
    raise KeyboardInterrupt
  raise SystemExit(128 + signum)


def _on_signal(signum, frame):
  del frame
  global _pending_signal
  _pending_signal = signum
  _raise_for(signum)


def handle_termination_signals():
  """SIGTERM and SIGHUP raise `SystemExit(128 + signum)`, SIGINT KeyboardInterrupt.

  Python runs the handler between any two bytecodes of the main thread; when
  that is inside a `__del__` or weakref callback the exception is printed and
  dropped (measured under load: a SIGTERMed run went on to finish). The
  signal is therefore also remembered, and `raise_if_signalled` raises it
  again at the next safe point.
  """
  for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(signum, _on_signal)


def pending_signal():
  """The termination signal received since `handle_termination_signals`, or None."""
  return _pending_signal


def raise_if_signalled():
  """Raises again for a signal whose exception may have been dropped."""
  if _pending_signal is not None:
    _raise_for(_pending_signal)
