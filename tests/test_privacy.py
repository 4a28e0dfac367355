"""Client-level differential privacy (issue 38): noise, clipping, masks and the guarantee.

Oracles: NumPy (the clients' SGD on a linear model, the clip, the unweighted
mean), scipy's normal distribution for the noise, a hand computation of
Renyi DP for epsilon, and dp_accounting called directly.
"""

import collections
import csv
import dataclasses
import math
import os
import shutil

from absl.testing import parameterized
import dp_accounting
import numpy as np
from dp_accounting.rdp import rdp_privacy_accountant
from scipy import special
from scipy import stats
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import
import tensorflow_federated as tff

from binaries import train
from tests import fixtures
from tests import test_fed_sparsify
from tff_sparsify import validation
from tff_sparsify.learning import configs
from tff_sparsify.learning import dp_aggregation
from tff_sparsify.learning import privacy_accounting
from tff_sparsify.learning import registry
from tff_sparsify.simulation import execution

# The linear fixture of test_fed_sparsify (3 -> 2, no bias, kernel W0, MSE).
LR = test_fed_sparsify.LR
BATCH = test_fed_sparsify.BATCH
W0 = test_fed_sparsify.W0
linear_model_fn = test_fed_sparsify.linear_model_fn
np_purge = test_fed_sparsify.np_purge


def clients_data(sizes, seed):
  rng = np.random.default_rng(seed)
  return [(rng.normal(size=(n, 3)).astype(np.float32), 3 * rng.normal(size=(n, 2)).astype(
      np.float32)) for n in sizes]


def datasets(clients):
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(BATCH)
          for x, y in clients]


def np_delta(w, mask, x, y):
  """A client's update: SGD on the mean squared error under `mask`, in float64."""
  start_w = w.astype(np.float64)
  w = start_w.copy()
  for start in range(0, len(x), BATCH):
    xb, yb = x[start:start + BATCH], y[start:start + BATCH]
    w = (w - LR * 2.0 / yb.size * xb.T @ (xb @ w - yb) * mask) * mask
  return w - start_w


def np_dp_mean(deltas, clip, clients_per_round):
  """The clipped updates' unweighted sum over the clients per round (no noise)."""
  clipped = [d * min(1.0, clip / np.linalg.norm(d)) for d in deltas]
  return np.sum(clipped, axis=0) / clients_per_round


def privacy(clip, noise=0.0, seed=1, clients=3):
  return configs.PrivacyConfig(dp_clip_norm=clip, dp_noise_multiplier=noise,
                               dp_noise_seed=seed, clients_per_round=clients)


class _InWorkerTest(tf.test.TestCase):
  """Runs the computations on one local worker, started once for the class."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.enter_context(execution.local_cpp_execution_context())


class NoiseTest(_InWorkerTest):
  """The aggregator alone, on zero updates: what comes out is the noise."""

  VALUE_TYPE = tff.types.to_type(collections.OrderedDict(
      a=(np.float32, [4000]), b=(np.float32, [10, 5])))

  def draws(self, config, rounds, clients=4):
    process = dp_aggregation.dp_mean_factory(config).create(
        self.VALUE_TYPE, tff.TensorType(np.float32))
    zeros = collections.OrderedDict(a=np.zeros(4000, np.float32), b=np.zeros((10, 5), np.float32))
    state, found = process.initialize(), []
    for _ in range(rounds):
      output = process.next(state, [zeros] * clients, [1.0, 2.0, 3.0, 9.0][:clients])
      state = output.state
      found.append(np.concatenate([output.result['a'], output.result['b'].ravel()]))
    return np.stack(found)

  def test_noise_is_gaussian_with_the_standard_deviation_z_c_over_m(self):
    config = privacy(0.5, noise=1.5, seed=11, clients=4)
    draws = self.draws(config, rounds=4)
    expected = 1.5 * 0.5 / 4  # z * C on the sum, divided by the clients per round.
    # 16,200 draws: the sample deviation's relative standard error is 0.6%.
    self.assertAllClose(np.std(draws), expected, rtol=0.03)
    self.assertLess(abs(np.mean(draws)), 4 * expected / math.sqrt(draws.size))
    self.assertGreater(stats.kstest(draws.ravel() / expected, 'norm').pvalue, 1e-3)
    # A fresh draw every round: rounds are uncorrelated (standard error 0.016).
    correlations = np.corrcoef(draws)[np.triu_indices(len(draws), 1)]
    self.assertLess(np.max(np.abs(correlations)), 0.07)
    # The seed decides it: the same seed repeats the draws, another does not.
    self.assertAllEqual(self.draws(config, rounds=2), draws[:2])
    other = self.draws(privacy(0.5, noise=1.5, seed=12, clients=4), rounds=1)
    self.assertGreater(np.max(np.abs(other[0] - draws[0])), expected)

  def test_adaptive_clipping_noise_is_seeded_and_raised_to_keep_the_total(self):
    config = configs.PrivacyConfig(dp_clip_norm=0.5, dp_noise_multiplier=0.3,
                                   dp_target_quantile=0.5, dp_noise_seed=4, clients_per_round=4)
    draws = self.draws(config, rounds=2)
    # The clipped count is noised at 0.05 m = 0.2 (sensitivity 0.5, so its
    # multiplier is 0.4); the update's multiplier makes the total 0.3:
    # 1/0.3^2 = 1/z_v^2 + 1/0.4^2 (by hand).
    z_v = (0.3 ** -2 - 0.4 ** -2) ** -0.5
    self.assertAllClose(np.std(draws[0]), z_v * 0.5 / 4, rtol=0.05)  # 4,050 draws.
    self.assertLess(abs(np.corrcoef(draws)[0, 1]), 0.07)  # A fresh draw in round 2.
    self.assertAllEqual(self.draws(config, rounds=2), draws)
    other = dataclasses.replace(config, dp_noise_seed=5)
    self.assertGreater(np.max(np.abs(self.draws(other, rounds=1)[0] - draws[0])), 0.01)

  def test_without_a_seed_two_processes_draw_different_noise(self):
    config = configs.PrivacyConfig(dp_clip_norm=1.0, dp_noise_multiplier=1.0, clients_per_round=2)
    first, second = (self.draws(config, rounds=1, clients=2) for _ in range(2))
    self.assertGreater(np.max(np.abs(first - second)), 0.1)


class DistributedNoiseTest(_InWorkerTest):
  """Distributed DP (TFF's distributed Skellam) on zero updates: the clients' noise, summed."""

  def test_the_sum_of_the_clients_noise_is_z_c_and_the_parameters_are_tffs(self):
    config = configs.PrivacyConfig(dp_clip_norm=0.5, dp_noise_multiplier=1.5,
                                   dp_mechanism='distributed_skellam', clients_per_round=4)

    def draws(rounds):
      process = dp_aggregation.distributed_mean_factory(config).create(
          NoiseTest.VALUE_TYPE, tff.TensorType(np.float32))
      zeros = collections.OrderedDict(a=np.zeros(4000, np.float32),
                                      b=np.zeros((10, 5), np.float32))
      state, found = process.initialize(), []
      for _ in range(rounds):
        output = process.next(state, [zeros] * 4, [1.0, 2.0, 3.0, 9.0])
        state = output.state
        found.append(np.concatenate([output.result['a'], output.result['b'].ravel()]))
      return np.stack(found), output.measurements['mean_value']

    found, measured = draws(rounds=3)
    # Each client adds Skellam noise of deviation z C / sqrt(m) (scaled, rotated);
    # the sum's is z C, and the mean divides by the m clients counted.
    expected = 1.5 * 0.5 / 4
    # 12,150 draws: the deviation's relative standard error is 0.6% (rounding
    # to the integer grid adds 1e-5 of it: the scale is about 1.8e5).
    self.assertAllClose(np.std(found), expected, rtol=0.03)
    self.assertLess(abs(np.mean(found)), 4 * expected / math.sqrt(found.size))
    self.assertGreater(stats.kstest(found.ravel() / expected, 'norm').pvalue, 1e-3)
    correlations = np.corrcoef(found)[np.triu_indices(len(found), 1)]
    self.assertLess(np.max(np.abs(correlations)), 0.07)
    # The parameters the guarantee is computed from are those TFF used.
    parameters = dp_aggregation.distributed_parameters(config, 4050)
    self.assertEqual(measured['padded_dim'], 4096)
    self.assertEqual(measured['actual_num_clients'], 4)
    self.assertAllClose(measured['scaled_inflated_l2'], parameters['l2'], rtol=1e-6)
    self.assertAllClose(measured['scaled_local_stddev'], parameters['local_stddev'], rtol=1e-6)
    self.assertAllClose(measured['scale_factor'], parameters['scale'], rtol=1e-6)
    # No seed: the clients draw from their clocks, so another run differs.
    self.assertGreater(np.max(np.abs(draws(rounds=1)[0][0] - found[0])), expected)


class AdaptiveClippingTest(_InWorkerTest):

  def test_the_clip_moves_geometrically_towards_the_quantile(self):
    # Noise 0: Andrew et al.'s update by hand, C <- C exp(-0.2 (b - q)), b the
    # fraction of updates no longer than C; the mean of the updates clipped to C.
    config = configs.PrivacyConfig(dp_clip_norm=1.0, dp_target_quantile=0.5, dp_noise_seed=1,
                                   clients_per_round=4)
    process = dp_aggregation.dp_mean_factory(config).create(
        tff.TensorType(np.float32, [2]), tff.TensorType(np.float32))
    values = [np.array([0.3, 0.4], np.float32) * k for k in (1, 4, 6, 8)]  # Norms .5 2 3 4.
    norms = np.array([0.5, 2.0, 3.0, 4.0])
    state, clip = process.initialize(), 1.0
    for _ in range(4):
      output = process.next(state, values, [1.0] * 4)
      state = output.state
      expected = np.sum([v * min(1.0, clip / n) for v, n in zip(values, norms)], axis=0) / 4
      self.assertAllClose(output.result, expected, rtol=1e-5)
      clip *= math.exp(-0.2 * (np.mean(norms <= clip) - 0.5))
      self.assertAllClose(output.measurements['dp_query_metrics']['clip'], clip, rtol=1e-5)
    self.assertGreater(clip, 1.0)


class ClippingTest(_InWorkerTest, parameterized.TestCase):
  """The whole process, noise off: the unweighted mean of the clipped updates (NumPy)."""

  def setUp(self):
    super().setUp()
    self.clients = clients_data((2, 4, 6), seed=3)
    norms = [np.linalg.norm(np_delta(W0, np.ones_like(W0), x, y)) for x, y in self.clients]
    # Clip between the norms: one update is kept whole, two are scaled down.
    self.clip = float(np.sort(norms)[0] * 1.2)
    self.assertEqual(sum(n > self.clip for n in norms), 2)

  def test_fedavg_clips_each_update_and_counts_clients_equally(self):
    config = configs.FedAvgConfig(client_learning_rate=LR, privacy=privacy(self.clip))
    process = registry.build_process(linear_model_fn(wrap=False), config)
    state = process.initialize()
    w = W0.astype(np.float64)
    for _ in range(2):
      state = process.next(state, datasets(self.clients)).state
      w = w + np_dp_mean([np_delta(w, 1.0, x, y) for x, y in self.clients], self.clip, 3)
    self.assertAllClose(process.get_model_weights(state).trainable[0], w, atol=1e-5)

  def test_global_pruning_clips_the_kept_coordinates_and_prunes_after_the_noise(self):
    # Eq. 1 with T = 3, t_0 = 1, n = 1: s_1 = 0, s_2 = 0.25.
    schedule = configs.ScheduleConfig(final_sparsity=0.5, total_rounds=3, sparsify_exponent=1.0)
    config = configs.FedSparsifyConfig(client_learning_rate=LR, schedule=schedule,
                                       privacy=privacy(self.clip))
    process = registry.build_process(linear_model_fn(wrap=True), config)
    state = process.initialize()
    w, mask = W0.astype(np.float64), np.ones_like(W0, np.float64)
    for round_num in (1, 2):
      state = process.next(state, datasets(self.clients)).state
      w = w + np_dp_mean([np_delta(w, mask, x, y) for x, y in self.clients], self.clip, 3)
      mask = mask * np_purge(w * mask, 0.25 * (round_num - 1))
      w = w * mask
    self.assertAllClose(process.get_model_weights(state).trainable[0], w, atol=1e-5)

  @parameterized.parameters(('fedsparsify_global', 'gaussian'), ('random_pruning', 'gaussian'),
                            ('fedsparsify_global', 'distributed_skellam'))
  def test_pruned_weights_stay_exactly_zero_under_noise(self, name, mechanism):
    seed = dict(dp_noise_seed=2) if mechanism == 'gaussian' else {}
    process, _ = fixtures.build_process(
        name, linear_model_fn(wrap=True), client_learning_rate=LR, final_sparsity=0.5,
        total_rounds=3, sparsify_exponent=1.0, clients_per_round=3, dp_clip_norm=self.clip,
        dp_noise_multiplier=2.0, dp_mechanism=mechanism, **seed)
    state = process.initialize()
    for round_num in (1, 2, 3):
      state = process.next(state, datasets(self.clients)).state
      weights = process.get_model_weights(state)
      kernel, mask = weights.trainable[0], weights.non_trainable[0]
      self.assertAllEqual(kernel[mask == 0], np.zeros(np.sum(mask == 0)))  # Exactly.
      self.assertTrue(np.all(kernel[mask == 1] != 0))
      if round_num == 1:  # s_1 = 0: nothing pruned yet; the noise is what NumPy lacks.
        quiet = W0 + np_dp_mean([np_delta(W0, 1.0, x, y) for x, y in self.clients], self.clip, 3)
        self.assertGreater(np.max(np.abs(kernel - quiet)), 0.1 * self.clip)
    self.assertEqual(np.sum(mask == 0), 3)


class SecureAggregationTest(_InWorkerTest):
  """The secure sum (TFF's intrinsics, replaced by their bodies in simulation) against plain sums."""

  def setUp(self):
    super().setUp()
    self.clients = clients_data((2, 4, 6), seed=3)

  def test_secure_weighted_mean_is_the_plain_mean_within_the_quantization_steps(self):
    secure = configs.FedAvgConfig(client_learning_rate=LR, privacy=configs.PrivacyConfig(
        secure_aggregation=True, clients_per_round=3))
    process = registry.build_process(linear_model_fn(wrap=False), secure)
    output = process.next(process.initialize(), datasets(self.clients))
    found = process.get_model_weights(output.state).trainable[0]
    # The plain weighted mean (TFF's FedAvg here, NumPy's by hand).
    deltas = [np_delta(W0, 1.0, x, y) for x, y in self.clients]
    weights = np.array([len(x) for x, _ in self.clients], np.float64)
    values = np.sum([d * w for d, w in zip(deltas, weights)], axis=0)
    # TFF rounds each weighted value to 32 bits within +-100 (its first
    # bound) and each weight within [0, 2^20 - 1]: half a step each.
    value_step, weight_step = 200 / (2**32 - 1), (2**20 - 1) / (2**32 - 1)
    bound = (3 * value_step / 2) / weights.sum() + np.abs(values) * (
        3 * weight_step / 2) / weights.sum() ** 2
    self.assertLessEqual(np.max(np.abs(found - (W0 + values / weights.sum())) - bound), 1e-6)
    aggregator = output.metrics['aggregator']
    bits = 32 + 2  # A ring for the sum of 3 clients' 32-bit integers.
    self.assertEqual(aggregator['mean_value']['bytes_uploaded'], 3 * math.ceil(6 * bits / 8))
    self.assertEqual(aggregator['mean_weight']['bytes_uploaded'], 3 * math.ceil(bits / 8))

  def test_with_dp_the_clipped_sum_is_secure_within_its_step_and_a_mask_shrinks_it(self):
    clip = 0.5

    def run(secure):
      process, _ = fixtures.build_process(
          'oneshot_pruning', linear_model_fn(wrap=True), client_learning_rate=LR,
          final_sparsity=0.5, total_rounds=3, clients_per_round=3, dp_clip_norm=clip,
          dp_noise_multiplier=1.0, dp_noise_seed=2, secure_aggregation=secure)
      state, metrics = process.initialize(), []
      for _ in range(2):
        output = process.next(state, datasets(self.clients))
        state = output.state
        metrics.append(output.metrics)
      return process.get_model_weights(state), metrics

    (plain, _), (secure, metrics) = run(False), run(True)
    # Two rounds, each coordinate of 3 clipped updates within +-clip rounded
    # to 32 bits: half a step each, over m = 3, through 2 server steps.
    step = 2 * clip / (2**32 - 1)
    self.assertAllClose(secure.trainable[0], plain.trainable[0], atol=2 * 3 * (step / 2) / 3 + 1e-7)
    self.assertAllEqual(secure.non_trainable[0], plain.non_trainable[0])
    bits = 32 + 2
    for round_metrics, kept in zip(metrics, (6, 3)):  # One-shot: half pruned after round 1.
      self.assertEqual(round_metrics['aggregator']['dp']['bytes_uploaded'],
                       3 * math.ceil(6 * bits / 8))
      self.assertEqual(round_metrics['client_work']['communication'][
          'secure_sum_bytes_known_mask'], 3 * math.ceil(kept * bits / 8))


  def test_with_adaptive_clipping_the_secure_sum_follows_the_plain_run(self):
    # The same seed's noise and clip path, summed securely within +-1024 C:
    # half a 32-bit step per client's value, over m, in each of two rounds
    # (and the clip path, moved by the count's own steps, by far less).
    def run(secure):
      config = configs.FedAvgConfig(client_learning_rate=LR, privacy=configs.PrivacyConfig(
          dp_clip_norm=0.5, dp_noise_multiplier=0.1, dp_target_quantile=0.5, dp_noise_seed=4,
          secure_aggregation=secure, clients_per_round=3))
      process = registry.build_process(linear_model_fn(wrap=False), config)
      state = process.initialize()
      for _ in range(2):
        output = process.next(state, datasets(self.clients))
        state = output.state
      return process.get_model_weights(state).trainable[0], output.metrics['aggregator']

    (plain, _), (secure, measured) = run(False), run(True)
    step = 2 * 1024 * 0.5 / (2**32 - 1)
    self.assertAllClose(secure, plain, atol=2 * step + 1e-6)
    self.assertGreater(np.max(np.abs(plain - W0)), 1e-3)  # It trained.
    self.assertEqual(measured['dp']['secure_sum']['secure_upper_clipped_count'], 0)


class GuaranteeTest(tf.test.TestCase):

  def test_all_clients_every_round_by_hand(self):
    z, rounds, delta = 2.0, 10, 1e-5
    found = privacy_accounting.epsilon(z, 5, 5, rounds, delta)
    # Replace-one: one client moves the clipped sum by up to 2C, so the Gaussian
    # mechanism's sigma over the sensitivity is z / 2, and T rounds compose to
    # Renyi DP rho * alpha with rho = T / (2 sigma^2). To (epsilon, delta):
    # Canonne, Kamath and Steinke 2020, Prop. 12, minimised over alpha by hand;
    # and the classic rho + 2 sqrt(rho log(1/delta)), which is looser.
    rho = rounds / (2 * (z / 2) ** 2)
    alphas = np.linspace(1.001, 300, 300000)
    hand = np.min(rho * alphas + np.log1p(-1 / alphas)
                  - (np.log(delta) + np.log(alphas)) / (alphas - 1))
    classic = rho + 2 * math.sqrt(rho * math.log(1 / delta))
    self.assertAllClose(found, hand, rtol=0.01)
    self.assertLess(found, classic)

  def test_sampled_rounds_equal_dp_accounting_and_sampling_amplifies(self):
    found = privacy_accounting.epsilon(1.1, 100, 10, 200, 0.01)
    accountant = dp_accounting.rdp.RdpAccountant(
        neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.SampledWithoutReplacementDpEvent(100, 10, dp_accounting.GaussianDpEvent(
            0.55)), 200))
    self.assertAllClose(found, accountant.get_epsilon(0.01))
    self.assertLess(found, privacy_accounting.epsilon(1.1, 100, 100, 200, 0.01))
    self.assertIsNone(privacy_accounting.epsilon(0.0, 100, 10, 200, 0.01))
    self.assertEqual(privacy_accounting.delta_of(0.0, 40), 1 / 40)


def exact_skellam_rdp(alpha, shift, variance):
  """D_alpha(Sk + shift || Sk) for Skellam noise of that variance, summed over the support.

  Each Poisson's mean is variance / 2, so the pmf at k is
  e^{-variance} I_|k|(variance) (scipy's exponentially scaled Bessel function).
  """
  k = np.arange(-int(40 * math.sqrt(variance)) - 100, int(40 * math.sqrt(variance)) + 100)
  with np.errstate(divide='ignore', invalid='ignore'):
    log_p = np.log(special.ive(np.abs(k - shift), variance))
    log_q = np.log(special.ive(np.abs(k), variance))
    terms = alpha * log_p + (1 - alpha) * log_q  # -inf (underflow) in the far tails.
  return special.logsumexp(terms[np.isfinite(terms)]) / (alpha - 1)


class DistributedGuaranteeTest(tf.test.TestCase):
  """The hand-written Skellam and sampling accounting (dp_accounting has neither)."""

  def test_skellam_bound_holds_over_the_exact_divergence_and_meets_the_gaussian(self):
    for variance in (2.0, 10.0, 100.0, 1e4):
      for shifts in ([1], [3], [1, 2, -1]):
        for alpha in (2, 5, 20):
          exact = sum(exact_skellam_rdp(alpha, s, variance) for s in shifts)
          l1, l2 = float(np.sum(np.abs(shifts))), float(np.linalg.norm(shifts))
          bound = privacy_accounting.skellam_rdp(alpha, l1, l2, variance)
          self.assertLessEqual(exact, bound * (1 + 1e-9), (variance, shifts, alpha))
          if variance >= 1e4:  # Large noise: the Gaussian's alpha l2^2 / (2 var).
            self.assertAllClose(bound, alpha * l2**2 / (2 * variance), rtol=1e-3)
            self.assertAllClose(exact, bound, rtol=1e-3)

  def test_sampling_without_replacement_equals_dp_accounting_on_a_gaussian(self):
    q, sigma = 0.1, 0.7
    orders = list(range(2, 301))
    ours = privacy_accounting.subsampled_rdp(q, [a / (2 * sigma**2) for a in orders], orders)
    # dp_accounting's (Gaussian only; above order 256 it is Theorem 9 as written).
    theirs = rdp_privacy_accountant._compute_rdp_sample_wor_gaussian(q, sigma, orders)  # pylint: disable=protected-access
    self.assertAllClose(ours, theirs, rtol=1e-9)
    self.assertTrue(np.all(ours <= np.array(orders) / (2 * sigma**2)))  # Sampling amplifies.
    with self.assertRaisesRegex(ValueError, 'orders must be 2, 3'):
      privacy_accounting.subsampled_rdp(q, [1.0], [3])

  def test_large_skellam_noise_has_the_gaussians_epsilon(self):
    # 100 rounds of 10 of 100 clients, L2 bound 1,000 (scaled units), each
    # client's noise 1,000 / sqrt(10): the sum's deviation over the clip is 1,
    # as DP-FedAvg at z = 1 (our accountant: z / 2 for replace-one).
    large = dict(clients=10, l2=1000.0, l1=1000.0 * 31, local_stddev=1000 / math.sqrt(10))
    found = privacy_accounting.skellam_epsilon(large, 100, 100, 0.01)
    self.assertAllClose(found, privacy_accounting.epsilon(1.0, 100, 10, 100, 0.01), rtol=1e-4)
    # Less noise (a coarse integer grid) costs more than the Gaussian.
    coarse = dict(clients=10, l2=10.0, l1=10.0 * 31, local_stddev=10 / math.sqrt(10))
    self.assertGreater(privacy_accounting.skellam_epsilon(coarse, 100, 100, 0.01), found * 1.05)
    # Rounds compose: 100 rounds cost more than 50 (and 0 nothing).
    self.assertLess(privacy_accounting.skellam_epsilon(large, 50, 100, 0.01), found)
    self.assertEqual(privacy_accounting.skellam_epsilon(large, 0, 100, 0.01), 0.0)
    self.assertIsNone(privacy_accounting.skellam_epsilon(
        dict(clients=10, l2=1.0, l1=1.0, local_stddev=0.0), 100, 100, 0.01))


class ConfigurationTest(tf.test.TestCase):

  def test_combinations_that_bypass_the_noise_are_refused_naming_the_flag(self):
    on = privacy(1.0)
    never = configs.ScheduleConfig(final_sparsity=0.5, total_rounds=2)
    cases = [
        (dict(mode='local'), 'dp_clip_norm', 'fedsparsify_local'),
        (dict(pruning_method='snip', schedule=configs.ScheduleConfig.one_shot(
            0.5, 2, sparsify_start_round=0)), 'dp_clip_norm', 'SNIP scores'),
        (dict(compression=configs.CompressionConfig(quantize_bits=8)), 'quantizer', 'noise'),
        (dict(mode='local', privacy=configs.PrivacyConfig(secure_aggregation=True)),
         'secure_aggregation', 'merged in the clear'),
    ]
    for options, field, reason in cases:
      with self.subTest(field=field, reason=reason):
        with self.assertRaisesRegex(validation.ConfigError, reason) as raised:
          configs.FedSparsifyConfig(**dict(dict(schedule=never, privacy=on), **options))
        self.assertEqual(raised.exception.field, field)
    with self.assertRaisesRegex(validation.ConfigError, 'needs --dp_clip_norm > 0'):
      configs.PrivacyConfig(dp_noise_multiplier=1.0)
    distributed = dict(dp_clip_norm=1.0, dp_noise_multiplier=1.0,
                       dp_mechanism='distributed_skellam', clients_per_round=20)
    for overrides, field, reason in [
        (dict(dp_noise_seed=3), 'dp_noise_seed', 'from their own clocks'),
        (dict(dp_target_quantile=0.5), 'dp_target_quantile', 'unseeded draw'),
        (dict(secure_aggregation=True), 'secure_aggregation', 'is implied by'),
        (dict(dp_noise_multiplier=0.0), 'dp_mechanism', 'needs --dp_noise_multiplier > 0'),
        (dict(dp_clip_norm=0.0, dp_noise_multiplier=0.0), 'dp_mechanism',
         'needs --dp_clip_norm > 0'),
        (dict(dp_mechanism='local'), 'dp_mechanism', 'must be one of gaussian, distributed'),
    ]:
      with self.subTest(field=field, reason=reason):
        with self.assertRaisesRegex(validation.ConfigError, reason) as raised:
          configs.PrivacyConfig(**dict(distributed, **overrides))
        self.assertEqual(raised.exception.field, field)
    with self.assertRaisesRegex(validation.ConfigError,
                                r'dp_noise_multiplier=1.0: must be below 0.1 x --clients_per_round'):
      configs.PrivacyConfig(dp_clip_norm=0.1, dp_noise_multiplier=1.0, dp_target_quantile=0.5,
                            clients_per_round=10)


class TrainBinaryTest(tf.test.TestCase):
  """Through the training binary, in process: the guarantee per round and exact resume."""

  @classmethod
  def tearDownClass(cls):
    tf_config.disable_op_determinism()  # The training binary turned it on.
    super().tearDownClass()

  def run_train(self, out, rounds, **flags):
    values = dict(dataset='fashion_mnist', data_dir=self.data_dir, partition='iid',
                  num_clients=6, clients_per_round=3, client_epochs_per_round=1,
                  client_batch_size=16, total_rounds=rounds, root_output_dir=out,
                  experiment_name='e', progress=False, algorithm='fedavg',
                  dp_clip_norm=0.5, dp_noise_multiplier=1.0)
    values.update(flags)
    code, self.out, err = fixtures.run_binary(train, [f'--{k}={v}' for k, v in values.items()])
    self.assertEqual(code, 0, err)
    return np.load(os.path.join(out, 'results', 'e', 'final_weights.npz'))

  def test_epsilon_every_round_and_a_drawn_seed_resumes_exactly(self):
    root = self.create_tempdir().full_path
    self.data_dir = fixtures.write_fashion_mnist_like(os.path.join(root, 'data'))
    first = os.path.join(root, 'first')
    self.run_train(first, rounds=1)
    copy = os.path.join(root, 'copy')
    shutil.copytree(first, copy)
    # Each resume builds its process anew (a new seed is drawn) but goes on
    # with the seed in the checkpoint: both give the same weights. (FedAvg: a
    # run that does not prune may be extended.)
    a, b = self.run_train(first, rounds=2), self.run_train(copy, rounds=2)
    for name in a.files:
      self.assertAllEqual(a[name], b[name], name)
    with open(os.path.join(first, 'results', 'e', 'metrics.csv')) as f:
      rows = [r for r in csv.DictReader(f) if r['round_num'] != '0']
    summary = fixtures.read_json(os.path.join(first, 'results', 'e', 'summary.json'))
    for row in rows:
      accountant = dp_accounting.rdp.RdpAccountant(
          neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
      accountant.compose(dp_accounting.SelfComposedDpEvent(
          dp_accounting.SampledWithoutReplacementDpEvent(6, 3, dp_accounting.GaussianDpEvent(
              0.5)), int(row['round_num'])))
      self.assertAllClose(float(row['privacy/epsilon']), accountant.get_epsilon(1 / 6))
    self.assertEqual([r['round_num'] for r in rows], ['1', '2'])
    self.assertEqual(summary['dp_epsilon'], float(rows[-1]['privacy/epsilon']))
    self.assertAllClose(summary['dp_delta'], 1 / 6)
    self.assertIn(f'({summary["dp_epsilon"]:.3g}, 0.167)-DP', self.out)

  def test_distributed_skellam_on_two_workers_accounts_what_tff_measured(self):
    root = self.create_tempdir().full_path
    self.data_dir = fixtures.write_fashion_mnist_like(os.path.join(root, 'data'))
    out = os.path.join(root, 'ddp')
    weights = self.run_train(out, rounds=2, dp_mechanism='distributed_skellam',
                             num_local_workers=2)
    with open(os.path.join(out, 'results', 'e', 'metrics.csv')) as f:
      rows = [r for r in csv.DictReader(f) if r['round_num'] != '0']
    self.assertEqual([r['round_num'] for r in rows], ['1', '2'])
    for row in rows:
      # Accounted from the aggregator's own measurements (every round the same).
      l2 = float(row['aggregator/mean_value/scaled_inflated_l2'])
      padded = int(row['aggregator/mean_value/padded_dim'])
      measured = dict(clients=int(row['aggregator/mean_value/actual_num_clients']), l2=l2,
                      l1=math.ceil(l2 * min(math.sqrt(padded), l2)),
                      local_stddev=float(row['aggregator/mean_value/scaled_local_stddev']))
      self.assertEqual(measured['clients'], 3)
      self.assertAllClose(float(row['privacy/epsilon']), privacy_accounting.skellam_epsilon(
          measured, int(row['round_num']), 6, 1 / 6), rtol=1e-5)
      # Each client sends its padded update as 20-bit integers (by hand).
      self.assertEqual(int(row['client_work/communication/bytes_uploaded']),
                       3 * padded * 20 // 8)
    summary = fixtures.read_json(os.path.join(out, 'results', 'e', 'summary.json'))
    # The update: every trainable value, padded to a power of two.
    self.assertEqual(padded, 2 ** math.ceil(math.log2(summary['total_params'])))
    self.assertTrue(all(np.all(np.isfinite(weights[k])) for k in weights.files))
    self.assertEqual(summary['dp_epsilon'], float(rows[-1]['privacy/epsilon']))


if __name__ == '__main__':
  tf.test.main()
