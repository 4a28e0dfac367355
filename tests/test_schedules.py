"""Tests for tff_sparsify.core.schedules (Eq. 1)."""

from absl.testing import parameterized
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tff_sparsify import validation
from tff_sparsify.core import schedules
from tff_sparsify.learning import configs


def _schedule(*args, **kwargs) -> schedules.FedSparsifySchedule:
  return schedules.FedSparsifySchedule(configs.ScheduleConfig(*args, **kwargs))


def _python(sched, t):
  should_prune, sparsity = sched(t)
  return bool(should_prune), float(sparsity)


class FedSparsifyScheduleTest(tf.test.TestCase, parameterized.TestCase):

  def test_linear_when_the_exponent_is_one(self):
    # n = 1, S_0 = 0, t0 = 1, T = 11, F = 1: s_t = 0.9 (t - 1) / 10.
    sched = _schedule(0.9, 11, sparsify_exponent=1.0)
    for t in range(1, 12):
      self.assertAlmostEqual(sched.sparsity(t), 0.09 * (t - 1), places=12)

  def test_hand_values_with_start_frequency_and_initial_sparsity(self):
    # S_T = 0.8, S_0 = 0.2, t0 = 10, T = 100, F = 2, n = 2.
    sched = _schedule(
        0.8, 100, initial_sparsity=0.2, sparsify_start_round=10,
        sparsify_frequency=2, sparsify_exponent=2.0)
    self.assertEqual(sched.sparsity(9), 0.0)  # Before t0.
    self.assertAlmostEqual(sched.sparsity(10), 0.2, places=12)  # Progress 0: S_0.
    # t = 55: F floor(t / F) = 54, progress (54 - 10) / 90 = 22/45,
    # s = 0.8 - 0.6 (23/45)^2 = 0.8 - 0.6 * 529/2025.
    self.assertAlmostEqual(sched.sparsity(55), 0.8 - 0.6 * 529 / 2025, places=12)
    self.assertEqual(sched.sparsity(54), sched.sparsity(55))  # Same F-block.
    self.assertAlmostEqual(sched.sparsity(100), 0.8, places=12)
    # S_T = 0.9, S_0 = 0, t0 = 0, T = 20, F = 3, n = 1.5; t = 10: 3 floor(10/3)
    # = 9, progress 9/20, s = 0.9 - 0.9 * 0.55^1.5 = 0.5328982
    sched = _schedule(
        0.9, 20, sparsify_start_round=0, sparsify_frequency=3, sparsify_exponent=1.5)
    self.assertAlmostEqual(sched.sparsity(10), 0.53289817, places=8)
    # T = 20 is not a multiple of F = 3: the last pruning round is 18,
    # progress 18/20, s = 0.9 - 0.9 * 0.1^1.5 = 0.87154...
    self.assertAlmostEqual(sched.sparsity(20), 0.9 - 0.9 * 0.1 ** 1.5, places=12)

  def test_is_a_tfmot_pruning_schedule_inside_tf_functions(self):
    sched = _schedule(0.8, 30, initial_sparsity=0.2, sparsify_start_round=4,
                      sparsify_frequency=3, sparsify_exponent=2.0)
    self.assertIsInstance(sched, tfmot.sparsity.keras.PruningSchedule)
    traced = tf.function(lambda t: sched(t))
    for t in (3, 4, 5, 6, 16, 30, 33):
      should_prune, sparsity = traced(tf.constant(t, tf.int32))
      # From t0 = 4 every round t with t mod 3 = 0; t = 16: 3 floor(16/3) = 15,
      # progress 11/26, s = 0.8 - 0.6 (15/26)^2.
      self.assertEqual(bool(should_prune), t >= 4 and t % 3 == 0, msg=f'round {t}')
      expected = {3: 0.0, 4: 0.2, 5: 0.2, 6: 0.8 - 0.6 * (24 / 26) ** 2,
                  16: 0.8 - 0.6 * (15 / 26) ** 2, 30: 0.8, 33: 0.8}[t]
      self.assertAlmostEqual(float(sparsity), expected, places=12, msg=f'round {t}')

  def test_hand_computed_values(self):
    sched = _schedule(0.9, 11)  # t0=1, F=1, n=3.
    # t=1: 0.9 - 0.9 * 1^3 = 0; t=6: 0.9 - 0.9 * 0.5^3 = 0.7875.
    self.assertEqual(_python(sched, 0), (False, 0.0))
    self.assertEqual(_python(sched, 1), (True, 0.0))
    self.assertEqual(_python(sched, 6), (True, 0.7875))
    self.assertAlmostEqual(_python(sched, 11)[1], 0.9)
    self.assertAlmostEqual(_python(sched, 30)[1], 0.9)

  def test_frequency_prunes_every_f_rounds(self):
    sched = _schedule(0.9, 20, sparsify_frequency=5)
    self.assertEqual([t for t in range(21) if _python(sched, t)[0]], [5, 10, 15, 20])
    self.assertEqual(sched.sparsity(7), sched.sparsity(5))

  def test_tuning_rounds_after_sparsify_end_round(self):
    from tff_sparsify import config as config_lib  # pylint: disable=g-import-not-at-top
    config = config_lib.TrainConfig(algorithm='fedsparsify_global', total_rounds=10,
                                    final_sparsity=0.8, sparsify_end_round=4)
    schedule = schedules.FedSparsifySchedule(config.algorithm_config.schedule)
    # Eq. 1 with T = 4, t_0 = 1, n = 3, by hand; then S_T for the tuning rounds 5-10.
    want = [0.8 - 0.8 * (1 - (t - 1) / 3) ** 3 for t in (1, 2, 3)] + [0.8] * 7
    self.assertAllClose([schedule.sparsity(t) for t in range(1, 11)], want)
    with self.assertRaisesRegex(validation.ConfigError,
                                'sparsify_end_round=4: is for pruning algorithms, not '
                                '--algorithm=fedavg'):
      config_lib.TrainConfig(algorithm='fedavg', total_rounds=10, sparsify_end_round=4)
    with self.assertRaisesRegex(validation.ConfigError, 'sparsify_end_round=1: must be in'):
      config_lib.TrainConfig(algorithm='fedsparsify_global', sparsify_end_round=1)

  def test_one_shot(self):
    sched = _schedule(0.9, 10, initial_sparsity=0.9)
    self.assertEqual(sched.sparsity(0), 0.0)
    self.assertEqual({sched.sparsity(t) for t in range(1, 11)}, {0.9})

  def test_monotone_and_config_round_trip(self):
    sched = _schedule(0.95, 40, sparsify_exponent=2.0)
    values = [sched.sparsity(t) for t in range(41)]
    self.assertEqual(values, sorted(values))
    again = schedules.FedSparsifySchedule.from_config(sched.get_config())
    self.assertEqual(again.config, sched.config)
    self.assertEqual(again.config.final_sparsity, 0.95)

  @parameterized.named_parameters(
      ('final_high', dict(final_sparsity=1.0), r'final_sparsity=1.0: must be in \[0, 1\)'),
      ('final_negative', dict(final_sparsity=-0.1), r'final_sparsity=-0.1: must be in \[0, 1\)'),
      ('initial_above_final', dict(initial_sparsity=0.95), r'initial_sparsity=0.95: must be in \[0, final_sparsity=0.9\]'),
      ('rounds', dict(total_rounds=1), 'total_rounds=1: must be > sparsify_start_round=1'),
      ('start', dict(sparsify_start_round=-1), 'sparsify_start_round=-1: must be >= 0'),
      ('frequency', dict(sparsify_frequency=0), 'sparsify_frequency=0: must be >= 1'),
      ('exponent', dict(sparsify_exponent=0.0), 'sparsify_exponent=0.0: must be > 0'),
  )
  def test_bad_arguments(self, overrides, regex):
    kwargs = dict(final_sparsity=0.9, total_rounds=10)
    kwargs.update(overrides)
    with self.assertRaisesRegex(validation.ConfigError, regex):
      configs.ScheduleConfig(**kwargs)
    with self.assertRaisesRegex(TypeError, 'config must be a ScheduleConfig, got dict'):
      schedules.FedSparsifySchedule(kwargs)
