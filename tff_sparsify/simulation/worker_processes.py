"""A TFF worker that only its owner can reach.

TFF's `worker_binary` serves on `[::]:PORT` (every interface), with no TLS and
no authentication, and runs any TensorFlow graph sent to it, file reads and
writes included. `serve` puts it where only the intended client reaches it:

1. The listening socket is made first, in the host's network namespace: a
   Unix socket in an owner-only (0700) directory, file mode 0600, for a local
   worker; or a TCP port that speaks only mutual TLS (client certificate
   signed by the given CA required, ALPN h2 as gRPC needs) for a remote one.
2. The process then moves into a network namespace of its own
   (`unshare(CLONE_NEWNET)`, or with a user namespace where the user is not
   root), whose only interface is its loopback, and starts `worker_binary`
   there. Nothing outside the namespace can open a connection to it.
3. Connections accepted on the socket of step 1 are relayed, byte for byte,
   to the worker on the namespace's loopback.

Where no namespace can be made and the user allows an unisolated worker,
`worker_binary` runs in the host's namespace with a preloaded `bind` that
binds loopback only (`_LOOPBACK_BIND_C`, built with the system's C compiler at
start), and its listening sockets are read back (psutil) before it is used: a
worker found listening beyond loopback is stopped and refused.

The worker dies with this process (`PR_SET_PDEATHSIG`), and this process with
its parent when `parent_pid` is given. Python, not TF: this module imports no
TensorFlow and is run as `python -m tff_sparsify.simulation.worker_processes` or the console script
`tff-sparsify-worker` (see `binaries/worker.py`).
"""

import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import ssl
import stat
import struct
import subprocess
import sys
import time
from typing import Optional

_PR_SET_PDEATHSIG = 1
_CLONE_NEWNET = 0x40000000
_CLONE_NEWUSER = 0x10000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_INNER_PORT = 10000  # Private to the namespace: no other process can hold it.
_RELAY_CHUNK = 1 << 20
READY_LINE = 'tff-sparsify-worker ready'
CA_FILE, SERVER_CERT, SERVER_KEY = 'ca.pem', 'worker.pem', 'worker.key'
CLIENT_CERT, CLIENT_KEY = 'coordinator.pem', 'coordinator.key'


def missing_coordinator_files(directory: str) -> list[str]:
  """Which of the coordinator's credential files `directory` lacks."""
  return [name for name in (CA_FILE, CLIENT_CERT, CLIENT_KEY)
          if not os.path.isfile(os.path.join(directory, name))]


class IsolationError(OSError):
  """No private network namespace can be made on this platform."""


def worker_binary_path() -> str:
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.find_spec('tensorflow_federated')
  if spec is None or not spec.submodule_search_locations:
    raise RuntimeError('tensorflow_federated is not installed')
  path = os.path.join(list(spec.submodule_search_locations)[0], 'data',
                      'worker_binary')
  if not os.path.isfile(path):
    raise RuntimeError(f'TFF worker binary not found at {path}')
  return path


def _libc():
  return ctypes.CDLL(None, use_errno=True)


def die_with_parent(parent_pid: Optional[int]):
  """Gets SIGKILL when the parent exits; exits now if it already has."""
  _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  if parent_pid is not None and os.getppid() != parent_pid:
    os._exit(1)  # pylint: disable=protected-access


def _write(path, text):
  with open(path, 'w') as f:
    f.write(text)


def isolate_network():
  """Moves this (single-threaded) process into a new network namespace.

  Raises:
    IsolationError: neither a network namespace nor a user + network
      namespace could be made (no privileges, or disabled by the kernel).
  """
  libc = _libc()
  if libc.unshare(_CLONE_NEWNET) != 0:
    first = ctypes.get_errno()
    uid, gid = os.getuid(), os.getgid()
    if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
      raise IsolationError(
          ctypes.get_errno(),
          'cannot make a private network namespace '
          f'(unshare: {os.strerror(first)}; with a user namespace: '
          f'{os.strerror(ctypes.get_errno())})')
    _write('/proc/self/setgroups', 'deny')
    _write('/proc/self/uid_map', f'0 {uid} 1')
    _write('/proc/self/gid_map', f'0 {gid} 1')
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    ifreq = struct.pack('16sH22x', b'lo', 0)
    flags = struct.unpack('16sH22x', fcntl.ioctl(s, _SIOCGIFFLAGS, ifreq))[1]
    fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack('16sH22x', b'lo', flags | _IFF_UP))


def unix_listener(path: str) -> socket.socket:
  """A Unix socket at `path` that only this user can connect to."""
  directory = os.path.dirname(os.path.abspath(path))
  mode = os.stat(directory).st_mode
  if mode & (stat.S_IRWXG | stat.S_IRWXO) and not mode & stat.S_ISVTX:
    raise PermissionError(
        f'{directory} is open to other users (mode {stat.S_IMODE(mode):o}); '
        'the worker socket needs an owner-only directory')
  sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  old_umask = os.umask(0o177)
  try:
    sock.bind(path)
  finally:
    os.umask(old_umask)
  os.chmod(path, 0o600)
  return sock


def tcp_listener(host: str, port: int) -> socket.socket:
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.bind((host, port))
  return sock


def server_tls_context(credentials_dir: str) -> ssl.SSLContext:
  """Mutual TLS: this worker's certificate, client certificates from the CA."""
  context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  context.minimum_version = ssl.TLSVersion.TLSv1_3
  context.load_cert_chain(os.path.join(credentials_dir, SERVER_CERT),
                          os.path.join(credentials_dir, SERVER_KEY))
  context.load_verify_locations(os.path.join(credentials_dir, CA_FILE))
  context.verify_mode = ssl.CERT_REQUIRED
  context.set_alpn_protocols(['h2'])  # gRPC clients require it.
  return context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
  try:
    while True:
      data = await reader.read(_RELAY_CHUNK)
      if not data:
        break
      writer.write(data)
      await writer.drain()
  except (ConnectionError, ssl.SSLError, OSError):
    pass
  finally:
    with contextlib.suppress(Exception):
      writer.close()


async def _relay(worker_port, reader, writer):
  try:
    up_reader, up_writer = await asyncio.open_connection('127.0.0.1', worker_port)
  except OSError:
    writer.close()
    return
  await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float):
  deadline = time.monotonic() + timeout
  while True:
    if process.poll() is not None:
      raise RuntimeError(f'worker_binary exited with code {process.returncode} '
                         'at start')
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
      if s.connect_ex(('127.0.0.1', port)) == 0:
        return
    if time.monotonic() > deadline:
      raise RuntimeError(f'worker_binary not listening after {timeout:g} s')
    time.sleep(0.05)


# worker_binary has only `--port` and binds `[::]`. Unisolated, this `bind`
# (preloaded) binds every IPv4 socket to 127.0.0.1 and every IPv6 one to
# ::ffff:127.0.0.1 (IPv4 loopback through a dual-stack socket: the relay
# connects to 127.0.0.1), whatever address was asked for.
_LOOPBACK_BIND_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  static bind_fn real_bind;
  if (!real_bind) real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
  if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
    struct sockaddr_in a;
    memcpy(&a, addr, sizeof a);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
  }
  if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 a;
    memcpy(&a, addr, sizeof a);
    memset(&a.sin6_addr, 0, sizeof a.sin6_addr);
    a.sin6_addr.s6_addr[10] = 0xff;
    a.sin6_addr.s6_addr[11] = 0xff;
    a.sin6_addr.s6_addr[12] = 127;
    a.sin6_addr.s6_addr[15] = 1;
    return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
  }
  return real_bind(fd, addr, len);
}
"""


def build_loopback_bind(directory: str) -> str:
  """Compiles `_LOOPBACK_BIND_C` into `directory`; returns the library's path."""
  import shutil  # pylint: disable=g-import-not-at-top
  compiler = os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc')
  if not compiler:
    raise RuntimeError('an unisolated worker needs a C compiler (cc or gcc) to '
                       'bind loopback only; none found on PATH')
  source = os.path.join(directory, 'loopback_bind.c')
  library = os.path.join(directory, 'loopback_bind.so')
  _write(source, _LOOPBACK_BIND_C)
  result = subprocess.run(
      [compiler, '-O2', '-shared', '-fPIC', '-o', library, source, '-ldl'],
      stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
      check=False)
  if result.returncode != 0:
    last = (result.stderr.strip().splitlines() or ['no output'])[-1]
    raise RuntimeError(f'could not build the loopback-only bind for an '
                       f'unisolated worker ({compiler}: {last})')
  return library


def check_loopback_only(pid: int):
  """Raises RuntimeError if process `pid` listens on TCP anywhere beyond loopback."""
  import ipaddress  # pylint: disable=g-import-not-at-top
  import psutil  # pylint: disable=g-import-not-at-top

  def loopback(address):
    ip = ipaddress.ip_address(address)
    return (getattr(ip, 'ipv4_mapped', None) or ip).is_loopback

  exposed = sorted({f'{c.laddr.ip} port {c.laddr.port}'
                    for c in psutil.Process(pid).net_connections(kind='tcp')
                    if c.status == psutil.CONN_LISTEN and not loopback(c.laddr.ip)})
  if exposed:
    raise RuntimeError(f'worker_binary listens on {", ".join(exposed)}, beyond loopback; '
                       'refusing to serve')


def _start_worker_binary(port: int, log_path: Optional[str],
                         max_concurrent_computation_calls: int, cwd: str = '/',
                         preload: Optional[str] = None):
  """Starts worker_binary bound to this process (no threads exist yet).

  Its working directory is `cwd`: a silo's directory (`silo.py`), whose
  `silo.json` and `data` the coordinator's computations read, else `/`.
  `preload`: a library to preload (the loopback-only `bind`).
  """
  env = None
  if preload:
    env = dict(os.environ, LD_PRELOAD=preload)
  out = open(log_path, 'ab') if log_path else subprocess.DEVNULL  # pylint: disable=consider-using-with
  try:
    return subprocess.Popen(  # pylint: disable=subprocess-popen-preexec-fn
        [worker_binary_path(), f'--port={port}',
         f'--max_concurrent_computation_calls={max_concurrent_computation_calls}'],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        preexec_fn=lambda: die_with_parent(None), cwd=cwd, env=env,
    )
  finally:
    if log_path:
      out.close()


def drop_privileges(user: str, silo_dir: Optional[str], log_path: Optional[str]):
  """Becomes `user` (its uid, gid, no supplementary groups) for good.

  Called after the listening socket is bound, the TLS key read and the
  network namespace made (each needs the starting user's rights), before
  `worker_binary` starts: a graph it runs can then write only where `user`
  can. The silo's private directory is handed to `user`; the log file is
  opened before (worker_binary inherits it).
  """
  import pwd  # pylint: disable=g-import-not-at-top
  try:
    entry = pwd.getpwnam(user)
  except KeyError:
    raise RuntimeError(f'--user={user}: no such user') from None
  if silo_dir:
    for path in (silo_dir, os.path.join(silo_dir, 'silo.json')):
      os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
  if log_path:
    with open(log_path, 'ab'):
      pass
    os.chown(log_path, entry.pw_uid, entry.pw_gid)
  os.setgroups([])
  os.setgid(entry.pw_gid)
  os.setuid(entry.pw_uid)
  if os.getuid() != entry.pw_uid or os.geteuid() != entry.pw_uid:
    raise RuntimeError(f'--user={user}: could not drop to uid {entry.pw_uid}')
  if silo_dir and not os.access(os.path.join(silo_dir, 'data'), os.R_OK):
    raise RuntimeError(f'--user={user} cannot read the client data')


def serve(listener: socket.socket, *, isolate: bool = True,
          tls: Optional[ssl.SSLContext] = None, log_path: Optional[str] = None,
          max_concurrent_computation_calls: int = -1,
          start_timeout: float = 60.0, ready_fd=None,
          silo_dir: Optional[str] = None, user: Optional[str] = None) -> int:
  """Runs a worker behind `listener` until a signal or the worker's exit.

  Must be called before this process starts any thread (`unshare` of a
  network namespace needs a single-threaded process). `silo_dir`: the
  worker's data (`silo.prepare`), its working directory. Returns the exit
  code: 0 after SIGINT/SIGTERM, the worker's own code (or 128 + signal) if
  it died.
  """
  if isolate:
    isolate_network()
  if user is not None:
    drop_privileges(user, silo_dir, log_path)
  if isolate:
    port = _INNER_PORT
  else:
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      port = s.getsockname()[1]
  import tempfile  # pylint: disable=g-import-not-at-top
  # Unisolated: the loopback-only bind, built as the user worker_binary runs
  # as (after the drop) so that it can load it; kept until it has.
  with (contextlib.nullcontext() if isolate else
        tempfile.TemporaryDirectory(prefix='tff-sparsify-bind-')) as build_dir:
    process = _start_worker_binary(
        port, log_path, max_concurrent_computation_calls, cwd=silo_dir or '/',
        preload=build_dir and build_loopback_bind(build_dir))
    try:
      _wait_for_port(port, process, start_timeout)
      if not isolate:
        check_loopback_only(process.pid)
    except BaseException:
      _end_worker_binary(process)
      raise
  try:
    return asyncio.run(_serve_async(listener, port, process, tls, ready_fd,
                                    log_path=log_path if tls else None))
  finally:
    _end_worker_binary(process)


def _end_worker_binary(process: subprocess.Popen):
  if process.poll() is None:
    process.terminate()  # worker_binary ignores SIGINT (measured: > 5 s).
    process.send_signal(signal.SIGCONT)  # A stopped worker gets SIGTERM now.
    try:
      process.wait(10)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


MAX_PENDING_HANDSHAKES = 16
HANDSHAKE_SECONDS = 10.0


class HandshakeLog:
  """One line per failed TLS handshake (peer, reason), at most one per peer per `interval` s."""

  def __init__(self, path: Optional[str] = None, interval: float = 10.0):
    self._path = path
    self._interval = interval
    self._last = {}

  def __call__(self, peer, reason: str):
    host = peer[0] if isinstance(peer, tuple) else str(peer)
    now = time.monotonic()
    if now - self._last.get(host, -self._interval) < self._interval:
      return
    self._last[host] = now
    if len(self._last) > 4096:  # Bounded, whatever the number of peers.
      self._last = {host: now}
    line = (f'{time.strftime("%Y-%m-%dT%H:%M:%S")} tff-sparsify-worker: TLS handshake '
            f'from {host} failed: {reason}\n')
    try:
      if self._path:
        with open(self._path, 'a') as f:
          f.write(line)
      else:
        sys.stderr.write(line)
        sys.stderr.flush()
    except OSError:
      pass


def _handshake_reason(error: BaseException) -> str:
  if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
    return f'no handshake within {HANDSHAKE_SECONDS:g} s'
  if isinstance(error, ssl.SSLError):
    return getattr(error, 'verify_message', None) or error.reason or str(error)
  return str(error) or type(error).__name__


async def _serve_async(listener, port, process, tls, ready_fd, log_path=None) -> int:
  loop = asyncio.get_running_loop()
  stop = loop.create_future()
  for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    loop.add_signal_handler(
        signum, lambda s=signum: stop.done() or stop.set_result(0))
  log = HandshakeLog(log_path)
  pending = 0

  async def handle(reader, writer):
    # The TLS handshake here, not in start_server: a failure is logged (peer,
    # reason), a handshake has a deadline, and at most MAX_PENDING_HANDSHAKES
    # unauthenticated connections are held at once.
    nonlocal pending
    if tls is not None:
      peer = writer.get_extra_info('peername')
      if pending >= MAX_PENDING_HANDSHAKES:
        log(peer, f'{MAX_PENDING_HANDSHAKES} handshakes already pending; connection closed')
        writer.close()
        return
      pending += 1
      try:
        await writer.start_tls(tls, ssl_handshake_timeout=HANDSHAKE_SECONDS)
      except (ssl.SSLError, OSError, asyncio.TimeoutError, ConnectionError) as e:
        log(peer, _handshake_reason(e))
        with contextlib.suppress(Exception):
          writer.close()
        return
      finally:
        pending -= 1
    await _relay(port, reader, writer)

  server = await asyncio.start_server(handle, sock=listener)
  if ready_fd is not None:
    print(READY_LINE, file=ready_fd, flush=True)

  async def watch_worker():
    while process.poll() is None:
      await asyncio.sleep(0.1)
    code = process.returncode
    if not stop.done():
      stop.set_result(code if code >= 0 else 128 - code)

  watcher = asyncio.ensure_future(watch_worker())
  try:
    return await stop
  finally:
    watcher.cancel()
    server.close()


COORDINATOR_DIR = 'coordinator'
EXPIRY_WARNING_DAYS = 30


def worker_dir(host: str) -> str:
  """The subdirectory of `--make_credentials` output for the worker `host`."""
  return f'worker-{host}'


class CredentialsError(ValueError):
  """Credentials that must not be used; the message says why."""


def _create_file(path: str, data: bytes, mode: int):
  """A new file (never an existing one, never through a link), mode set at creation."""
  fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
  with os.fdopen(fd, 'wb') as f:
    os.fchmod(f.fileno(), mode)  # Whatever the umask.
    f.write(data)


def _x509_name(common_name: str):
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  from cryptography.x509.oid import NameOID  # pylint: disable=g-import-not-at-top
  return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(**kwargs):
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  fields = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False)
  fields.update(kwargs)
  return x509.KeyUsage(**fields)


def _certificate(subject: str, issuer: str, key, days: int):
  """A certificate builder for `subject`'s `key`, valid from 5 minutes ago for `days` days."""
  import datetime  # pylint: disable=g-import-not-at-top
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  now = datetime.datetime.now(datetime.timezone.utc)
  return (x509.CertificateBuilder().subject_name(_x509_name(subject))
          .issuer_name(_x509_name(issuer)).public_key(key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days)))


_CA_NAME = 'tff-sparsify CA'


def _leaf(ca_key, subject: str, purpose, san, days: int) -> tuple[bytes, bytes]:
  """(certificate PEM, private key PEM) of a new P-256 key for `purpose`, signed by the CA."""
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import hashes  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import serialization  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=g-import-not-at-top
  key = ec.generate_private_key(ec.SECP256R1())
  cert = (_certificate(subject, _CA_NAME, key, days)
          .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
          .add_extension(_key_usage(digital_signature=True), True)
          .add_extension(x509.ExtendedKeyUsage([purpose]), False))
  if san:
    cert = cert.add_extension(x509.SubjectAlternativeName([san]), False)
  key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
  return cert.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), key_pem


def make_credentials(directory: str, hosts: list[str], days: int = 365):
  """Writes a new CA, one certificate per worker host and one for the coordinator.

  `directory` must not exist: it is created (mode 0700) with
  `coordinator/` (`ca.pem`, `coordinator.pem`, `coordinator.key`) and one
  `worker-<host>/` per host (`ca.pem`, `worker.pem` naming that host only,
  `worker.key`), every file created exclusively, not following links, with
  its mode set at creation (keys 0600). A silo's key therefore opens no
  other silo's name, and no worker directory holds the coordinator's key.
  The CA's private key is not kept (make new credentials to add a host).
  Raises FileExistsError if `directory` exists.
  """
  import ipaddress  # pylint: disable=g-import-not-at-top
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import hashes  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import serialization  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=g-import-not-at-top
  from cryptography.x509.oid import ExtendedKeyUsageOID  # pylint: disable=g-import-not-at-top

  ca_key = ec.generate_private_key(ec.SECP256R1())
  ca = (_certificate(_CA_NAME, _CA_NAME, ca_key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), True)
        .sign(ca_key, hashes.SHA256()))
  ca_pem = ca.public_bytes(serialization.Encoding.PEM)
  os.mkdir(directory, 0o700)  # FileExistsError: never into a directory made by someone else.
  os.chmod(directory, 0o700)
  outputs = [(COORDINATOR_DIR, CLIENT_CERT, CLIENT_KEY,
              _leaf(ca_key, 'tff-sparsify coordinator', ExtendedKeyUsageOID.CLIENT_AUTH, None,
                    days))]
  for host in hosts:
    try:
      san = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
      san = x509.DNSName(host)
    outputs.append((worker_dir(host), SERVER_CERT, SERVER_KEY,
                    _leaf(ca_key, f'tff-sparsify worker {host}', ExtendedKeyUsageOID.SERVER_AUTH,
                          san, days)))
  for subdir, cert_file, key_file, (cert_pem, key_pem) in outputs:
    path = os.path.join(directory, subdir)
    os.mkdir(path, 0o700)
    _create_file(os.path.join(path, CA_FILE), ca_pem, 0o644)
    _create_file(os.path.join(path, cert_file), cert_pem, 0o644)
    _create_file(os.path.join(path, key_file), key_pem, 0o600)


def check_credentials(directory: str, cert_file: str, key_file: str, *,
                      forbidden: tuple = ()) -> list[str]:
  """Checks a credentials directory before use; the warnings to print.

  Raises CredentialsError: a file missing, a key others can read or
  that is not a regular file of this user, a file of `forbidden` present
  (a worker holding the coordinator's key), a certificate expired or not
  yet valid. Returns a warning for a certificate expiring within
  EXPIRY_WARNING_DAYS days.
  """
  import datetime  # pylint: disable=g-import-not-at-top
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  for name in forbidden:
    if os.path.lexists(os.path.join(directory, name)):
      raise CredentialsError(
          f'{directory} holds {name}: a worker must not hold the coordinator\'s key (give '
          f'it only its own worker-<host> directory of --make_credentials)')
  for name in (CA_FILE, cert_file, key_file):
    if not os.path.isfile(os.path.join(directory, name)):
      raise CredentialsError(f'{directory} has no {name}')
  key_path = os.path.join(directory, key_file)
  info = os.lstat(key_path)
  if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
    raise CredentialsError(f'{key_path} must be a regular file owned by this user')
  if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
    raise CredentialsError(f'{key_path} is readable by others (mode '
                           f'{stat.S_IMODE(info.st_mode):o}): chmod 600 it, and make new '
                           'credentials if others may have read it')
  warnings = []
  now = datetime.datetime.now(datetime.timezone.utc)
  for name in (CA_FILE, cert_file):
    path = os.path.join(directory, name)
    try:
      with open(path, 'rb') as f:
        cert = x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as e:
      raise CredentialsError(f'{path}: not a PEM certificate ({e})') from None
    if cert.not_valid_after_utc < now:
      raise CredentialsError(f'{path} expired on {cert.not_valid_after_utc:%Y-%m-%d}: make new '
                             'credentials (tff-sparsify-worker --make_credentials)')
    if cert.not_valid_before_utc > now:
      raise CredentialsError(f'{path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}')
    left = cert.not_valid_after_utc - now
    if left < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
      warnings.append(f'{path} expires in {left.days} days ({cert.not_valid_after_utc:%Y-%m-%d}): '
                      'make new credentials before then')
  return warnings


def main(argv: Optional[list[str]] = None) -> int:
  """Internal entry for a coordinator's own local worker (Unix socket only)."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog='tff_sparsify.simulation.worker_processes')
  parser.add_argument('--unix_socket', required=True)
  parser.add_argument('--parent_pid', type=int)
  parser.add_argument('--log_file')
  parser.add_argument('--no_isolation', action='store_true')
  parser.add_argument('--max_concurrent_computation_calls', type=int, default=-1)
  parser.add_argument('--client_data')
  args = parser.parse_args(argv)
  die_with_parent(args.parent_pid)
  silo_dir = None
  try:
    if args.client_data:
      from tff_sparsify.simulation import silo  # pylint: disable=g-import-not-at-top
      try:
        silo_dir = silo.prepare(args.client_data)
      except (ValueError, OSError) as e:
        print(f'tff_sparsify.simulation.worker_processes: error: --client_data={args.client_data}: {e}',
              file=sys.stderr)
        return 2
    try:
      listener = unix_listener(args.unix_socket)
    except OSError as e:
      print(f'tff_sparsify.simulation.worker_processes: error: --unix_socket={args.unix_socket}: {e}',
            file=sys.stderr)
      return 2
    return serve(listener, isolate=not args.no_isolation,
                 log_path=args.log_file, ready_fd=sys.stdout, silo_dir=silo_dir,
                 max_concurrent_computation_calls=(
                     args.max_concurrent_computation_calls))
  except IsolationError as e:
    print(f'tff_sparsify.simulation.worker_processes: error: {e.strerror}', file=sys.stderr)
    return 3
  except RuntimeError as e:
    print(f'tff_sparsify.simulation.worker_processes: error: {e}', file=sys.stderr)
    return 1
  finally:
    with contextlib.suppress(OSError):
      os.unlink(args.unix_socket)
    if silo_dir:
      silo.remove(silo_dir)


if __name__ == '__main__':
  sys.exit(main())
