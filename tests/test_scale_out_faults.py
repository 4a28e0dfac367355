"""Issue 12 on real processes: lost workers, killed coordinators, remote hosts.

Local (a worker SIGKILLed mid-run is restarted, then the coordinator is
SIGKILLed and no worker outlives it, and the resumed run equals an
undisturbed one bit for bit): in `tests/test_faults.py`'s chain, which runs on
2 local workers. Here: where local workers get their namespace without root,
and the one-line refusal where none can be made.

Remote: two "silo hosts" are network namespaces joined to this one by veth
pairs (made here, removed after; root needed). `tff-sparsify-worker` serves
on each over mutual TLS, with its own half of the clients in a SQLite file on
a tmpfs mounted in the worker's own mount namespace: the coordinator has no
copy (its view of that directory is empty). A run across both equals the
run on 2 local workers over the union of the data within the stated bound;
a connection without the credentials is refused; a killed silo ends the run
with one line naming it within --worker_timeout_seconds, and the same
command resumes once it is back; a silo back with other clients is refused
in one line naming it.
"""

import os
import signal
import socket
import ssl
import subprocess
import shutil
import sys
import tempfile
import time

import grpc
import numpy as np
import psutil
import pytest
import tensorflow as tf

from tests import fixtures
from tests import test_scale_out
from tff_sparsify.simulation import worker_processes as worker_lib

ROUNDS = 3
HOSTS = (('tffso1', 'tffso1v', '10.231.1.1', '10.231.1.2'),
         ('tffso2', 'tffso2v', '10.231.2.1', '10.231.2.2'))
PORT = 8790


# Silos against local workers over the union: the same clients, summed in
# another order (each silo's clients together): README's bound
# (`test_scale_out.BOUND`).


def _argv(out, *extra):
  return [f'--root_output_dir={out}', '--experiment_name=exp',
          '--num_clients=4', '--clients_per_round=4', '--client_epochs_per_round=1',
          '--client_batch_size=16', '--seed=7', '--progress=false',
          f'--total_rounds={ROUNDS}', '--algorithm=fedsparsify_local',
          '--final_sparsity=0.8', *extra]


def _weights(out):
  with np.load(os.path.join(out, 'results', 'exp', 'final_weights.npz')) as f:
    return [f[k] for k in sorted(f.files, key=lambda k: int(k.split('_')[1]))]


def _checkpoints(out):
  ckpt = os.path.join(out, 'checkpoints', 'exp')
  if not os.path.isdir(ckpt):
    return set()
  return {int(n.split('_')[-1]) for n in os.listdir(ckpt)
          if n.startswith('program_state_') and n.split('_')[-1].isdigit()}


def _wait(predicate, proc, timeout, what):
  deadline = time.monotonic() + timeout
  while not predicate():
    if proc is not None and proc.poll() is not None:
      raise AssertionError(f'exited ({proc.returncode}) before {what}: '
                           f'{proc.stderr.read().decode()[-2000:]}')
    if time.monotonic() > deadline:
      raise AssertionError(f'no {what} after {timeout} s')
    time.sleep(0.05)


def _worker_binaries(pid):
  try:
    return [c for c in psutil.Process(pid).children(recursive=True)
            if c.name() == 'worker_binary']
  except psutil.NoSuchProcess:
    return []


@pytest.mark.skipif(os.geteuid() != 0, reason='network namespaces need root')
class RemoteWorkersTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.mkdtemp()
    for host in HOSTS:
      fixtures.add_host_namespace(*host)
    made = os.path.join(cls._tmp, 'creds')
    worker_lib.make_credentials(made, [h[3] for h in HOSTS])
    cls.creds = os.path.join(made, worker_lib.COORDINATOR_DIR)
    cls.worker_creds = [os.path.join(made, worker_lib.worker_dir(h[3])) for h in HOSTS]
    other = os.path.join(cls._tmp, 'other')
    worker_lib.make_credentials(other, [h[3] for h in HOSTS])
    cls.other_creds = os.path.join(other, worker_lib.COORDINATOR_DIR)
    # The union of the data (for the reference run) and each silo's half.
    from tff_sparsify.simulation.sources import writer  # pylint: disable=g-import-not-at-top
    data_dir = fixtures.write_fashion_mnist_like(os.path.join(cls._tmp, 'data'))
    clients = writer.fashion_mnist(partition='iid', num_clients=4, seed=7, data_dir=data_dir)
    cls.union = writer.write(clients, f'sqlite:{cls._tmp}/union.sqlite')
    cls.silo_files, cls.mounts = [], []
    for i, ids in enumerate((('client_0000', 'client_0001'), ('client_0002', 'client_0003'))):
      half = {split: {c: by_client[c] for c in ids} for split, by_client in clients.items()}
      cls.silo_files.append(writer.write(half, f'sqlite:{cls._tmp}/silo_{i}.sqlite'))
      cls.mounts.append(os.path.join(cls._tmp, f'silo_{i}_mount'))
      os.makedirs(cls.mounts[-1])
    cls.workers = {}
    for i in range(len(HOSTS)):
      cls._start(i)

  @classmethod
  def _start(cls, i, source=None):
    """Silo i: its data copied into a tmpfs that only its worker's mount namespace sees."""
    ns, _, _, ns_ip = HOSTS[i]
    script = ('src="$1" py="$2"; shift 2; mount -t tmpfs tmpfs "$0" && cp "$src" '
              '"$0/data.sqlite" && exec "$py" -m binaries.worker '
              '--client_data=sqlite:"$0"/data.sqlite "$@"')
    proc = subprocess.Popen(
        ['ip', 'netns', 'exec', ns, 'unshare', '--mount', '--propagation', 'private',
         'sh', '-c', script, cls.mounts[i], source or cls.silo_files[i], sys.executable,
         f'--host={ns_ip}', f'--port={PORT}', f'--credentials={cls.worker_creds[i]}'],
        cwd=fixtures.REPO, env=fixtures.subprocess_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line == worker_lib.READY_LINE, (line, proc.stderr.read())
    cls.workers[i] = proc

  @classmethod
  def tearDownClass(cls):
    for proc in cls.workers.values():
      proc.send_signal(signal.SIGINT)
      try:
        proc.wait(15)
      except subprocess.TimeoutExpired:
        proc.kill()
    for ns, veth, _, _ in HOSTS:
      fixtures.remove_host_namespace(ns, veth)
    shutil.rmtree(cls._tmp, ignore_errors=True)
    super().tearDownClass()

  def _addresses(self):
    return ','.join(f'{h[3]}:{PORT}' for h in HOSTS)

  def test_only_the_relay_listens_and_only_tls_with_a_known_certificate_gets_in(self):
    ns_ip = HOSTS[0][3]
    # worker_binary's own port: in its private namespace, unreachable.
    with socket.socket() as s:
      s.settimeout(2)
      self.assertNotEqual(s.connect_ex((ns_ip, 10000)), 0)
    # Plain gRPC (no TLS) to the worker's port: never ready.
    channel = grpc.insecure_channel(f'{ns_ip}:{PORT}')
    with self.assertRaises(grpc.FutureTimeoutError):
      grpc.channel_ready_future(channel).result(timeout=3)
    channel.close()
    # TLS that trusts the worker but shows no client certificate: refused.
    context = ssl.create_default_context(cafile=os.path.join(self.creds, 'ca.pem'))
    context.set_alpn_protocols(['h2'])
    with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
      with socket.create_connection((ns_ip, PORT), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=ns_ip) as tls:
          tls.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')
          if not tls.recv(1):
            raise ConnectionError('closed')
    # A client certificate from another CA: the coordinator cannot start.
    from tff_sparsify.simulation import execution  # pylint: disable=g-import-not-at-top
    with self.assertRaisesRegex(
        execution.WorkerStartError,
        f'^TFF worker at {ns_ip}:{PORT} not reachable over mutual TLS within 2 s: its '
        'certificate is refused: .+$'):
      with execution.worker_pool_context(workers=[f'{ns_ip}:{PORT}'],
                                         credentials_dir=self.other_creds,
                                         worker_timeout=2):
        pass

  def test_a_local_worker_is_reachable_from_no_other_host_or_user(self):
    from tff_sparsify.simulation import execution  # pylint: disable=g-import-not-at-top

    def attempt(prefix, code):
      return subprocess.run([*prefix, sys.executable, '-c', code], capture_output=True,
                            text=True, timeout=60, env=fixtures.subprocess_env())

    with execution.worker_pool_context(num_local_workers=1) as pool:
      path = pool.workers[0]._socket  # pylint: disable=protected-access
      unix = f'import socket; socket.socket(socket.AF_UNIX).connect({path!r})'
      self.assertEqual(attempt((), unix).returncode, 0)  # Its owner can.
      other_user = attempt(('setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'), unix)
      self.assertIn('PermissionError', other_user.stderr)
      # worker_binary serves on port 10000 of its own namespace, reachable
      # neither from this namespace nor from another "host".
      ns, _, host_ip, _ = HOSTS[0]
      for prefix, ip in (((), '127.0.0.1'), (('ip', 'netns', 'exec', ns), host_ip)):
        tcp = f'import socket; socket.create_connection(({ip!r}, 10000), timeout=3)'
        self.assertIn('ConnectionRefusedError', attempt(prefix, tcp).stderr, (prefix, ip))

  @pytest.mark.timeout(900)
  def test_silos_train_where_the_data_is_survive_a_lost_silo_and_refuse_changed_data(self):
    # The same clients on 2 local workers reading the union, beside.
    reference = self.create_tempdir().full_path
    reference_proc = fixtures.start_binary(
        'train', _argv(reference, f'--client_data=sqlite:{self.union}', '--num_local_workers=2'))
    out = self.create_tempdir().full_path
    argv = _argv(out, f'--workers={self._addresses()}', f'--worker_credentials={self.creds}',
                 '--worker_timeout_seconds=5')
    proc = fixtures.start_binary('train', argv)
    _wait(lambda: 1 in _checkpoints(out), proc, 240, 'checkpoint 1')
    # The silos' data: not in the coordinator's mount namespace.
    self.assertEqual([os.listdir(m) for m in self.mounts], [[], []])
    binaries = _worker_binaries(self.workers[1].pid)
    self.assertLen(binaries, 1)
    binaries[0].kill()
    killed = time.monotonic()
    _, err = proc.communicate(timeout=120)
    err = err.decode()
    self.assertLess(time.monotonic() - killed, 5 + 10)
    self.assertEqual(proc.returncode, 1, err)
    self.assertLen(err.strip().splitlines(), 1, err)
    self.assertRegex(err, rf'^train.py: error: TFF worker at {HOSTS[1][3]}:{PORT} (exited|has '
                          'not answered).*; run the same command to resume')
    self.workers[1].wait(10)  # The relay exits with its worker.
    # Back with other data (silo 0's clients): refused in one line naming it.
    self._start(1, source=self.silo_files[0])
    code, _, err = fixtures.run_binary_process('train', argv, timeout=300)
    self.assertEqual(code, 1, err)
    self.assertLen(err.strip().splitlines(), 1, err)
    self.assertRegex(err, rf'^train.py: error: (worker {HOSTS[1][3]}:{PORT} serves other '
                          'clients than when this run started|client .* is held by worker)')
    self.workers[1].send_signal(signal.SIGINT)
    self.workers[1].wait(15)
    self._start(1)
    code, _, err = fixtures.run_binary_process('train', argv, timeout=300)
    self.assertEqual(code, 0, err)
    self.assertEqual(_checkpoints(out) >= {1, 2, 3}, True)
    _, err = reference_proc.communicate(timeout=300)
    self.assertEqual(reference_proc.returncode, 0, err.decode()[-2000:])
    silo, local = _weights(out), _weights(reference)
    self.assertEqual([w.shape for w in silo], [w.shape for w in local])
    for a, b in zip(silo, local):
      test_scale_out.assert_within_bound(self, a, b)


if __name__ == '__main__':
  tf.test.main()
