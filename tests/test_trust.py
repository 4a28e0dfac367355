"""Issue 35: trust boundaries, each tried as the attacker or careless user of the issue.

- A worker (a gRPC server written here) answering with a dataset, a
  computation or an oversized value: refused naming it, before TFF
  deserializes anything (TFF's own deserialization of the same reply runs
  the worker's graph: the oracle that the attack is real).
- A `tff_sparsify` package planted in the working directory: the local
  workers' launcher does not import it.
- Two copies of one run: the second stops in one line naming the first's
  PID, the first's record is complete.
- An output directory other users can write: refused in one line.
- TLS below 1.3, a client certificate from another CA: refused, one line
  each in the worker's log, rate-limited per peer.
- An unisolated worker probed from another network namespace: refused
  (worker_binary as TFF starts it is reachable from there: the oracle).
"""

import concurrent.futures
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np
import psutil
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tests import fixtures
from tff_sparsify.simulation import execution
from tff_sparsify.simulation import worker_processes as worker_lib
from tensorflow_federated.proto.v0 import computation_pb2
from tensorflow_federated.proto.v0 import executor_pb2
from tensorflow_federated.proto.v0 import executor_pb2_grpc
from tensorflow_federated.python.core.impl.executors import value_serialization


class _Worker(executor_pb2_grpc.ExecutorGroupServicer):
  """Answers every Compute with `self.reply`."""

  reply = None

  def Compute(self, request, context):  # pylint: disable=invalid-name
    return executor_pb2.ComputeResponse(value=self.reply)


class MaliciousWorkerTest(tf.test.TestCase):

  CAP = 1 << 20

  def setUp(self):
    super().setUp()
    self.worker = _Worker()
    self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(2),
                              options=[('grpc.max_send_message_length', 1 << 30)])
    executor_pb2_grpc.add_ExecutorGroupServicer_to_server(self.worker, self.server)
    port = self.server.add_insecure_port('127.0.0.1:0')
    self.server.start()
    self.addCleanup(self.server.stop, None)
    channel = grpc.insecure_channel(f'127.0.0.1:{port}',
                                    execution._channel_options(self.CAP))  # pylint: disable=protected-access
    self.addCleanup(channel.close)
    self.stub = execution.DeadlineStub(channel, 'evil:1', timeout=20, max_reply_bytes=self.CAP)

  def _compute(self):
    return self.stub.compute(executor_pb2.ComputeRequest())

  def test_a_dataset_reply_is_refused_before_its_graph_can_run(self):
    target = os.path.join(self.create_tempdir().full_path, 'written_by_the_worker')

    def writing(path):
      def write(i):
        with tf.control_dependencies([tf.io.write_file(path, tf.strings.as_string(i))]):
          return tf.identity(i)
      return tf.data.Dataset.range(1).map(write)

    value, _ = value_serialization.serialize_value(writing(target), tff.SequenceType(tff.TensorType(np.int64)))
    # The oracle: TFF's deserialization of this reply runs the worker's graph.
    oracle_target = target + '_oracle'
    oracle, _ = value_serialization.serialize_value(writing(oracle_target),
                                                    tff.SequenceType(tff.TensorType(np.int64)))
    deserialized, _ = value_serialization.deserialize_value(oracle)
    list(deserialized)
    self.assertTrue(os.path.exists(oracle_target))
    for reply in (value, executor_pb2.Value(struct=executor_pb2.Value.Struct(element=[
        executor_pb2.Value.Struct.Element(value=executor_pb2.Value(
            federated=executor_pb2.Value.Federated(value=[value])))]))):
      self.worker.reply = reply
      with self.assertRaisesRegex(execution.WorkerReplyError,
                                  '^TFF worker at evil:1 sent a sequence value, which this '
                                  'package never requests: refused, nothing of it deserialized$'):
        self._compute()
    self.assertFalse(os.path.exists(target))

  def test_a_computation_reply_is_refused(self):
    self.worker.reply = executor_pb2.Value(computation=computation_pb2.Computation())
    with self.assertRaisesRegex(execution.WorkerReplyError, 'sent a computation value'):
      self._compute()

  def test_a_reply_over_the_cap_is_refused_and_one_under_it_passes(self):
    big, _ = value_serialization.serialize_value(
        np.zeros(self.CAP // 4 + 10, np.float32), tff.TensorType(np.float32, [self.CAP // 4 + 10]))
    self.worker.reply = big
    with self.assertRaisesRegex(execution.WorkerReplyError,
                                f'^TFF worker at evil:1 sent a reply over the {self.CAP} bytes '
                                'allowed: refused, nothing of it deserialized$'):
      self._compute()
    small, _ = value_serialization.serialize_value(np.ones(3, np.float32),
                                                   tff.TensorType(np.float32, [3]))
    self.worker.reply = small
    self.assertEqual(self._compute().value, small)


class LauncherTest(tf.test.TestCase):

  def test_a_package_planted_in_the_working_directory_is_not_imported(self):
    planted = self.create_tempdir().full_path
    marker = os.path.join(planted, 'imported')
    os.makedirs(os.path.join(planted, 'tff_sparsify', 'simulation'))
    for name in ('tff_sparsify/__init__.py', 'tff_sparsify/simulation/__init__.py',
                 'tff_sparsify/simulation/worker_processes.py'):
      with open(os.path.join(planted, name), 'w') as f:
        f.write(f'open({marker!r}, "w").write("planted")\n')
    cwd = os.getcwd()
    os.chdir(planted)
    try:
      with execution.worker_pool_context(num_local_workers=1):
        self.assertEqual(tff.tensorflow.computation(lambda: tf.constant(3))(), 3)
    finally:
      os.chdir(cwd)
    self.assertFalse(os.path.exists(marker))


def _argv(out, *extra):
  return [f'--root_output_dir={out}', '--experiment_name=exp', '--num_clients=3',
          '--clients_per_round=2', '--client_epochs_per_round=1', '--progress=false',
          '--seed=3', *extra]


class RunLockTest(tf.test.TestCase):

  def test_a_second_copy_of_a_run_stops_naming_the_first_which_finishes_intact(self):
    data_dir = fixtures.write_fashion_mnist_like(self.create_tempdir().full_path)
    out = self.create_tempdir().full_path
    argv = _argv(out, f'--data_dir={data_dir}', '--total_rounds=3')
    first = fixtures.start_binary('train', argv)
    lock = os.path.join(out, '.exp.lock')
    deadline = time.monotonic() + 120
    while not (os.path.exists(lock) and open(lock).read().strip()):
      self.assertIsNone(first.poll())
      self.assertLess(time.monotonic(), deadline)
      time.sleep(0.05)
    # Held still while the second copy starts (its checks take TF's import).
    os.kill(first.pid, signal.SIGSTOP)
    try:
      code, _, err = fixtures.run_binary_process('train', argv, timeout=120)
    finally:
      os.kill(first.pid, signal.SIGCONT)
    self.assertEqual(code, 2, err)
    self.assertEqual(err.strip(),
                     f"train.py: error: experiment 'exp' in {out} is being run by process "
                     f'{first.pid} (lock {lock}); wait for it to end, or give another '
                     '--experiment_name')
    _, err = first.communicate(timeout=300)
    self.assertEqual(first.returncode, 0, err.decode()[-2000:])
    with open(os.path.join(out, 'results', 'exp', 'metrics.csv')) as f:
      rounds = [line.split(',')[0] for line in f.read().splitlines()[1:]]
    self.assertEqual(rounds[-1], '3')
    # Released with the process (the kernel frees a flock): taken again at once.
    from tff_sparsify.simulation import run_record  # pylint: disable=g-import-not-at-top
    self.assertEqual(run_record.lock(out, 'exp'), lock)

  def test_an_output_directory_others_can_write_is_refused(self):
    out = self.create_tempdir().full_path
    os.chmod(out, 0o777)
    code, _, err = fixtures.run_binary_process('train', _argv(out, '--total_rounds=1'),
                                               timeout=60)
    self.assertEqual(code, 2, err)
    self.assertEqual(err.strip(), f'train.py: error: {out} is writable by other users (mode '
                                  '777): they could replace the run\'s checkpoints; use a '
                                  'directory only you can write (chmod go-w)')
    self.assertEqual(os.listdir(out), [])


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_worker(test, credentials, *extra):
  """`tff-sparsify-worker` on 127.0.0.1 (a free port), stopped at cleanup; its port."""
  port = _free_port()
  proc = subprocess.Popen(
      [sys.executable, '-m', 'binaries.worker', '--host=127.0.0.1', f'--port={port}',
       f'--credentials={credentials}', *extra], cwd=fixtures.REPO,
      env=fixtures.subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  test.addCleanup(proc.wait, 15)
  test.addCleanup(proc.terminate)
  test.assertEqual(proc.stdout.readline().strip(), worker_lib.READY_LINE)
  return port


def _handshake_lines(test, log):
  """The worker log's failed-handshake lines, once there is one (10 s at most)."""
  deadline = time.monotonic() + 10
  while not (os.path.exists(log) and 'TLS handshake' in open(log).read()):
    test.assertLess(time.monotonic(), deadline)
    time.sleep(0.05)
  return [l for l in open(log).read().splitlines() if 'TLS handshake' in l]


class TlsTest(tf.test.TestCase):

  def test_old_tls_and_foreign_certificates_are_refused_and_logged_once_per_peer(self):
    tmp = self.create_tempdir().full_path
    worker_lib.make_credentials(os.path.join(tmp, 'creds'), ['127.0.0.1'])
    worker_lib.make_credentials(os.path.join(tmp, 'foreign'), ['127.0.0.1'])
    creds = os.path.join(tmp, 'creds', worker_lib.COORDINATOR_DIR)
    foreign = os.path.join(tmp, 'foreign', worker_lib.COORDINATOR_DIR)
    worker_creds = os.path.join(tmp, 'creds', worker_lib.worker_dir('127.0.0.1'))
    log = os.path.join(tmp, 'worker.log')
    port = _start_worker(self, worker_creds, f'--log_file={log}')

    def handshake(max_version, directory):
      context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
      context.maximum_version = max_version
      context.load_verify_locations(os.path.join(creds, worker_lib.CA_FILE))
      context.load_cert_chain(os.path.join(directory, worker_lib.CLIENT_CERT),
                              os.path.join(directory, worker_lib.CLIENT_KEY))
      context.set_alpn_protocols(['h2'])
      with socket.create_connection(('127.0.0.1', port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname='127.0.0.1') as tls:
          tls.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')
          if not tls.recv(1):
            raise ConnectionError('closed')

    for _ in range(2):  # Twice: one line (rate-limited per peer).
      with self.assertRaises(ssl.SSLError):
        handshake(ssl.TLSVersion.TLSv1_2, creds)
    lines = _handshake_lines(self, log)
    self.assertLen(lines, 1)
    self.assertRegex(lines[0], r'tff-sparsify-worker: TLS handshake from 127\.0\.0\.1 failed: '
                               r'.*(VERSION|PROTOCOL)')
    # TLS 1.3 with the run's coordinator certificate works; another CA's does not.
    handshake(ssl.TLSVersion.TLSv1_3, creds)
    with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
      handshake(ssl.TLSVersion.TLSv1_3, foreign)


class MisnamedCertificateTest(tf.test.TestCase):

  def test_a_certificate_not_naming_the_host_is_named_by_the_coordinator_and_logged(self):
    tmp = self.create_tempdir().full_path
    worker_lib.make_credentials(os.path.join(tmp, 'creds'), ['10.9.9.9'])
    log = os.path.join(tmp, 'worker.log')
    port = _start_worker(self, f'{tmp}/creds/worker-10.9.9.9', f'--log_file={log}')
    with self.assertRaisesRegex(
        execution.WorkerStartError,
        rf'^TFF worker at 127\.0\.0\.1:{port} not reachable over mutual TLS within 3 s: its '
        r"certificate is refused: IP address mismatch, certificate is not valid for '127\.0\.0\.1'"):
      with execution.worker_pool_context(workers=[f'127.0.0.1:{port}'], start_timeout=3,
                                         credentials_dir=f'{tmp}/creds/coordinator'):
        pass
    self.assertRegex(_handshake_lines(self, log)[0],
                     r'TLS handshake from 127\.0\.0\.1 failed: \S+')


def _listening_ports(pid):
  return [c.laddr.port for c in psutil.Process(pid).net_connections(kind='tcp')
          if c.status == psutil.CONN_LISTEN]


@pytest.mark.skipif(os.geteuid() != 0, reason='network namespaces need root')
class UnisolatedWorkerTest(tf.test.TestCase):
  """--allow_unisolated_workers: worker_binary in this namespace, on loopback only."""

  def setUp(self):
    super().setUp()
    # Another "host": a namespace joined to this one by a veth pair.
    self.ns, veth, self.host_ip = 'tffs-trust-probe', 'tffsprobe0', '10.231.7.1'
    self.addCleanup(fixtures.remove_host_namespace, self.ns, veth)
    fixtures.add_host_namespace(self.ns, veth, self.host_ip, '10.231.7.2')

  def _reachable_from_the_other_host(self, port):
    code = f'import socket; socket.create_connection(({self.host_ip!r}, {port}), timeout=3)'
    result = subprocess.run(['ip', 'netns', 'exec', self.ns, sys.executable, '-c', code],
                            capture_output=True, text=True, timeout=60)
    self.assertTrue(result.returncode == 0 or 'ConnectionRefusedError' in result.stderr,
                    result.stderr)
    return result.returncode == 0

  def test_an_unisolated_worker_is_not_reachable_from_another_host(self):
    # The oracle: worker_binary as TFF starts it (`--port` only) is.
    port = _free_port()
    plain = subprocess.Popen([worker_lib.worker_binary_path(), f'--port={port}'],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    self.addCleanup(plain.wait, 15)
    self.addCleanup(plain.kill)
    worker_lib._wait_for_port(port, plain, 60)  # pylint: disable=protected-access
    self.assertTrue(self._reachable_from_the_other_host(port))
    with self.assertRaisesRegex(RuntimeError, rf'^worker_binary listens on :: port {port}, '
                                'beyond loopback; refusing to serve$'):
      worker_lib.check_loopback_only(plain.pid)

    @tff.tensorflow.computation(np.int32)
    def add_one(x):
      return x + 1

    with execution.worker_pool_context(num_local_workers=1,
                                       allow_unisolated_workers=True) as pool:
      self.assertEqual(add_one(41), 42)
      process = pool.workers[0].process
      binaries = [c for c in psutil.Process(process.pid).children(recursive=True)
                  if c.name() == 'worker_binary']
      self.assertLen(binaries, 1)
      # In this host's namespace (not isolated), on one port...
      self.assertEqual(os.readlink(f'/proc/{binaries[0].pid}/ns/net'),
                       os.readlink('/proc/self/ns/net'))
      [port] = _listening_ports(binaries[0].pid)
      with socket.create_connection(('127.0.0.1', port), timeout=3):
        pass  # ...which loopback reaches,
      self.assertFalse(self._reachable_from_the_other_host(port))  # another host not.

  def test_without_a_compiler_an_unisolated_worker_is_refused_in_one_line(self):
    directory = tempfile.mkdtemp()  # Owner-only, and short enough for AF_UNIX.
    self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    sock = os.path.join(directory, 'w.sock')
    result = subprocess.run(
        [sys.executable, '-P', '-m', 'tff_sparsify.simulation.worker_processes', f'--unix_socket={sock}',
         '--no_isolation'], cwd=fixtures.REPO, env=dict(fixtures.subprocess_env(), CC='false'),
        capture_output=True, text=True, timeout=60)
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertRegex(result.stderr.strip(),
                     r'^tff_sparsify.simulation.worker_processes: error: could not build the '
                     r'loopback-only bind for an unisolated worker \(false: no output\)$')
    self.assertEqual(result.stdout, '')  # Never ready.


class PrivilegeDropTest(tf.test.TestCase):

  def test_a_graph_sent_to_a_worker_run_with_user_writes_only_where_that_user_can(self):
    if os.geteuid() != 0:
      self.skipTest('--user needs root')
    tmp = self.create_tempdir().full_path
    worker_lib.make_credentials(os.path.join(tmp, 'creds'), ['127.0.0.1'])
    port = _start_worker(self, f'{tmp}/creds/worker-127.0.0.1', '--user=nobody')
    private = os.path.join(tmp, 'root_only')
    os.mkdir(private, 0o700)
    shared = os.path.join(tmp, 'anyone')
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    os.chmod(tmp, 0o755)

    def writer(path):
      @tff.tensorflow.computation
      def write():
        with tf.control_dependencies([tf.io.write_file(path, 'from the coordinator')]):
          return tf.constant(1)
      return write

    with execution.worker_pool_context(workers=[f'127.0.0.1:{port}'],
                                       credentials_dir=f'{tmp}/creds/coordinator'):
      self.assertEqual(writer(os.path.join(shared, 'x'))(), 1)  # The graph runs...
      with self.assertRaises(Exception):  # ... as nobody.
        writer(os.path.join(private, 'x'))()
    self.assertEqual(os.stat(os.path.join(shared, 'x')).st_uid, 65534)
    self.assertFalse(os.path.exists(os.path.join(private, 'x')))


class OutputTreeTest(tf.test.TestCase):
  """The output tree is the coordinator's, but what is in it is checked before use."""

  def test_a_checkpoint_replaced_by_another_runs_is_not_loaded_and_the_run_ends_as_itself(self):
    data_dir = fixtures.write_fashion_mnist_like(self.create_tempdir().full_path)
    ours, theirs = self.create_tempdir().full_path, self.create_tempdir().full_path
    argv = _argv(ours, f'--data_dir={data_dir}', '--total_rounds=2')
    procs = [fixtures.start_binary('train', argv),
             fixtures.start_binary('train', _argv(theirs, f'--data_dir={data_dir}',
                                                  '--total_rounds=2', '--seed=4'))]
    for proc in procs:
      _, err = proc.communicate(timeout=300)
      self.assertEqual(proc.returncode, 0, err.decode()[-2000:])
    with np.load(os.path.join(ours, 'results', 'exp', 'final_weights.npz')) as f:
      expected = [f[k] for k in sorted(f.files)]
    target = os.path.join(ours, 'checkpoints', 'exp', 'program_state_2')
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(target)
    shutil.copytree(os.path.join(theirs, 'checkpoints', 'exp', 'program_state_2'), target)
    code, _, err = fixtures.run_binary_process('train', argv, timeout=300)
    self.assertEqual(code, 0, err)
    lines = err.strip().splitlines()
    self.assertRegex(lines[0], r'^checkpoint .*program_state_2 does not match the digest this '
                               r'run recorded \(replaced or corrupted\); not loaded$')
    self.assertRegex(lines[1], r'^checkpoint .*program_state_2 set aside as .*damaged; '
                               r'resuming from .*program_state_1 \(round 1\)$')
    with np.load(os.path.join(ours, 'results', 'exp', 'final_weights.npz')) as f:
      found = [f[k] for k in sorted(f.files)]
    for a, b in zip(found, expected):
      np.testing.assert_array_equal(a, b)

  def test_a_symbolic_link_in_the_output_tree_is_refused(self):
    out = self.create_tempdir().full_path
    elsewhere = self.create_tempdir().full_path
    os.makedirs(os.path.join(out, 'results', 'exp'))
    os.symlink(elsewhere, os.path.join(out, 'results', 'exp', 'logs'))
    code, _, err = fixtures.run_binary_process('train', _argv(out, '--total_rounds=1'),
                                               timeout=60)
    self.assertEqual(code, 2, err)
    self.assertEqual(err.strip(), f'train.py: error: {out}/results/exp/logs is a symbolic link: '
                                  'writes of the run could land elsewhere; remove it (or pass '
                                  '--overwrite to start afresh)')
    self.assertEqual(os.listdir(elsewhere), [])


class CredentialsTest(tf.test.TestCase):

  def _worker(self, credentials):
    return subprocess.run(
        [sys.executable, '-m', 'binaries.worker', '--host=127.0.0.1', f'--port={_free_port()}',
         f'--credentials={credentials}'], cwd=fixtures.REPO, env=fixtures.subprocess_env(),
        capture_output=True, text=True, timeout=60)

  def test_credentials_go_to_a_new_directory_only(self):
    planted = os.path.join(self.create_tempdir().full_path, 'creds')
    os.chmod(os.path.dirname(planted), 0o777)
    # Another user makes the directory first (and could read or swap what lands in it).
    subprocess.run(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups',
                    'mkdir', '-m', '777', planted], check=True)
    result = subprocess.run(
        [sys.executable, '-m', 'binaries.worker', f'--make_credentials={planted}',
         '--hosts=10.0.0.2'], cwd=fixtures.REPO, env=fixtures.subprocess_env(),
        capture_output=True, text=True, timeout=60)
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertEqual(result.stderr.strip(),
                     f"worker.py: error: --make_credentials='{planted}': exists: credentials "
                     'go to a new directory only (one made by someone else could be read or '
                     'swapped)')
    self.assertEqual(os.listdir(planted), [])

  def test_one_certificate_per_worker_host_and_the_coordinators_key_apart(self):
    from cryptography import x509  # pylint: disable=g-import-not-at-top
    made = os.path.join(self.create_tempdir().full_path, 'creds')
    worker_lib.make_credentials(made, ['10.0.0.2', 'silo-b.example'])
    self.assertCountEqual(os.listdir(made),
                          ['coordinator', 'worker-10.0.0.2', 'worker-silo-b.example'])
    names = []
    for host in ('10.0.0.2', 'silo-b.example'):
      directory = os.path.join(made, worker_lib.worker_dir(host))
      self.assertCountEqual(os.listdir(directory), ['ca.pem', 'worker.pem', 'worker.key'])
      self.assertEqual(os.stat(os.path.join(directory, 'worker.key')).st_mode & 0o777, 0o600)
      with open(os.path.join(directory, 'worker.pem'), 'rb') as f:
        cert = x509.load_pem_x509_certificate(f.read())
      names.append([str(n.value) for n in cert.extensions.get_extension_for_class(
          x509.SubjectAlternativeName).value])
      self.assertTrue(cert.extensions.get_extension_for_class(x509.KeyUsage).value
                      .digital_signature)
    self.assertEqual(names, [['10.0.0.2'], ['silo-b.example']])
    with open(os.path.join(made, 'coordinator', 'ca.pem'), 'rb') as f:
      ca = x509.load_pem_x509_certificate(f.read())
    self.assertTrue(ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign)
    # Expiring soon: a warning; expired: refused, named.
    soon = os.path.join(self.create_tempdir().full_path, 'soon')
    worker_lib.make_credentials(soon, ['10.0.0.2'], days=10)
    warnings = worker_lib.check_credentials(os.path.join(soon, 'coordinator'),
                                            worker_lib.CLIENT_CERT, worker_lib.CLIENT_KEY)
    self.assertLen(warnings, 2)
    self.assertRegex(warnings[0], r'ca\.pem expires in 9 days')
    expired = os.path.join(self.create_tempdir().full_path, 'expired')
    worker_lib.make_credentials(expired, ['10.0.0.2'], days=0)
    result = self._worker(os.path.join(expired, 'worker-10.0.0.2'))
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertRegex(result.stderr.strip(), r"^worker.py: error: --credentials='.*': .*ca\.pem "
                                            r'expired on \d{4}-\d\d-\d\d: make new credentials')

  def test_a_worker_refuses_the_coordinators_key_and_keys_others_can_read(self):
    made = os.path.join(self.create_tempdir().full_path, 'creds')
    worker_lib.make_credentials(made, ['127.0.0.1'])
    flat = os.path.join(made, 'worker-127.0.0.1')
    with open(os.path.join(made, 'coordinator', 'coordinator.key'), 'rb') as f:
      key = f.read()
    leaked = os.path.join(flat, 'coordinator.key')
    with open(leaked, 'wb') as f:
      f.write(key)
    result = self._worker(flat)
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertEqual(result.stderr.strip(), f"worker.py: error: --credentials='{flat}': {flat} "
                     'holds coordinator.key: a worker must not hold the coordinator\'s key '
                     '(give it only its own worker-<host> directory of --make_credentials)')
    os.remove(leaked)
    os.chmod(os.path.join(flat, 'worker.key'), 0o644)
    result = self._worker(flat)
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertRegex(result.stderr.strip(), r'worker\.key is readable by others \(mode 644\)')


if __name__ == '__main__':
  tf.test.main()
