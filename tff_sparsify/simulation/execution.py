"""TFF execution contexts on workers this process owns, or reaches securely.

One run uses one or more TFF C++ `worker_binary`s:

- **Local workers** (`num_local_workers`) are started through
  `tff_sparsify.simulation.worker_processes`: each in a network namespace of its own, reached over
  a Unix socket (mode 0600, in a 0700 directory) that only this user can
  open, dying with this process (`PR_SET_PDEATHSIG`), logging to a file,
  never to our stdout. Started with `subprocess.Popen` and no `preexec_fn`:
  forking with a function to run while gRPC channels are open crashed a
  probe in gRPC's event engine (the launcher sets its own death signal).
- **Remote workers** (`workers=['host:port', ...]`) are reached only over
  mutual TLS (`tff-sparsify-worker --credentials=DIR` on each host).

With one worker the context is TFF's sync C++ context (`RemoteExecutor` over
gRPC, as `tff.backends.native` builds it). With several it is TFF's
mergeable-comp context (`MergeableCompExecutionContext` with
`mergeable_comp_compiler.compile_to_mergeable_comp_form`): clients are cut
into contiguous shards, each worker runs the computation up to the
aggregation, the partial aggregates are merged, the rest runs once. Two
changes to TFF's scheduling (`_ordered_invoke`), each measured as needed:

1. TFF's `RemoteExecutor` calls the blocking gRPC stub from its async
   methods, so stock async contexts run the shards one after the other.
   Each worker here has its own sync context, invoked in its own thread.
2. TFF merges partial aggregates in completion order, so two runs differ in
   the last bits. Here they are merged in shard order: a multi-worker run is
   reproducible bit for bit, and so is a crash-resume.

Every gRPC call has a deadline on liveness (`DeadlineStub`): a worker that
exits or stops answering ends the computation with `WorkerLostError` within
`worker_timeout` seconds instead of TFF's endless retries. A lost local worker
is restarted and the computation (a whole round: the coordinator still holds
its arguments) runs again, up to `max_restarts` times.
"""

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterator, Optional, Sequence

import grpc
import numpy as np
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify import _tff_internals as tffi
from tff_sparsify.simulation import worker_processes as worker_lib

# pylint: disable=g-bad-import-order
from tensorflow_federated.proto.v0 import executor_pb2
from tensorflow_federated.proto.v0 import executor_pb2_grpc
# pylint: enable=g-bad-import-order

DEFAULT_WORKER_TIMEOUT_SECONDS = 60.0
DEFAULT_MAX_RESTARTS = 3
DEFAULT_MAX_REPLY_BYTES = 2_000_000_000


def _channel_options(max_reply_bytes: int):
  return [('grpc.max_send_message_length', 2_000_000_000),
          ('grpc.max_receive_message_length', max_reply_bytes)]
_live_workers: set[subprocess.Popen] = set()


class WorkerLostError(RuntimeError):
  """A worker died or stopped answering; `str` is one line naming it."""

  def __init__(self, message: str, address: str = ''):
    super().__init__(message)
    self.address = address


class WorkerReplyError(RuntimeError):
  """A worker answered with what this package never asks for; nothing of it was deserialized."""

  def __init__(self, message: str, address: str = ''):
    super().__init__(message)
    self.address = address


# Value kinds a computation of this package may return: tensors, structures
# of them, federated values of them. A `sequence` would be a TensorFlow graph
# (a dataset) run inside the coordinator by TFF's deserialization; a
# `computation` would be code.
_REFUSED_VALUE_KINDS = ('sequence', 'computation')
_MAX_VALUE_DEPTH = 64


def type_bytes(type_spec) -> int:
  """The bytes of a value of `type_spec` (tensors of known shape; strings count 0)."""
  if isinstance(type_spec, tff.TensorType):
    if type_spec.shape is None or None in type_spec.shape:
      return 0
    dtype = np.dtype(type_spec.dtype)
    return int(np.prod(type_spec.shape, dtype=np.int64)) * (dtype.itemsize if dtype.kind != 'O' else 0)
  if isinstance(type_spec, tff.FederatedType):
    return type_bytes(type_spec.member)
  if isinstance(type_spec, tff.StructType):
    return sum(type_bytes(t) for _, t in tffi.iter_elements(type_spec))
  return 0


def check_reply_value(value, address: str, depth: int = 0):
  """Refuses (`WorkerReplyError`) a reply value holding a kind this package never requests."""
  if depth > _MAX_VALUE_DEPTH:
    raise WorkerReplyError(f'TFF worker at {address} sent a value nested deeper than '
                           f'{_MAX_VALUE_DEPTH}: refused, nothing of it deserialized', address)
  kind = value.WhichOneof('value')
  if kind in _REFUSED_VALUE_KINDS:
    raise WorkerReplyError(f'TFF worker at {address} sent a {kind} value, which this '
                           'package never requests: refused, nothing of it deserialized',
                           address)
  if kind == 'struct':
    for element in value.struct.element:
      check_reply_value(element.value, address, depth + 1)
  elif kind == 'federated':
    for member in value.federated.value:
      check_reply_value(member, address, depth + 1)


class WorkerStartError(RuntimeError):
  """A worker could not be started; `str` is one line saying why."""


class AggregationSplitError(ValueError):
  """A computation cannot be split across workers; `str` is one line."""


class DeadlineStub(tff.framework.RemoteExecutorStub):
  """TFF's `RemoteExecutorGrpcStub`, with deadlines on liveness and byte counts.

  TFF's async context retries every `RetryableError` (gRPC `UNAVAILABLE`, ...)
  with no deadline, and a call to a stopped (not dead) worker never returns:
  measured, a worker killed mid-run hung the run for 4 minutes until stopped
  by hand. Here:

  - a retryable failure becomes `WorkerLostError` (which TFF does not retry)
    as soon as the local worker `process` has exited, or once the worker has
    failed for longer than `timeout` seconds;
  - while a call runs longer than `timeout / 8`, the worker is probed with a
    no-op RPC (`DisposeExecutor` of no executor, answered in about 1 ms);
    when no probe has been answered for `0.75 * timeout`, the call is
    cancelled and `WorkerLostError` raised: a stopped worker is noticed
    within `timeout`.

  `bytes_sent` and `bytes_received` count the serialized requests and
  responses (the gRPC payloads between this coordinator and the worker).
  `inner`, if given, replaces the generated gRPC stub (tests).
  """

  def __init__(self, channel: Optional[grpc.Channel], address: str, *,
               timeout: float = DEFAULT_WORKER_TIMEOUT_SECONDS,
               process: Optional[subprocess.Popen] = None, inner=None,
               max_reply_bytes: int = 0):
    self._address = address
    self._timeout = timeout
    self._process = process
    self._failing_since = None
    self._lost_error = None  # Once lost, every later call fails at once.
    self._ready = False
    self._lock = threading.Lock()
    self.bytes_sent = 0
    self.bytes_received = 0
    self.max_reply_bytes = max_reply_bytes
    self._computations = {}  # (executor id, digest) -> the value's ref id.
    self._inner = inner
    if channel is not None:
      self._grpc = executor_pb2_grpc.ExecutorGroupStub(channel)
      channel.subscribe(self._on_connectivity, try_to_connect=True)

  def _on_connectivity(self, connectivity):
    self._ready = connectivity == grpc.ChannelConnectivity.READY

  def _lost(self, message, cause=None):
    error = WorkerLostError(f'TFF worker at {self._address} {message}',
                            self._address)
    error.__cause__ = cause
    self._lost_error = error
    return error

  def _exited(self) -> bool:
    return self._process is not None and self._process.poll() is not None

  def _probe(self, deadline: float) -> bool:
    try:
      self._grpc.DisposeExecutor(executor_pb2.DisposeExecutorRequest(),
                                 timeout=deadline)
      return True
    except grpc.RpcError as e:
      return e.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED,
                              grpc.StatusCode.UNAVAILABLE)

  def _wait(self, future):
    """The call's response; probes the worker while it runs."""
    step = self._timeout / 8
    last_answer = time.monotonic()
    while True:
      try:
        return future.result(timeout=step)
      except grpc.FutureTimeoutError:
        pass
      if self._exited():
        future.cancel()
        raise self._lost(f'exited with code {self._process.returncode}')
      if self._probe(step):
        last_answer = time.monotonic()
      elif time.monotonic() - last_answer > 0.75 * self._timeout:
        future.cancel()
        raise self._lost(
            f'has not answered for {time.monotonic() - last_answer:.0f} s '
            f'(timeout {self._timeout:g} s)')

  def _call(self, name, request):
    if self._lost_error is not None:
      raise WorkerLostError(str(self._lost_error), self._address)
    try:
      if self._inner is not None:
        response = getattr(self._inner, name)(request)
      else:
        size = request.ByteSize()
        rpc = getattr(self._grpc, ''.join(p.title() for p in name.split('_')))
        try:
          response = self._wait(rpc.future(request))
        except grpc.RpcError as e:
          if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and 'larger than max' in str(
              e.details()):
            raise WorkerReplyError(
                f'TFF worker at {self._address} sent a reply over the '
                f'{self.max_reply_bytes} bytes allowed: refused, nothing of it '
                'deserialized', self._address) from None
          if e.code() in tffi.grpc_retryable_error_codes():
            raise tffi.RetryableGRPCError(e) from e
          raise
        with self._lock:
          self.bytes_sent += size
          self.bytes_received += response.ByteSize()
    except tffi.RetryableError as e:
      now = time.monotonic()
      if self._exited():
        raise self._lost(f'exited with code {self._process.returncode}', e)
      if self._failing_since is None:
        self._failing_since = now
      if now - self._failing_since > self._timeout:
        raise self._lost(
            f'has not answered for {now - self._failing_since:.0f} s '
            f'(timeout {self._timeout:g} s)', e)
      time.sleep(min(0.5, self._timeout / 20))  # TFF retries at once.
      raise
    self._failing_since = None
    return response

  def get_executor(self, request):
    return self._call('get_executor', request)

  def create_value(self, request):
    # A computation already sent to this executor is not sent again: its
    # value stays on the worker (its disposal is held back, below) until the
    # executor is disposed. A round then sends the state and the client ids,
    # not the round's computation (hundreds of kB) as well.
    if request.value.WhichOneof('value') != 'computation':
      return self._call('create_value', request)
    key = (request.executor.id, hashlib.sha256(
        request.value.computation.SerializeToString(deterministic=True)).digest())
    with self._lock:
      ref = self._computations.get(key)
    if ref is not None:
      return executor_pb2.CreateValueResponse(value_ref=executor_pb2.ValueRef(id=ref))
    response = self._call('create_value', request)
    with self._lock:
      self._computations[key] = response.value_ref.id
    return response

  def create_struct(self, request):
    return self._call('create_struct', request)

  def create_call(self, request):
    return self._call('create_call', request)

  def create_selection(self, request):
    return self._call('create_selection', request)

  def compute(self, request):
    response = self._call('compute', request)
    if isinstance(response, executor_pb2.ComputeResponse):  # (Tests' fakes answer others.)
      check_reply_value(response.value, self._address)
    return response

  def dispose(self, request):
    with self._lock:
      kept = {ref for (executor, _), ref in self._computations.items()
              if executor == request.executor.id}
    refs = [r for r in request.value_ref if r.id not in kept]
    if len(refs) == len(request.value_ref):
      return self._call('dispose', request)
    if not refs:
      return executor_pb2.DisposeResponse()
    return self._call('dispose', executor_pb2.DisposeRequest(executor=request.executor,
                                                             value_ref=refs))

  def dispose_executor(self, request):
    with self._lock:
      self._computations = {k: v for k, v in self._computations.items()
                            if k[0] != request.executor.id}
    return self._call('dispose_executor', request)

  @property
  def is_ready(self) -> bool:
    return self._ready


_compile_lock = threading.Lock()


def insecure_in_simulation(comp):
  """`comp` with TFF's secure-sum intrinsics replaced by their bodies, if it has any.

  As TFF's own simulation contexts do (`tff.backends.test`): no TFF runtime
  we run has a secure aggregation protocol, so `federated_secure_sum_bitwidth`
  and its kin become the plain sums of the same integers. The values, their
  quantization and their bit widths are the protocol's; the secrecy is not
  (README, "Secure aggregation"). Computations without them are left as
  they are.
  """
  if b'federated_secure_' not in tff.framework.ConcreteComputation.get_proto(
      comp).SerializeToString():
    return comp
  # The replacement goes through the proto, which forgets the Python
  # containers of the type (a learning process's output would come back as
  # an OrderedDict): the original type is put back.
  return tff.framework.ConcreteComputation.with_type(
      tff.backends.test.replace_secure_intrinsics_with_bodies(comp), comp.type_signature)


@functools.lru_cache(maxsize=64)
def _native_compiled(comp):
  return tff.backends.native.desugar_and_transform_to_native(insecure_in_simulation(comp))


def _compile_native(comp):
  """TFF's native compiler, once per computation for all workers.

  Each worker's context would compile its shard's computation itself (TFF
  caches per context), the workers at once on the first round.
  """
  with _compile_lock:
    return _native_compiled(comp)


def create_remote_context(
    stub: tff.framework.RemoteExecutorStub, *, default_num_clients: int = 0,
    stream_structs: bool = False,
) -> tff.framework.SyncExecutionContext:
  """TFF's sync C++ context on the one worker behind `stub`."""

  def stack_fn(cardinalities):
    if cardinalities.get(tff.CLIENTS) is None:
      cardinalities[tff.CLIENTS] = default_num_clients
    executor = tff.framework.RemoteExecutor(stub, stream_structs=stream_structs)
    executor.set_cardinalities(cardinalities)
    return executor

  return tff.framework.SyncExecutionContext(
      executor_fn=tff.framework.ResourceManagingExecutorFactory(stack_fn),
      compiler_fn=_compile_native,
      transform_args=tff.tensorflow.transform_args,
      transform_result=tff.tensorflow.transform_result,
  )


def _stop(process: subprocess.Popen, timeout: float = 10.0):
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
    _stop(process)


class Worker:
  """One worker: its channel, deadline stub, and (local) launcher process."""

  def __init__(self, address: str, *, timeout: float, default_num_clients: int,
               credentials_dir: Optional[str] = None,
               local_dir: Optional[str] = None, log_path: Optional[str] = None,
               isolate: bool = True, start_timeout: float = 60.0,
               client_data: Optional[str] = None,
               max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES):
    self.address = address
    self._max_reply_bytes = max_reply_bytes
    self._client_data = client_data
    self._timeout = timeout
    self._default_num_clients = default_num_clients
    self._credentials_dir = credentials_dir
    self._local_dir = local_dir
    self._log_path = log_path
    self._isolate = isolate
    self._start_timeout = start_timeout
    self.process: Optional[subprocess.Popen] = None
    self.channel = None
    self.stub = None
    self.context = None
    self._bytes = [0, 0]  # Of the stubs of earlier incarnations.

  @property
  def is_local(self) -> bool:
    return self._local_dir is not None

  @property
  def bytes_sent(self) -> int:
    return self._bytes[0] + (self.stub.bytes_sent if self.stub else 0)

  @property
  def bytes_received(self) -> int:
    return self._bytes[1] + (self.stub.bytes_received if self.stub else 0)

  def start(self):
    if self.is_local:
      self._start_local()
      self.channel = grpc.insecure_channel(f'unix:{self._socket}',
                                           _channel_options(self._max_reply_bytes))
    else:
      self.channel = grpc.secure_channel(
          self.address, _coordinator_credentials(self._credentials_dir),
          _channel_options(self._max_reply_bytes))
      try:
        grpc.channel_ready_future(self.channel).result(self._start_timeout)
      except grpc.FutureTimeoutError:
        self.channel.close()
        why = _tls_diagnosis(self.address, self._credentials_dir,
                             timeout=min(5.0, self._start_timeout))
        raise WorkerStartError(
            f'TFF worker at {self.address} not reachable over mutual TLS '
            f'within {self._start_timeout:g} s' + (f': {why}' if why else '')) from None
    self.stub = DeadlineStub(self.channel, self.address, timeout=self._timeout,
                             max_reply_bytes=self._max_reply_bytes,
                             process=self.process)
    self.context = create_remote_context(
        self.stub, default_num_clients=self._default_num_clients)

  @property
  def _socket(self):
    return os.path.join(self._local_dir, f'{self.address}.sock')

  def _start_local(self):
    with contextlib.suppress(FileNotFoundError):
      os.unlink(self._socket)
    # -P and cwd /: nothing in the current directory is imported.
    args = [sys.executable, '-P', '-m', 'tff_sparsify.simulation.worker_processes',
            f'--unix_socket={self._socket}', f'--parent_pid={os.getpid()}']
    if self._client_data:
      args.append(f'--client_data={self._client_data}')
    if self._log_path:
      args.append(f'--log_file={self._log_path}')
    if not self._isolate:
      args.append('--no_isolation')
    # Its stderr to a file, not a pipe no one reads during the run.
    errors = os.path.join(self._local_dir, f'{self.address}.err')
    with open(errors, 'w') as err:
      process = subprocess.Popen(
          args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
          start_new_session=True, text=True, cwd='/')
    _live_workers.add(process)
    self.process = process
    ready = []

    def read_ready():  # Returns at the ready line, or at EOF if it exits.
      ready.append(process.stdout.readline().strip() == worker_lib.READY_LINE)

    reader = threading.Thread(target=read_ready, daemon=True)
    reader.start()
    reader.join(self._start_timeout)
    if not (ready and ready[0]):
      _stop(process)
      with open(errors) as err:
        lines = err.read().strip().splitlines()
      # The launcher's one line, less its `tff_sparsify.simulation.worker_processes: error: `.
      detail = lines[-1].split('error: ', 1)[-1] if lines else (
          f'exit code {process.returncode}')
      if process.returncode == 3:  # No network namespace on this platform.
        raise WorkerStartError(
            f'{detail}: a local worker cannot be isolated here; pass '
            '--allow_unisolated_workers to run it anyway (bound to loopback, '
            'reachable by other local users)')
      raise WorkerStartError(
          f'local TFF worker {self.address} did not start: {detail}')

  def stop(self):
    if self.stub is not None:
      self._bytes[0] += self.stub.bytes_sent
      self._bytes[1] += self.stub.bytes_received
      if self.channel is not None:
        self._unsubscribe()
      self.stub = None
    if self.channel is not None:
      self.channel.close()
      self.channel = None
    if self.process is not None:
      _stop(self.process)

  def _unsubscribe(self):
    """Ends gRPC's connectivity polling before the channel closes (1 s at most).

    A polling thread that finds its channel closed prints a traceback
    ("Cannot invoke RPC: Channel closed!") on stderr, which broke the
    one-line errors of runs that end with workers connected.
    """
    self.channel.unsubscribe(self.stub._on_connectivity)  # pylint: disable=protected-access
    deadline = time.monotonic() + 1.0
    while tffi.channel_polling(self.channel) and time.monotonic() < deadline:
      time.sleep(0.02)

  def restart(self):
    self.stop()
    self.start()


def _tls_diagnosis(address: str, directory: str, timeout: float = 5.0) -> str:
  """Why a TLS handshake with `address` fails, as Python's ssl says it ('' if it does not).

  gRPC reports a failed handshake only as a worker not becoming ready; this
  makes the same handshake (TLS 1.3, the coordinator's certificate, ALPN h2)
  to name the cause: a certificate that does not name the host, expired, of
  another CA, or nothing listening.
  """
  import socket  # pylint: disable=g-import-not-at-top
  import ssl  # pylint: disable=g-import-not-at-top
  host, _, port = address.rpartition(':')
  host = host.strip('[]')
  context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
  context.minimum_version = ssl.TLSVersion.TLSv1_3
  try:
    context.load_verify_locations(os.path.join(directory, worker_lib.CA_FILE))
    context.load_cert_chain(os.path.join(directory, worker_lib.CLIENT_CERT),
                            os.path.join(directory, worker_lib.CLIENT_KEY))
    context.set_alpn_protocols(['h2'])
    with socket.create_connection((host, int(port)), timeout=timeout) as raw:
      with context.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')
        if not tls.recv(1):
          return 'the worker closed the connection after the handshake (is the coordinator\'s ' \
                 'certificate from this worker\'s CA?)'
  except ssl.SSLCertVerificationError as e:
    return f'its certificate is refused: {e.verify_message}'
  except ssl.SSLError as e:
    return f'TLS handshake failed: {e.reason or e}'
  except OSError as e:
    return f'cannot connect: {e.strerror or e}'
  return ''


def _coordinator_credentials(directory: str) -> grpc.ChannelCredentials:
  def read(name):
    with open(os.path.join(directory, name), 'rb') as f:
      return f.read()
  return grpc.ssl_channel_credentials(
      root_certificates=read(worker_lib.CA_FILE),
      private_key=read(worker_lib.CLIENT_KEY),
      certificate_chain=read(worker_lib.CLIENT_CERT))


class _ThreadedContext(tffi.AsyncContext):
  """An async context running one worker's sync context in its own thread."""

  def __init__(self, worker: Worker):
    self._worker = worker
    self._thread = concurrent.futures.ThreadPoolExecutor(1)

  async def invoke(self, comp, arg):
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        self._thread, self._worker.context.invoke, comp, arg)

  def close(self):
    self._thread.shutdown(wait=True)


async def _gather_all(awaitables):
  """Every result, in order; the first error only once all have finished."""
  results = await asyncio.gather(*awaitables, return_exceptions=True)
  for result in results:
    if isinstance(result, BaseException):
      raise result
  return results


async def _ordered_invoke(comp: tffi.MergeableCompForm, arg_list,
                          contexts: Sequence[_ThreadedContext],
                          merge_context: Optional[_ThreadedContext] = None):
  """TFF's `_invoke_mergeable_comp_form`, merging in shard order.

  One shard per context, all at once; partial aggregates merged 0, 1, 2, ...
  on `merge_context` (default: the first context); `after_merge` there too
  when its result is not per worker, as TFF does it.
  """
  partials = await _gather_all(
      [ctx.invoke(comp.up_to_merge, arg) for arg, ctx in zip(arg_list, contexts)])
  merger = merge_context or contexts[0]
  merged = partials[0]
  for partial in partials[1:]:
    merged = await merger.invoke(
        comp.merge, tffi.Struct.unnamed(merged, partial))

  def all_equal(type_spec):
    return not isinstance(type_spec, tff.FederatedType) or type_spec.all_equal

  def after_merge_arg(arg):
    return merged if arg is None else tffi.Struct.unnamed(arg, merged)

  if tffi.contains_only(comp.after_merge.type_signature.result, all_equal):
    return await merger.invoke(comp.after_merge, after_merge_arg(arg_list[0]))
  results = await _gather_all([
      ctx.invoke(comp.after_merge, after_merge_arg(arg))
      for arg, ctx in zip(arg_list, contexts)])
  return tffi.repackage_partitioned_values(
      results, result_type_spec=comp.after_merge.type_signature.result)


@functools.lru_cache(maxsize=64)
def _compile_to_mergeable(comp) -> tffi.MergeableCompForm:
  try:
    return tffi.compile_to_mergeable_comp_form(insecure_in_simulation(comp))
  except ValueError as e:
    if 'aggregate dependent on another' not in str(e):
      raise
    raise AggregationSplitError(
        'this computation has an aggregation whose input depends on another '
        'aggregation\'s result (e.g. an aggregator that sums twice in one '
        'round), which TFF cannot split across workers; run it on one '
        'worker') from None


def _cut_clients(value, type_spec, start: int, stop: int):
  """`value` with its CLIENTS-placed (not all-equal) lists cut to [start, stop)."""
  if isinstance(type_spec, tff.StructType):
    elements = tffi.iter_elements(tffi.from_container(value))
    return tffi.Struct([
        (name, _cut_clients(element, element_type, start, stop))
        for (_, element), (name, element_type) in zip(
            elements, tffi.iter_elements(type_spec))])
  if (isinstance(type_spec, tff.FederatedType) and type_spec.placement is tff.CLIENTS
      and not type_spec.all_equal):
    return list(value)[start:stop]
  return value


class WorkerPoolContext(tffi.MergeableCompExecutionContext):
  """A sync TFF context over `workers`; restarts lost local workers.

  One worker: its own sync C++ context. Several: TFF's mergeable-comp
  context with `_ordered_invoke`. A `WorkerLostError` from a local worker
  restarts it and runs the computation again from its arguments, at most
  `max_restarts` times in the context's life; from a remote worker it is
  raised.
  """

  def __init__(self, workers: Sequence[Worker], *,
               max_restarts: int = DEFAULT_MAX_RESTARTS, log=None,
               merge_worker: Optional[Worker] = None):
    self.workers = list(workers)
    self.merge_worker = merge_worker
    self._contexts = [_ThreadedContext(w) for w in self.workers]
    self._merge_context = _ThreadedContext(merge_worker) if merge_worker else None
    self._max_restarts = max_restarts
    self._log = log or (lambda message: print(message, file=sys.stderr,
                                              flush=True))
    self.restarts = 0
    self._clients_per_worker = None
    # Each worker's sync context transforms its own arguments and results.
    super().__init__(self._contexts, compiler_fn=_compile_to_mergeable)

  @property
  def bytes_sent(self) -> int:
    return sum(w.bytes_sent for w in self.workers)

  @property
  def bytes_received(self) -> int:
    return sum(w.bytes_received for w in self.workers)

  @contextlib.contextmanager
  def clients_per_worker(self, counts: Optional[Sequence[int]]):
    """Within: a computation's clients go `counts[i]` to worker i, in order.

    For clients that live on one worker (silos): TFF cuts the clients into
    equal contiguous shards. A worker given no client takes no part. None:
    TFF's equal shards.
    """
    if counts is not None and len(counts) != len(self.workers):
      raise ValueError(f'{len(counts)} counts for {len(self.workers)} workers')
    self._clients_per_worker = None if counts is None else list(counts)
    try:
      yield
    finally:
      self._clients_per_worker = None

  def _split(self, arg, parameter_type):
    """(the argument of each worker taking part, their contexts)."""
    counts = self._clients_per_worker
    if counts is not None and arg is not None:
      found = tffi.infer_cardinalities(arg, parameter_type).get(tff.CLIENTS)
      if found is not None:
        if found != sum(counts):
          raise ValueError(f'{found} clients for workers planned to take {sum(counts)}')
        bounds = np.cumsum([0] + counts)
        taking = [i for i, c in enumerate(counts) if c > 0]
        return ([_cut_clients(arg, parameter_type, bounds[i], bounds[i + 1]) for i in taking],
                [self._contexts[i] for i in taking])
    arg_list = [None] * len(self._contexts)
    if arg is not None:
      arg_list = tffi.MergeableCompExecutionContextValue(
          arg, parameter_type, len(self._contexts)).value()
    return arg_list, self._contexts[:len(arg_list)]

  def _invoke_once(self, comp, arg):
    if len(self.workers) == 1:
      return self.workers[0].context.invoke(comp, arg)
    if not isinstance(comp, tffi.MergeableCompForm):
      comp = tffi.compile_in(self, comp)
    arg_list, contexts = self._split(arg, comp.up_to_merge.type_signature.parameter)
    result = tffi.run_coroutine(
        self, _ordered_invoke(comp, arg_list, contexts, self._merge_context))
    return tffi.type_to_py_container(
        result, comp.after_merge.type_signature.result)

  def invoke(self, comp, arg=None):
    while True:
      try:
        return self._invoke_once(comp, arg)
      except WorkerLostError as e:
        lost = [w for w in self.workers + [self.merge_worker]
                if w is not None and w.address == e.address]
        if (not lost or not lost[0].is_local
            or self.restarts >= self._max_restarts):
          raise
        self.restarts += 1
        self._log(f'{e}; restarting it and running the computation again '
                  f'(restart {self.restarts} of at most {self._max_restarts})')
        lost[0].restart()

  def close(self):
    for ctx in self._contexts + [self._merge_context]:
      if ctx is not None:
        ctx.close()


def _credentials_ok(directory: Optional[str], log):
  if directory is None:
    raise WorkerStartError(
        'remote workers need credentials: pass the coordinator/ directory of '
        'tff-sparsify-worker --make_credentials (ca.pem, coordinator.pem, coordinator.key)')
  try:
    for warning in worker_lib.check_credentials(directory, worker_lib.CLIENT_CERT,
                                                worker_lib.CLIENT_KEY):
      log(f'warning: {warning}')
  except worker_lib.CredentialsError as e:
    raise WorkerStartError(str(e)) from None


@contextlib.contextmanager
def worker_pool_context(
    *, num_local_workers: int = 1, workers: Sequence[str] = (),
    credentials_dir: Optional[str] = None, log_dir: Optional[str] = None,
    default_num_clients: int = 0, start_timeout: float = 60.0,
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT_SECONDS,
    max_restarts: int = DEFAULT_MAX_RESTARTS,
    allow_unisolated_workers: bool = False, log=None,
    client_data: Optional[str] = None,
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
) -> Iterator[WorkerPoolContext]:
  """Installs a context over `workers` (remote) or `num_local_workers` owned ones.

  `client_data` (`KIND:PATH`): what the local workers serve by client id
  (`client_ids.py`); remote workers serve their own (`tff-sparsify-worker
  --client_data`). A worker's reply over `max_reply_bytes`, or holding a
  value kind this package never requests (a dataset, a computation), is
  refused (`WorkerReplyError`) before TFF deserializes anything of it.

  Everything started here is stopped on exit, exception or signal (and by
  the kernel if this process is killed). Local workers whose network cannot
  be isolated are refused (`WorkerStartError`) unless
  `allow_unisolated_workers`.
  """
  if client_data:
    from tff_sparsify.simulation import sources  # pylint: disable=g-import-not-at-top
    kind, path = sources.parse(client_data)
    client_data = f'{kind}:{os.path.abspath(path)}'  # The launcher runs in /.
  if workers:
    _credentials_ok(credentials_dir, log or (lambda m: print(m, file=sys.stderr, flush=True)))
  elif num_local_workers < 1:
    raise ValueError(f'num_local_workers={num_local_workers}: must be >= 1')
  socket_dir = tempfile.mkdtemp(prefix='tff_sparsify_workers_')  # Mode 0700.
  pool, merge_worker = [], None
  try:
    if workers:
      # A remote worker not reachable within the timeout at start is lost too.
      pool = [Worker(a, timeout=worker_timeout, credentials_dir=credentials_dir,
                     default_num_clients=default_num_clients,
                     max_reply_bytes=max_reply_bytes,
                     start_timeout=min(start_timeout, worker_timeout))
              for a in workers]
    else:
      pool = [Worker(
          f'local-worker-{i}', timeout=worker_timeout, local_dir=socket_dir,
          default_num_clients=default_num_clients, start_timeout=start_timeout,
          log_path=(os.path.join(log_dir, f'worker_{i}.log') if log_dir
                    else None),
          isolate=not allow_unisolated_workers, client_data=client_data,
          max_reply_bytes=max_reply_bytes)
              for i in range(num_local_workers)]
    if len(workers) > 1:
      # The partial aggregates are merged here, on a local worker of this
      # process: a silo then receives the model and its clients' ids only,
      # not the other silos' partial aggregates.
      merge_worker = Worker(
          'local-merge-worker', timeout=worker_timeout, local_dir=socket_dir,
          default_num_clients=default_num_clients, start_timeout=start_timeout,
          log_path=(os.path.join(log_dir, 'merge_worker.log') if log_dir else None),
          isolate=not allow_unisolated_workers)
    for w in pool + [merge_worker] * bool(merge_worker):
      w.start()
    context = WorkerPoolContext(pool, max_restarts=max_restarts, log=log,
                                merge_worker=merge_worker)
    try:
      with tff.framework.get_context_stack().install(context):
        yield context
    finally:
      context.close()
  finally:
    for w in pool + [merge_worker] * bool(merge_worker):
      w.stop()
    shutil.rmtree(socket_dir, ignore_errors=True)


@contextlib.contextmanager
def local_cpp_execution_context(
    *, log_path: Optional[str] = None, default_num_clients: int = 0,
    start_timeout: float = 60.0,
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT_SECONDS,
) -> Iterator[subprocess.Popen]:
  """One owned, isolated local worker (see `worker_pool_context`).

  Yields:
    The `subprocess.Popen` of the worker's launcher (`worker_binary` is its
    child and dies with it).
  """
  log_dir = None
  if log_path:
    log_dir = os.path.dirname(log_path) or '.'
  with worker_pool_context(
      num_local_workers=1, log_dir=log_dir,
      default_num_clients=default_num_clients, start_timeout=start_timeout,
      worker_timeout=worker_timeout) as context:
    yield context.workers[0].process


def drop_import_time_default_context():
  """Replaces the C++ context that `import tensorflow_federated` installs.

  That context would start a worker this process does not own, and its
  `__del__` fails at interpreter shutdown ("'NoneType' object has no attribute
  'Popen'"). After this call, computations run only inside
  `local_cpp_execution_context` (or a context the caller installs).
  """
  tffi.set_no_default_context()
