"""A TFF C++ execution context whose `worker_binary` this process owns.

`tff.backends.native.set_sync_local_cpp_execution_context` (TFF 0.87) starts
the worker with the parent's stdout and only stops it from a `__del__` that
fails at interpreter shutdown; measured here, the worker outlives its parent
and keeps the parent's stdout open (`python train.py | tee log` never ends).

`local_cpp_execution_context` builds the same context from TFF's public
framework pieces (`RemoteExecutor` over gRPC to the worker, inside a
`ResourceManagingExecutorFactory` and `SyncExecutionContext`) but starts the
worker itself:

- in its own session, so a terminal's Ctrl-C reaches only the Python process,
  which then stops the worker in order;
- with `PR_SET_PDEATHSIG`, so the kernel kills the worker if the Python
  process dies without cleaning up (SIGKILL);
- with stdout/stderr sent to a log file or /dev/null, never the parent's.

`signals.handle_termination_signals` turns SIGTERM/SIGHUP into
`SystemExit`, so `finally` blocks (and the context manager) run on those
signals too.
"""

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import time
from typing import Iterator, Optional

import grpc
import portpicker
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)

from tensorflow_federated.python.core.impl.executors import executors_errors  # pylint: disable=g-bad-import-order
from tensorflow_federated.python.core.impl.executors import remote_executor_stub  # pylint: disable=g-bad-import-order

_PR_SET_PDEATHSIG = 1
DEFAULT_WORKER_TIMEOUT_SECONDS = 60.0
_GRPC_CHANNEL_OPTIONS = [
    ('grpc.max_message_length', 2_000_000_000),
    ('grpc.max_receive_message_length', 2_000_000_000),
    ('grpc.max_send_message_length', 2_000_000_000),
]
_live_workers: set[subprocess.Popen] = set()


def worker_binary_path() -> str:
  path = os.path.join(os.path.dirname(tff.__file__), 'data', 'worker_binary')
  if not os.path.isfile(path):
    raise RuntimeError(f'TFF worker binary not found at {path}')
  return path


def _die_with_parent(parent_pid: int):
  libc = ctypes.CDLL('libc.so.6', use_errno=True)
  libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  if os.getppid() != parent_pid:  # The parent died before prctl took effect.
    os._exit(1)  # pylint: disable=protected-access


def start_worker(
    port: int, *, max_concurrent_computation_calls: int = -1,
    log_path: Optional[str] = None,
) -> subprocess.Popen:
  """Starts a TFF `worker_binary` serving on `port`, bound to this process."""
  parent_pid = os.getpid()
  args = [
      worker_binary_path(), f'--port={port}',
      f'--max_concurrent_computation_calls={max_concurrent_computation_calls}',
  ]
  with contextlib.ExitStack() as stack:
    if log_path:
      out = stack.enter_context(open(log_path, 'ab'))
    else:
      out = subprocess.DEVNULL
    process = subprocess.Popen(  # pylint: disable=subprocess-popen-preexec-fn
        args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: _die_with_parent(parent_pid),
    )
  _live_workers.add(process)
  return process


def stop_worker(process: subprocess.Popen, timeout: float = 10.0):
  """Stops a worker: SIGINT, then SIGKILL if it has not exited in `timeout`."""
  if process.poll() is None:
    process.send_signal(signal.SIGINT)
    try:
      process.wait(timeout)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
  _live_workers.discard(process)


@atexit.register
def _stop_all_workers():
  for process in list(_live_workers):
    stop_worker(process)


def _wait_until_ready(
    stub: tff.framework.RemoteExecutorGrpcStub, process: subprocess.Popen,
    timeout: float,
):
  deadline = time.monotonic() + timeout
  while not stub.is_ready:
    if process.poll() is not None:
      raise RuntimeError(
          f'TFF worker_binary exited with code {process.returncode} at start'
      )
    if time.monotonic() > deadline:
      raise RuntimeError(f'TFF worker_binary not ready after {timeout} s')
    time.sleep(0.05)


class WorkerLostError(RuntimeError):
  """A worker died or stopped answering; `str` is one line naming it."""


class DeadlineStub(remote_executor_stub.RemoteExecutorStub):
  """A `RemoteExecutorGrpcStub` whose failures stop being retryable in time.

  TFF's async context retries every `RetryableError` (gRPC `UNAVAILABLE`, ...)
  with no deadline, so a worker killed mid-run hangs the run forever
  (measured: 4 minutes of silence until stopped by hand). Each retry calls
  the stub again; here a retryable failure becomes `WorkerLostError`, which
  TFF does not retry, as soon as the local worker `process` has exited, or
  once the worker has failed for longer than `timeout` seconds.
  """

  def __init__(self, stub: tff.framework.RemoteExecutorGrpcStub, address: str, *,
               timeout: float = DEFAULT_WORKER_TIMEOUT_SECONDS,
               process: Optional[subprocess.Popen] = None):
    self._stub = stub
    self._address = address
    self._timeout = timeout
    self._process = process
    self._failing_since = None

  def _call(self, name, *args):
    try:
      result = getattr(self._stub, name)(*args)
    except executors_errors.RetryableError as e:
      now = time.monotonic()
      if self._process is not None and self._process.poll() is not None:
        raise WorkerLostError(
            f'TFF worker at {self._address} exited with code '
            f'{self._process.returncode}') from e
      if self._failing_since is None:
        self._failing_since = now
      if now - self._failing_since > self._timeout:
        raise WorkerLostError(
            f'TFF worker at {self._address} has not answered for '
            f'{now - self._failing_since:.0f} s (timeout {self._timeout:g} s)') from e
      raise
    self._failing_since = None
    return result

  def get_executor(self, request):
    return self._call('get_executor', request)

  def create_value(self, request):
    return self._call('create_value', request)

  def create_struct(self, request):
    return self._call('create_struct', request)

  def create_call(self, request):
    return self._call('create_call', request)

  def create_selection(self, request):
    return self._call('create_selection', request)

  def compute(self, request):
    return self._call('compute', request)

  def dispose(self, request):
    return self._call('dispose', request)

  def dispose_executor(self, request):
    return self._call('dispose_executor', request)

  @property
  def is_ready(self) -> bool:
    return self._stub.is_ready


def create_remote_context(
    channels: list[grpc.Channel], *, default_num_clients: int = 0,
    stream_structs: bool = False, stubs: Optional[list] = None,
) -> tff.framework.SyncExecutionContext:
  """A sync TFF context that runs computations on workers behind `channels`.

  With one channel this is TFF's local C++ context; with several, clients are
  sharded across the workers (TFF's remote executor). `stubs`, if given,
  replace the plain gRPC stubs of `channels` (e.g. `DeadlineStub`s).
  """
  stubs = stubs or [tff.framework.RemoteExecutorGrpcStub(c) for c in channels]
  if len(stubs) != 1:
    raise NotImplementedError('only one worker is supported for now')

  def stack_fn(cardinalities):
    if cardinalities.get(tff.CLIENTS) is None:
      cardinalities[tff.CLIENTS] = default_num_clients
    executor = tff.framework.RemoteExecutor(
        stubs[0], stream_structs=stream_structs
    )
    executor.set_cardinalities(cardinalities)
    return executor

  return tff.framework.SyncExecutionContext(
      executor_fn=tff.framework.ResourceManagingExecutorFactory(stack_fn),
      compiler_fn=tff.backends.native.desugar_and_transform_to_native,
      transform_args=tff.tensorflow.transform_args,
      transform_result=tff.tensorflow.transform_result,
  )


@contextlib.contextmanager
def local_cpp_execution_context(
    *, max_concurrent_computation_calls: int = -1,
    log_path: Optional[str] = None, default_num_clients: int = 0,
    start_timeout: float = 60.0,
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT_SECONDS,
) -> Iterator[subprocess.Popen]:
  """Installs a TFF C++ context on an owned worker; stops it on exit.

  A computation that finds the worker gone raises `WorkerLostError` (at
  once if the worker exited, after `worker_timeout` seconds of failed calls
  otherwise) instead of retrying forever.

  Yields:
    The worker's `subprocess.Popen`.
  """
  port = portpicker.pick_unused_port()
  process = start_worker(
      port, max_concurrent_computation_calls=max_concurrent_computation_calls,
      log_path=log_path,
  )
  try:
    channel = grpc.insecure_channel(f'localhost:{port}', _GRPC_CHANNEL_OPTIONS)
    with contextlib.closing(channel):
      address = f'localhost:{port}'
      stub = DeadlineStub(tff.framework.RemoteExecutorGrpcStub(channel), address,
                          timeout=worker_timeout, process=process)
      context = create_remote_context(
          [channel], default_num_clients=default_num_clients, stubs=[stub]
      )
      _wait_until_ready(
          tff.framework.RemoteExecutorGrpcStub(channel), process, start_timeout
      )
      with tff.framework.get_context_stack().install(context):
        yield process
  finally:
    stop_worker(process)


def drop_import_time_default_context():
  """Replaces the C++ context that `import tensorflow_federated` installs.

  That context would start a worker this process does not own, and its
  `__del__` fails at interpreter shutdown ("'NoneType' object has no attribute
  'Popen'"). After this call, computations run only inside
  `local_cpp_execution_context` (or a context the caller installs).
  """
  from tensorflow_federated.python.core.impl.context_stack import set_default_context  # pylint: disable=g-import-not-at-top
  set_default_context.set_no_default_context()
