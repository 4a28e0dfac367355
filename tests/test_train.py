"""Tests for binaries/train.py: smoke, bad flags, crash safety, no orphans."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from absl.testing import parameterized
import numpy as np
import psutil
import tensorflow as tf

from tff_sparsify.binaries import export as export_binary
from tff_sparsify.binaries import flag_utils
from tff_sparsify.binaries import train
from tests import fixtures
from tff_sparsify import signals
from tff_sparsify.simulation import execution

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = dict(
    dataset='fashion_mnist', partition='non_iid', classes_per_client=2,
    num_clients=4, clients_per_round=3, client_epochs_per_round=1,
    client_batch_size=16, client_learning_rate=0.05, seed=7, progress=False,
)


def _argv(data_dir, out_dir, **overrides):
  values = dict(TINY_FLAGS, data_dir=data_dir, root_output_dir=out_dir,
                experiment_name='exp', total_rounds=2)
  values.update(overrides)
  return ['train'] + [f'--{k}={v}' for k, v in values.items()]


def _run_in_process(argv):
  """Runs the training binary in process; returns (exit code, stderr)."""
  code, _, err = fixtures.run_binary(train, argv[1:])
  return code, err


class TrainInProcessTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = fixtures.write_fashion_mnist_like(
        os.path.join(tf.compat.v1.test.get_temp_dir(), 'fmnist'))

  def test_two_rounds_write_outputs_and_resume_is_a_no_op(self):
    out = self.create_tempdir().full_path
    code, _ = _run_in_process(_argv(self.data_dir, out))
    self.assertIn(code, (0, None))
    results = os.path.join(out, 'results', 'exp')
    with open(os.path.join(results, 'metrics.csv')) as f:
      rows = list(csv.DictReader(f))
    self.assertEqual([r['round_num'] for r in rows], ['0', '1', '2'])
    self.assertGreater(float(rows[2]['evaluation/accuracy']), 0.0)
    self.assertNotEmpty(rows[2]['client_work/train/loss'])
    with open(os.path.join(results, 'summary.json')) as f:
      summary = json.load(f)
    self.assertEqual(summary['total_rounds'], 2)
    self.assertTrue(os.path.isdir(os.path.join(out, 'checkpoints', 'exp', 'program_state_2')))
    self.assertNotEmpty(os.listdir(os.path.join(out, 'logdir', 'exp')))
    with open(os.path.join(results, 'config.json')) as f:
      self.assertEqual(json.load(f)['num_clients'], 4)
    # Same command again: already at total_rounds, so no round runs: the
    # metrics and checkpoints are not rewritten, the summary is the same.
    def written():
      return {path: os.stat(path).st_mtime_ns for path in
              [os.path.join(results, 'metrics.csv')] + [
                  os.path.join(root, name) for root, _, names in
                  os.walk(os.path.join(out, 'checkpoints')) for name in names]}
    before = written()
    code, _ = _run_in_process(_argv(self.data_dir, out))
    self.assertIn(code, (0, None))
    self.assertEqual(written(), before)
    with open(os.path.join(results, 'summary.json')) as f:
      self.assertEqual(json.load(f), summary)

  def test_evaluation_and_checkpoint_periods(self):
    out = self.create_tempdir().full_path
    code, _ = _run_in_process(_argv(self.data_dir, out, total_rounds=3, rounds_per_eval=2,
                                    rounds_per_checkpoint=2))
    self.assertIn(code, (0, None))
    results = os.path.join(out, 'results', 'exp')
    with open(os.path.join(results, 'metrics.csv')) as f:
      rows = {row['round_num']: row for row in csv.DictReader(f)}
    self.assertEqual(sorted(rows), ['0', '1', '2', '3'])
    evaluated = [r for r in sorted(rows) if rows[r].get('evaluation/accuracy')]
    self.assertEqual(evaluated, ['0', '2'])  # Every 2 rounds (and the initial model).
    self.assertEqual(sorted(os.listdir(os.path.join(out, 'checkpoints', 'exp'))),
                     ['digests.json', 'program_state_0', 'program_state_2'])
    with open(os.path.join(out, 'checkpoints', 'exp', 'digests.json')) as f:
      self.assertEqual(sorted(json.load(f)), ['0', '2'])  # The digest of each one kept.
    # The last round is evaluated all the same: the summary is the saved
    # final model's accuracy on the test set.
    with open(os.path.join(results, 'summary.json')) as f:
      summary = json.load(f)
    images, labels = fixtures.read_test_set(self.data_dir)
    model = tf.keras.models.load_model(os.path.join(results, 'final_model.keras'))
    predicted = np.argmax(model.predict(images.astype(np.float32) / 255.0, verbose=0), axis=1)
    self.assertAlmostEqual(summary['test_accuracy'], float(np.mean(predicted == labels)), places=6)

  def test_fedsparsify_writes_sparsity_and_a_stripped_model(self):
    out = self.create_tempdir().full_path
    code, _ = _run_in_process(_argv(
        self.data_dir, out, algorithm='fedsparsify_global', final_sparsity=0.8,
        total_rounds=3))
    self.assertIn(code, (0, None))
    results = os.path.join(out, 'results', 'exp')
    with open(os.path.join(results, 'metrics.csv')) as f:
      rows = list(csv.DictReader(f))
    # Eq. 1 with S_T=0.8, T=3: s_1 = 0, s_2 = 0.8 - 0.8 / 8 = 0.7, s_3 = 0.8.
    for row, target in zip(rows[1:], (0.0, 0.7, 0.8)):
      self.assertAlmostEqual(float(row['finalizer/target_sparsity']), target, places=6)
      self.assertAlmostEqual(float(row['finalizer/sparsity']), target, places=4)
      self.assertGreater(float(row['client_work/communication/transmission_mbits']), 0)
    with open(os.path.join(results, 'summary.json')) as f:
      summary = json.load(f)
    self.assertAlmostEqual(summary['sparsity'], 0.8, places=4)
    model = tf.keras.models.load_model(os.path.join(results, 'final_model.keras'))
    kernels = [layer.kernel.numpy() for layer in model.layers if hasattr(layer, 'kernel')]
    self.assertLen(kernels, 3)  # Plain Dense layers: the wrappers are stripped.
    zeros = sum(int((k == 0).sum()) for k in kernels)
    self.assertEqual(zeros, round(0.8 * sum(k.size for k in kernels)))
    self.assertEqual(summary['nonzero_params'],
                     sum(int((w != 0).sum()) for w in model.get_weights()))
    # The experiment's checkpoint directory exports its latest version, the
    # last round's model.
    code, _, err = fixtures.run_binary(export_binary, [
        f'--checkpoint={os.path.join(out, "checkpoints", "exp")}'])
    self.assertEqual(code, 0, err)
    with open(os.path.join(results, 'export_latest', 'export_report.json')) as f:
      report = json.load(f)
    self.assertEqual(report['nonzero_params'], summary['nonzero_params'])
    # An experiment that never checkpointed: one line, nothing written.
    other = self.create_tempdir().full_path
    os.makedirs(os.path.join(other, 'checkpoints', 'exp'))
    os.makedirs(os.path.join(other, 'results', 'exp'))
    shutil.copy(os.path.join(results, 'config.json'), os.path.join(other, 'results', 'exp'))
    code, _, err = fixtures.run_binary(export_binary, [
        f'--checkpoint={os.path.join(other, "checkpoints", "exp")}'])
    self.assertEqual(code, flag_utils.USAGE_EXIT_CODE)
    self.assertRegex(err, r"no program_state_N in '.*checkpoints/exp': the run has not "
                     'checkpointed')
    self.assertLen(err.strip().splitlines(), 1, err)
    self.assertEqual(os.listdir(os.path.join(other, 'results', 'exp')), ['config.json'])


def _start(argv, **kwargs):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.Popen(
      [sys.executable, '-m', 'binaries.train'] + argv[1:], cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _assert_gone(test, pids, timeout=10.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    alive = [p for p in pids if psutil.pid_exists(p)
             and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    if not alive:
      return
    time.sleep(0.1)
  test.fail(f'worker_binary processes left behind: {alive}')


def _summary(out):
  with open(os.path.join(out, 'results', 'exp', 'summary.json')) as f:
    return json.load(f)


def _final_weights(out):
  with np.load(os.path.join(out, 'results', 'exp', 'final_weights.npz')) as f:
    return [f[k] for k in sorted(f.files, key=lambda k: int(k.split('_')[1]))]


class SignalExitTest(tf.test.TestCase, parameterized.TestCase):
  """A signal's exception that TF turned into another one still exits as the signal."""

  @parameterized.parameters((signal.SIGINT, 130), (signal.SIGTERM, 143), (None, None))
  def test_exception_after_signal(self, signum, code):
    def main(argv):
      del argv
      raise TypeError('Expected `context` argument in EagerTensor constructor')

    saved, saved_argv = signals._pending_signal, sys.argv
    signals._pending_signal = signum
    sys.argv = ['train']
    try:
      if signum is None:  # No signal: the exception is the program's own.
        with self.assertRaises(TypeError):
          flag_utils.run_main(main)
      else:
        with self.assertRaises(SystemExit) as caught:
          flag_utils.run_main(main)
        self.assertEqual(caught.exception.code, code)
    finally:
      signals._pending_signal, sys.argv = saved, saved_argv


class TrainProcessTest(tf.test.TestCase):
  """Real processes: signals, SIGKILL and resume, pipes that must close."""

  ROUNDS = 8

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = fixtures.write_fashion_mnist_like(
        os.path.join(tf.compat.v1.test.get_temp_dir(), 'fmnist_proc'))

  def _argv(self, out, **overrides):
    # FedSparsify-Local: its state (masks, both round counters) must resume.
    return _argv(self.data_dir, out, total_rounds=self.ROUNDS,
                 algorithm='fedsparsify_local', final_sparsity=0.8, **overrides)

  def test_sigterm_and_sigint_leave_no_worker(self):
    # Both runs at once (TF's start-up is mostly one core); each is signalled
    # as soon as its first checkpoint is written.
    pending = []
    for signum, code, num_workers in (
        (signal.SIGTERM, 128 + signal.SIGTERM, 1),
        (signal.SIGINT, flag_utils.INTERRUPTED_EXIT_CODE, 2)):
      out = self.create_tempdir().full_path
      pending.append((signum, code, num_workers, out,
                      _start(self._argv(out, num_local_workers=num_workers))))
    done = []
    # Generous: the serial files run two at a time (Makefile) on a shared machine.
    deadline = time.monotonic() + 300
    while pending and time.monotonic() < deadline:
      for run in list(pending):
        signum, code, num_workers, out, proc = run
        workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)
                   if c.name() == 'worker_binary']
        if os.path.isdir(os.path.join(out, 'checkpoints', 'exp', 'program_state_1')) and (
            len(workers) == num_workers):
          proc.send_signal(signum)
          pending.remove(run)
          done.append((code, proc, workers))
      time.sleep(0.05)
    self.assertEmpty(pending, 'a run did not reach its first checkpoint in time')
    for code, proc, workers in done:
      _, stderr = proc.communicate(timeout=120)
      self.assertEqual(proc.returncode, code, stderr.decode()[-2000:])
      _assert_gone(self, workers)
