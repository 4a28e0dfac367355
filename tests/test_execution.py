"""Tests for tff_sparsify.simulation.execution: the owned TFF worker."""

import os
import subprocess
import time

import numpy as np
import psutil
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.executors import executors_errors

from tff_sparsify.simulation import execution


@tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
def _mean(values):
  return tff.federated_mean(values)


class LocalCppExecutionContextTest(tf.test.TestCase):

  def test_runs_computation_and_stops_worker(self):
    with execution.local_cpp_execution_context() as worker:
      self.assertTrue(psutil.pid_exists(worker.pid))
      self.assertAllClose(_mean([1.0, 2.0, 6.0]), 3.0)
    self.assertIsNotNone(worker.poll())
    self.assertNotIn(worker, execution._live_workers)  # pylint: disable=protected-access

  def test_exception_inside_stops_worker(self):
    with self.assertRaisesRegex(RuntimeError, 'boom'):
      with execution.local_cpp_execution_context() as worker:
        _mean([1.0])
        raise RuntimeError('boom')
    self.assertIsNotNone(worker.poll())

  def test_no_default_context_outside(self):
    with self.assertRaisesRegex(RuntimeError, '^No default context installed'):
      _mean([1.0])

  def test_worker_in_its_own_session(self):
    with execution.local_cpp_execution_context() as worker:
      self.assertEqual(psutil.Process(worker.pid).ppid(), psutil.Process().pid)
      self.assertNotEqual(os.getpgid(worker.pid), os.getpgid(0))


class _FailingStub:
  """Raises TFF's retryable gRPC error from every call, like a dead worker's channel."""

  def __init__(self):
    self.calls = 0

  def compute(self, request):
    del request
    self.calls += 1
    raise executors_errors.RetryableError('UNAVAILABLE')


class DeadlineStubTest(tf.test.TestCase):

  def test_retryable_until_the_timeout_then_worker_lost(self):
    stub = execution.DeadlineStub(None, 'host:1', timeout=0.2, inner=_FailingStub())
    with self.assertRaises(executors_errors.RetryableError):
      stub.compute(None)  # TFF retries this one.
    time.sleep(0.25)
    with self.assertRaisesRegex(execution.WorkerLostError,
                                r'TFF worker at host:1 has not answered for 0 s \(timeout 0.2 s\)'):
      stub.compute(None)

  def test_exited_local_worker_is_lost_at_once(self):
    process = subprocess.Popen(['true'])
    process.wait()
    stub = execution.DeadlineStub(None, 'localhost:2', timeout=100, process=process,
                                  inner=_FailingStub())
    with self.assertRaisesRegex(execution.WorkerLostError,
                                'TFF worker at localhost:2 exited with code 0'):
      stub.compute(None)

  def test_a_success_resets_the_clock(self):
    inner = _FailingStub()
    stub = execution.DeadlineStub(None, 'h:3', timeout=0.2, inner=inner)
    with self.assertRaises(executors_errors.RetryableError):
      stub.compute(None)
    inner.compute = lambda request: 'ok'
    time.sleep(0.25)
    self.assertEqual(stub.compute(None), 'ok')
    inner.compute = _FailingStub().compute
    with self.assertRaises(executors_errors.RetryableError):
      stub.compute(None)  # A new failure starts a new window.


class StoppedWorkerTest(tf.test.TestCase):
  """A worker that stops answering (SIGSTOP: alive, connected, silent)."""

  def _stop_worker_binary(self, pool):
    launcher = psutil.Process(pool.workers[0].process.pid)
    worker = [c for c in launcher.children() if c.name() == 'worker_binary'][0]
    worker.suspend()
    return worker

  def test_is_lost_within_the_timeout(self):
    with execution.worker_pool_context(worker_timeout=2, max_restarts=0) as pool:
      self.assertAllClose(_mean([1.0, 3.0]), 2.0)
      worker = self._stop_worker_binary(pool)
      start = time.monotonic()
      with self.assertRaisesRegex(execution.WorkerLostError,
                                  r'TFF worker at local-worker-0 has not answered for \d s'):
        _mean([1.0, 5.0])
      self.assertLess(time.monotonic() - start, 2.5)
      worker.kill()

  def test_local_worker_is_restarted_and_the_computation_run_again(self):
    messages = []
    with execution.worker_pool_context(worker_timeout=2, log=messages.append) as pool:
      first = pool.workers[0].process
      self._stop_worker_binary(pool)
      self.assertAllClose(_mean([1.0, 5.0]), 3.0)
      self.assertEqual(pool.restarts, 1)
      self.assertIsNotNone(first.poll())
      self.assertNotEqual(pool.workers[0].process.pid, first.pid)
    self.assertLen(messages, 1)
    self.assertRegex(messages[0], 'restarting it and running the computation again')
