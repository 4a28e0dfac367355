"""Tests for tff_sparsify.schedules (Eq. 1)."""

import math

from absl.testing import parameterized
import tensorflow as tf

from tff_sparsify import schedules


def eq1(t, s_t_final, s_0, t0, total, f, n):
  return s_t_final + (s_0 - s_t_final) * (1 - (f * math.floor(t / f) - t0) / (total - t0)) ** n


class FedSparsifyScheduleTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      (0.9, 0.0, 1, 200, 1, 3), (0.99, 0.0, 1, 50, 1, 3),
      (0.95, 0.0, 1, 200, 5, 3), (0.8, 0.2, 10, 100, 2, 2),
      (0.9, 0.0, 0, 20, 3, 1.5))
  def test_matches_formula(self, s_final, s_0, t0, total, f, n):
    sched = schedules.FedSparsifySchedule(
        s_final, total, initial_sparsity=s_0, sparsify_start_round=t0,
        sparsify_frequency=f, sparsify_exponent=n)
    for t in range(t0, total + 1):
      expected = min(max(eq1(t, s_final, s_0, t0, total, f, n), s_0), s_final)
      self.assertAlmostEqual(sched.sparsity(t), expected, places=12)
    if total % f == 0:  # Eq. 1 reaches S_T at the last multiple of F.
      self.assertAlmostEqual(sched.sparsity(total), s_final, places=12)

  @parameterized.parameters(
      (0.9, 0.0, 1, 20, 1, 3), (0.8, 0.2, 4, 30, 3, 2), (0.5, 0.5, 2, 9, 1, 3))
  def test_tf_call_equals_python(self, s_final, s_0, t0, total, f, n):
    sched = schedules.FedSparsifySchedule(
        s_final, total, initial_sparsity=s_0, sparsify_start_round=t0,
        sparsify_frequency=f, sparsify_exponent=n)
    for t in range(0, total + 3):
      should_prune, sparsity = sched.tf_call(tf.constant(t, tf.int32))
      self.assertEqual(bool(should_prune), sched(t)[0], msg=f'round {t}')
      self.assertAlmostEqual(float(sparsity), sched(t)[1], places=12, msg=f'round {t}')

  def test_hand_computed_values(self):
    sched = schedules.FedSparsifySchedule(0.9, 11)  # t0=1, F=1, n=3.
    # t=1: 0.9 - 0.9 * 1^3 = 0; t=6: 0.9 - 0.9 * 0.5^3 = 0.7875.
    self.assertEqual(sched(0), (False, 0.0))
    self.assertEqual(sched(1), (True, 0.0))
    self.assertEqual(sched(6), (True, 0.7875))
    self.assertAlmostEqual(sched(11)[1], 0.9)
    self.assertAlmostEqual(sched(30)[1], 0.9)

  def test_frequency_prunes_every_f_rounds(self):
    sched = schedules.FedSparsifySchedule(0.9, 20, sparsify_frequency=5)
    self.assertEqual([t for t in range(21) if sched(t)[0]], [5, 10, 15, 20])
    self.assertEqual(sched.sparsity(7), sched.sparsity(5))

  def test_one_shot(self):
    sched = schedules.FedSparsifySchedule(0.9, 10, initial_sparsity=0.9)
    self.assertEqual(sched.sparsity(0), 0.0)
    self.assertEqual({sched.sparsity(t) for t in range(1, 11)}, {0.9})

  def test_monotone_and_config_round_trip(self):
    sched = schedules.FedSparsifySchedule(0.95, 40, sparsify_exponent=2.0)
    values = [sched.sparsity(t) for t in range(41)]
    self.assertEqual(values, sorted(values))
    again = schedules.FedSparsifySchedule.from_config(sched.get_config())
    self.assertEqual(again.get_config(), sched.get_config())

  @parameterized.named_parameters(
      ('final_high', dict(final_sparsity=1.0), r'final_sparsity must be in \[0, 1\), got 1.0'),
      ('final_negative', dict(final_sparsity=-0.1), r'final_sparsity must be in \[0, 1\), got -0.1'),
      ('initial_above_final', dict(initial_sparsity=0.95), r'initial_sparsity must be in \[0, final_sparsity=0.9\], got 0.95'),
      ('rounds', dict(total_rounds=1), 'total_rounds must be > sparsify_start_round=1, got 1'),
      ('start', dict(sparsify_start_round=-1), 'sparsify_start_round must be >= 0, got -1'),
      ('frequency', dict(sparsify_frequency=0), 'sparsify_frequency must be >= 1, got 0'),
      ('exponent', dict(sparsify_exponent=0.0), 'sparsify_exponent must be > 0, got 0.0'),
  )
  def test_bad_arguments(self, overrides, regex):
    kwargs = dict(final_sparsity=0.9, total_rounds=10)
    kwargs.update(overrides)
    with self.assertRaisesRegex(ValueError, regex):
      schedules.FedSparsifySchedule(**kwargs)
