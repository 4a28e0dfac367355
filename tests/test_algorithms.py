"""Tests for tff_sparsify.algorithms: the baselines on TFF."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tff_sparsify import algorithms
from tff_sparsify import comm
from tff_sparsify import execution
from tff_sparsify import schedules


def _client_datasets(num_clients=2, n=8, seed=0):
  rng = np.random.default_rng(seed)
  return [
      tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
          x=rng.random((n, 28, 28), dtype=np.float32),
          y=rng.integers(0, 10, n).astype(np.int32),
      )).batch(4)
      for _ in range(num_clients)
  ]


class AlgorithmsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters('fedavg', 'fedavg_momentum', 'fedprox')
  def test_one_round_changes_weights_and_counts_examples(self, name):
    process = algorithms.build_algorithm(
        name, algorithms.build_model_fn('fashion_mnist', seed=1),
        client_learning_rate=0.1)
    with execution.local_cpp_execution_context():
      state = process.initialize()
      before = process.get_model_weights(state).trainable
      out = process.next(state, _client_datasets())
      after = process.get_model_weights(out.state).trainable
    self.assertEqual(out.metrics['client_work']['train']['num_examples'], 16)
    self.assertFalse(np.allclose(before[0], after[0]))

  def test_mfl_is_fedavg_with_the_papers_momentum(self):
    def one_round(name, **kwargs):
      process = algorithms.build_algorithm(
          name, algorithms.build_model_fn('fashion_mnist', seed=1),
          client_learning_rate=0.1, **kwargs)
      with execution.local_cpp_execution_context():
        out = process.next(process.initialize(), _client_datasets())
        return process.get_model_weights(out.state).trainable

    mfl = one_round('fedavg_momentum')
    fedavg_075 = one_round('fedavg', client_momentum=0.75)
    plain = one_round('fedavg')
    self.assertAllClose(mfl, fedavg_075, atol=1e-7)
    self.assertFalse(np.allclose(mfl[0], plain[0]))

  @parameterized.named_parameters(
      ('unknown', dict(name='fedsgd'), "algorithm must be one of .*'fedsgd'"),
      ('lr', dict(client_learning_rate=0.0), 'client_learning_rate must be a positive number, got 0.0'),
      ('server_lr', dict(server_learning_rate=-1.0), 'server_learning_rate must be a positive number, got -1.0'),
      ('momentum', dict(client_momentum=1.0), r'client_momentum must be in \[0, 1\), got 1.0'),
      ('mfl_zero', dict(name='fedavg_momentum', client_momentum=0.0), 'client_momentum must be > 0 for fedavg_momentum'),
      ('mu', dict(name='fedprox', proximal_strength=0.0), 'proximal_strength must be a positive number, got 0.0'),
  )
  def test_bad_arguments(self, overrides, regex):
    kwargs = dict(name='fedavg', client_learning_rate=0.1)
    kwargs.update(overrides)
    name = kwargs.pop('name')
    with self.assertRaisesRegex(ValueError, regex):
      algorithms.build_algorithm(
          name, algorithms.build_model_fn('fashion_mnist'), **kwargs)


class MessagePruningTest(tf.test.TestCase):

  def test_fedavg_with_message_pruning_halves_the_upload(self):
    self.assertTrue(algorithms.uses_fed_sparsify('fedavg', 0.5))
    self.assertFalse(algorithms.uses_fed_sparsify('fedavg'))
    process = algorithms.build_algorithm(
        'fedavg', algorithms.build_model_fn('fashion_mnist', seed=1, prunable=True),
        client_learning_rate=0.1, client_message_prune_rate=0.5,
        server_message_prune_rate=0.75)
    with execution.local_cpp_execution_context():
      out = process.next(process.initialize(), _client_datasets())
      weights = process.get_model_weights(out.state).trainable
    communication = out.metrics['client_work']['communication']
    n = 118_282
    self.assertEqual(communication['params_uploaded'], 2 * (n - round(0.5 * n)))
    self.assertLess(communication['bytes_uploaded'], 0.55 * 2 * 4 * n)
    zeros = sum(int(np.sum(w == 0)) for w in weights)
    self.assertEqual(zeros, round(0.75 * n))

  def test_fedprox_rejects_message_pruning(self):
    with self.assertRaisesRegex(ValueError, 'message pruning rates must be 0 for fedprox'):
      algorithms.build_algorithm(
          'fedprox', algorithms.build_model_fn('fashion_mnist', prunable=True),
          client_learning_rate=0.1, client_message_prune_rate=0.5)


class QuantizationTest(tf.test.TestCase):

  def test_stacked_with_message_pruning_counts_what_tff_sends(self):
    self.assertTrue(algorithms.uses_fed_sparsify('fedavg', quantize_bits=8))
    process = algorithms.build_algorithm(
        'fedavg', algorithms.build_model_fn('fashion_mnist', seed=1, prunable=True),
        client_learning_rate=0.1, client_message_prune_rate=0.5, quantize_bits=8)
    with execution.local_cpp_execution_context():
      state = process.initialize()
      before = process.get_model_weights(state).trainable
      rounds = []
      for _ in range(2):
        out = process.next(state, _client_datasets())
        state = out.state
        rounds.append(out.metrics['client_work'])
      after = process.get_model_weights(state).trainable
    self.assertFalse(np.allclose(before[0], after[0]))
    # The 784x128 kernel (over TFF's 20000-element threshold) goes as 8-bit
    # levels, zeros included; the other tensors in their lossless encoding.
    kernel = comm.quantized_size(784 * 128, 8)
    self.assertEqual(kernel, 8 + 4 * -(-784 * 128 * 8 // 28))
    for metrics in rounds:
      uploaded = metrics['communication']['bytes_uploaded']
      self.assertGreater(uploaded, 2 * kernel)
      self.assertLess(uploaded, 2 * (kernel + 4 * (118_282 - 784 * 128) + 200))
    cumulative = rounds[1]['cumulative']
    for key in ('bytes_uploaded', 'bytes_downloaded', 'transmission_mbits'):
      self.assertAllClose(cumulative[key], sum(r['communication'][key] for r in rounds))

  def test_sparse_quantizer_sends_the_non_zero_values_both_ways(self):
    process = algorithms.build_algorithm(
        'fedsparsify_global', algorithms.build_model_fn('fashion_mnist', seed=1, prunable=True),
        client_learning_rate=0.1, quantize_bits=8, quantizer='sparse',
        schedule=schedules.FedSparsifySchedule(0.5, 3, initial_sparsity=0.5))
    with execution.local_cpp_execution_context():
      state = process.initialize()
      for _ in range(2):
        before = process.get_model_weights(state).trainable
        out = process.next(state, _client_datasets())
        state = out.state
      after = process.get_model_weights(state).trainable
    self.assertFalse(np.allclose(before[0], after[0]))
    # Round 2: the model of round 1 is half sparse. The 784x128 kernel goes
    # as mask + 8-bit non-zero values down, as 8-bit values inside the mask
    # up (the server knows the mask); the other tensors losslessly.
    kernel = before[0]
    nnz = int(np.count_nonzero(kernel))
    self.assertBetween(nnz, 1, 784 * 128 - 1)
    others_down = sum(len(comm.encode(t, methods=comm.METHODS)) for t in before[1:])
    communication = out.metrics['client_work']['communication']
    self.assertEqual(communication['bytes_downloaded'], 2 * (
        len(comm.encode_mask(kernel != 0, methods=comm.METHODS))
        + comm.quantized_values_size(nnz, 8) + others_down))
    uploaded_kernel = 2 * comm.quantized_values_size(nnz, 8)
    self.assertGreater(communication['bytes_uploaded'], uploaded_kernel)
    self.assertLess(communication['bytes_uploaded'], uploaded_kernel + 2 * (
        4 * (118_282 - 784 * 128) + 200))

  def test_bad_bits(self):
    for bits in (17, -1, 8.0, True):
      with self.assertRaisesRegex(
          ValueError, r'quantize_bits must be 0 \(no quantization\) or an integer in \[1, 16\]'):
        algorithms.build_algorithm(
            'fedavg', algorithms.build_model_fn('fashion_mnist', prunable=True),
            client_learning_rate=0.1, quantize_bits=bits)
    for threshold in (-1, 2.5):
      with self.assertRaisesRegex(
          ValueError, rf'quantize_threshold must be an integer >= 0 .*got {threshold}'):
        algorithms.build_algorithm(
            'fedavg', algorithms.build_model_fn('fashion_mnist', prunable=True),
            client_learning_rate=0.1, quantize_bits=8, quantize_threshold=threshold)
    with self.assertRaisesRegex(ValueError, 'quantize_bits must be 0 for fedprox'):
      algorithms.build_algorithm(
          'fedprox', algorithms.build_model_fn('fashion_mnist'),
          client_learning_rate=0.1, quantize_bits=8)
