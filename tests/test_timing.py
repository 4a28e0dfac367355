"""Tests for the timing loop the benchmarks share (`inference.time_in_turn`)."""

import numpy as np
import tensorflow as tf

from tff_sparsify.deploy import export_configs as configs
from tff_sparsify.deploy import inference


class TimeInTurnTest(tf.test.TestCase):

  def test_repeats_go_round_the_cases_and_warm_up_once(self):
    calls = []
    batch = np.zeros((4, 2), np.float32)
    runner = lambda name: (lambda b: calls.append(name))
    logged = []
    found = inference.time_in_turn(
        [('a', runner('a'), batch), ('b', 'b: cannot run here', batch), ('c', runner('c'), batch)],
        configs.TimingConfig(repeats=3, budget_seconds=0.01, warmup_seconds=0.05),
        log=lambda repeat, i, t: logged.append((repeat, i)))
    self.assertEqual(logged, [(r, i) for r in range(3) for i in range(3)])
    # Each case's calls form one run per repeat, a before c within a repeat.
    runs = [calls[0]]
    for name in calls[1:]:
      if name != runs[-1]:
        runs.append(name)
    self.assertEqual(runs, ['a', 'c'] * 3)
    self.assertLen(found, 3)
    self.assertTrue(all(t.unavailable == 'b: cannot run here' for t in found[1]))
    self.assertTrue(all(t.batch_size == 4 and t.iterations >= 1 for t in found[0] + found[2]))
    # The warm-up (0.05 s of calls) lands in the first repeat's run only:
    # each later run is at most its budget plus one call.
    per_run = {}
    index = 0
    for name in runs:
      n = 0
      while index < len(calls) and calls[index] == name:
        n += 1
        index += 1
      per_run.setdefault(name, []).append(n)
    for name in ('a', 'c'):
      first, *later = per_run[name]
      timed = [t.iterations for t in found['ac'.index(name) * 2]]
      self.assertGreater(first, timed[0])  # Warm-up calls were made.
      self.assertEqual(later, [t + 1 for t in timed[1:]])  # One untimed call each.

  def test_median_timing_is_the_middle_throughput(self):
    timings = [inference.Timing('x', 1, items_per_second=v) for v in (5.0, 1.0, 3.0)]
    self.assertEqual(inference.median_timing(timings).items_per_second, 3.0)

  def test_each_timing_option_is_checked_by_its_config(self):
    for field, value, reason in [
        ('repeats', 0, 'must be >= 1'), ('repeats', 1.5, 'must be >= 1'),
        ('budget_seconds', 0, 'must be > 0'), ('budget_seconds', float('nan'), 'must be > 0'),
        ('warmup_seconds', -1, 'must be >= 0'), ('batch_size', 0, 'must be >= 1'),
        ('num_threads', 0, 'must be >= 1')]:
      with self.assertRaises(configs.ConfigError) as raised:
        configs.TimingConfig(**{field: value})
      self.assertEqual((raised.exception.field, raised.exception.reason), (field, reason))
      self.assertIn(f'{field}={value!r}', str(raised.exception))

  def test_each_export_option_is_checked_by_its_config(self):
    self.assertEqual(configs.ExportConfig(formats='onnx,tflite').formats, ('onnx', 'tflite'))
    for field, value, reason in [
        ('formats', ('tflite',), 'must list formats among onnx,tflite and include onnx'),
        ('formats', ('onnx', 'coreml'), 'must list formats among onnx,tflite'),
        ('opset', 8, 'must be in [9, 18]'), ('opset', 19, 'must be in [9, 18]'),
        ('compact', 'yes', 'must be True or False'),
        ('calibration_examples', 0, 'must be >= 1'),
        ('max_int8_accuracy_drop', 1.5, 'must be in [0, 1]'),
        ('max_int8_accuracy_drop', -0.1, 'must be in [0, 1]'),
        ('tflite_batch_size', 0, 'must be >= 1')]:
      with self.assertRaises(configs.ConfigError) as raised:
        configs.ExportConfig(**{field: value})
      self.assertEqual(raised.exception.field, field)
      self.assertStartsWith(raised.exception.reason, reason)
    self.assertIsNone(configs.ExportConfig(max_int8_accuracy_drop=None).max_int8_accuracy_drop)


if __name__ == '__main__':
  tf.test.main()
