"""Tests for the baselines, the registry and the per-algorithm configurations."""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tests import fixtures
from tff_sparsify import validation
from tff_sparsify.compression import codecs
from tff_sparsify.learning import configs
from tff_sparsify.learning import registry
from tff_sparsify.learning.algorithms import fedavg_momentum
from tff_sparsify.learning.algorithms import fedprox
from tff_sparsify.learning.algorithms import prunefl
from tff_sparsify.simulation import execution


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
    process, _ = fixtures.build_process(name, client_learning_rate=0.1)
    with execution.local_cpp_execution_context():
      state = process.initialize()
      before = process.get_model_weights(state).trainable
      out = process.next(state, _client_datasets())
      after = process.get_model_weights(out.state).trainable
    self.assertEqual(out.metrics['client_work']['train']['num_examples'], 16)
    self.assertFalse(np.allclose(before[0], after[0]))

  def test_mfl_is_fedavg_with_the_papers_momentum(self):
    def one_round(name, **kwargs):
      process, _ = fixtures.build_process(name, client_learning_rate=0.1, **kwargs)
      with execution.local_cpp_execution_context():
        out = process.next(process.initialize(), _client_datasets())
        return process.get_model_weights(out.state).trainable

    mfl = one_round('fedavg_momentum')
    fedavg_075 = one_round('fedavg', client_momentum=0.75)
    plain = one_round('fedavg')
    self.assertAllClose(mfl, fedavg_075, atol=1e-7)
    self.assertFalse(np.allclose(mfl[0], plain[0]))

  @parameterized.named_parameters(
      ('unknown', dict(name='fedsgd'), 'algorithm', "algorithm='fedsgd': must be one of fedavg, "),
      ('lr', dict(client_learning_rate=0.0), 'client_learning_rate', 'must be positive'),
      ('server_lr', dict(server_learning_rate=-1.0), 'server_learning_rate', 'must be positive'),
      ('momentum', dict(client_momentum=1.0), 'client_momentum', r'must be in \[0, 1\)'),
      ('mfl_zero', dict(name='fedavg_momentum', client_momentum=0.0), 'client_momentum',
       'must be > 0 for --algorithm=fedavg_momentum'),
      ('mu', dict(name='fedprox', proximal_strength=0.0), 'proximal_strength', 'must be positive'),
      ('prox_rate', dict(name='fedprox', client_message_prune_rate=0.5),
       'client_message_prune_rate', 'must be 0 for --algorithm=fedprox'),
      ('prox_bits', dict(name='fedprox', quantize_bits=8), 'quantize_bits',
       'must be 0 for --algorithm=fedprox'),
      ('bits', dict(quantize_bits=17), 'quantize_bits', r'must be 0 \(off\) or in \[1, 16\]'),
      ('bits_float', dict(quantize_bits=8.0), 'quantize_bits', r'must be 0 \(off\) or in \[1, 16\]'),
      ('bits_bool', dict(quantize_bits=True), 'quantize_bits', r'must be 0 \(off\) or in \[1, 16\]'),
      ('threshold', dict(quantize_bits=8, quantize_threshold=2.5), 'quantize_threshold', 'must be >= 0'),
      ('quantizer', dict(quantize_bits=8, quantizer='topk'), 'quantizer', 'must be one of tff, sparse'),
      ('rate', dict(client_message_prune_rate=1.0), 'client_message_prune_rate', r'must be in \[0, 1\)'),
      ('target', dict(client_message_prune_rate=0.5, message_prune_target='weights'),
       'message_prune_target', 'must be one of model, delta'),
      ('target_no_rate', dict(message_prune_target='delta'), 'message_prune_target',
       'needs client_message_prune_rate > 0'),
      ('target_tff', dict(client_message_prune_rate=0.5, message_prune_target='delta',
                          quantize_bits=8), 'message_prune_target', 'with quantizer=tff'),
      ('prox_target', dict(name='fedprox', message_prune_target='delta'),
       'message_prune_target', 'must be model for --algorithm=fedprox'),
      ('sparsity', dict(name='fedsparsify_global', final_sparsity=1.0, total_rounds=3),
       'final_sparsity', r'must be in \[0, 1\)'),
      ('start', dict(name='fedsparsify_local', final_sparsity=0.5, total_rounds=3,
                     sparsify_start_round=3), 'total_rounds', 'must be > sparsify_start_round=3'),
      ('vote', dict(name='fedsparsify_local', final_sparsity=0.5, total_rounds=3,
                    mask_aggregation='median'), 'mask_aggregation', 'must be one of majority_vote, mean'),
      ('random_placement', dict(name='random_pruning', final_sparsity=0.5, total_rounds=3,
                                sparsity_placement='uniform'), 'sparsity_placement',
       r'must be global for random pruning'),
      ('snip_placement', dict(name='snip', final_sparsity=0.5, total_rounds=3,
                              sparsity_placement='compute'), 'sparsity_placement',
       r'must be global for SNIP \(--algorithm=snip\)'),
  )
  def test_each_bad_option_is_one_config_error_naming_it(self, overrides, field, regex):
    values = dict(name='fedavg', client_learning_rate=0.1)
    values.update(overrides)
    name = values.pop('name')
    with self.assertRaisesRegex(validation.ConfigError, regex) as raised:
      registry.config_from_flags(values, name)
    self.assertEqual(raised.exception.field, field)

  def test_registry_maps_each_name_to_its_configuration(self):
    expected = dict(
        fedavg=configs.FedAvgConfig, fedavg_momentum=fedavg_momentum.FedAvgMomentumConfig,
        fedprox=fedprox.FedProxConfig, fedsparsify_global=configs.FedSparsifyConfig,
        fedsparsify_local=configs.FedSparsifyConfig, random_pruning=configs.FedSparsifyConfig,
        oneshot_pruning=configs.FedSparsifyConfig, snip=configs.FedSparsifyConfig,
        grasp=configs.FedSparsifyConfig, prunefl=prunefl.PruneFLConfig)
    self.assertEqual(registry.names(), tuple(expected))
    flags = dict(final_sparsity=0.6, total_rounds=4, initial_sparsity=0.1)
    made = {name: registry.config_from_flags(flags, name) for name in expected}
    for name, config_class in expected.items():
      self.assertIs(type(made[name]), config_class, name)
    self.assertEqual(made['fedavg'].client_momentum, 0.0)
    self.assertEqual(made['fedavg_momentum'].client_momentum, 0.75)  # The paper's MFL.
    self.assertEqual((made['fedsparsify_local'].mode, made['random_pruning'].pruning_method),
                     ('local', 'random'))
    # One-shot: S_0 = S_T, whatever --initial_sparsity says.
    self.assertEqual(made['oneshot_pruning'].schedule, configs.ScheduleConfig(
        0.6, 4, initial_sparsity=0.6))
    self.assertEqual(made['fedsparsify_global'].schedule.initial_sparsity, 0.1)
    # SNIP and GraSP: S_T from before round 1 (t_0 = 0), the mask scored once.
    for name in ('snip', 'grasp', 'prunefl'):
      self.assertEqual(made[name].schedule, configs.ScheduleConfig(
          0.6, 4, initial_sparsity=0.6, sparsify_start_round=0), name)
      self.assertEqual(made[name].pruning_method, name)
      self.assertTrue(registry.get(name).scores_at_init)
    with self.assertRaisesRegex(TypeError, 'fedprox takes a FedProxConfig, got FedAvgConfig'):
      registry.get('fedprox').build(None, made['fedavg'])


class MessagePruningTest(tf.test.TestCase):

  def test_fedavg_with_message_pruning_halves_the_upload(self):
    process, config = fixtures.build_process(
        'fedavg', client_learning_rate=0.1, client_message_prune_rate=0.5,
        server_message_prune_rate=0.75)
    self.assertTrue(registry.uses_prunable_model(config))
    self.assertFalse(registry.uses_prunable_model(configs.FedAvgConfig()))
    with execution.local_cpp_execution_context():
      out = process.next(process.initialize(), _client_datasets())
      weights = process.get_model_weights(out.state).trainable
    communication = out.metrics['client_work']['communication']
    n = 118_282
    self.assertEqual(communication['params_uploaded'], 2 * (n - round(0.5 * n)))
    self.assertLess(communication['bytes_uploaded'], 0.55 * 2 * 4 * n)
    zeros = sum(int(np.sum(w == 0)) for w in weights)
    self.assertEqual(zeros, round(0.75 * n))


class QuantizationTest(tf.test.TestCase):

  def test_stacked_with_message_pruning_counts_what_tff_sends(self):
    process, _ = fixtures.build_process(
        'fedavg', client_learning_rate=0.1, client_message_prune_rate=0.5, quantize_bits=8)
    with execution.local_cpp_execution_context():
      state = process.initialize()
      before = process.get_model_weights(state).trainable
      rounds = []
      for _ in range(2):
        out = process.next(state, _client_datasets())
        state = out.state
        rounds.append(out.metrics)
      after = process.get_model_weights(state).trainable
    self.assertFalse(np.allclose(before[0], after[0]))
    # TFF's encoder sends the 784x128 kernel (over its 20000-element
    # threshold) as 8-bit levels bitpacked 28 bits to a word, zeros included,
    # plus two float32 (minimum, maximum); every other tensor as it is.
    kernel = 8 + 4 * -(-784 * 128 * 8 // 28)
    for metrics in rounds:
      self.assertEqual(metrics['aggregator']['bytes_uploaded'],
                       2 * (kernel + 4 * (118_282 - 784 * 128)))
      self.assertEqual(metrics['client_work']['communication']['bytes_uploaded'], 0)

  def test_sparse_quantizer_sends_the_non_zero_values_both_ways(self):
    process, _ = fixtures.build_process(
        'fedsparsify_global', client_learning_rate=0.1, quantize_bits=8, quantizer='sparse',
        final_sparsity=0.5, total_rounds=3, initial_sparsity=0.5)
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
    others_down = sum(len(codecs.encode(t, methods=codecs.METHODS)) for t in before[1:])
    communication = out.metrics['client_work']['communication']
    self.assertEqual(out.metrics['distributor']['bytes_downloaded'], 2 * (
        len(codecs.encode_mask(kernel != 0, methods=codecs.METHODS))
        + codecs.quantized_values_size(nnz, 8) + others_down))
    uploaded_kernel = 2 * codecs.quantized_values_size(nnz, 8)
    self.assertGreater(communication['bytes_uploaded'], uploaded_kernel)
    self.assertLess(communication['bytes_uploaded'], uploaded_kernel + 2 * (
        4 * (118_282 - 784 * 128) + 200))
