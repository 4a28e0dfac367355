"""Tests for tff_sparsify.execution: the owned TFF worker."""

import os

import numpy as np
import psutil
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import execution


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
    with self.assertRaisesRegex(Exception, 'context'):
      _mean([1.0])

  def test_worker_in_its_own_session(self):
    with execution.local_cpp_execution_context() as worker:
      self.assertEqual(psutil.Process(worker.pid).ppid(), psutil.Process().pid)
      self.assertNotEqual(os.getpgid(worker.pid), os.getpgid(0))
