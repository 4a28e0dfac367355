"""Tests for the timing loop the benchmarks share (`inference.time_in_turn`)."""

import numpy as np
import tensorflow as tf

from tff_sparsify.deploy import inference


class TimeInTurnTest(tf.test.TestCase):

  def test_repeats_go_round_the_cases_and_warm_up_once(self):
    calls = []
    batch = np.zeros((4, 2), np.float32)
    runner = lambda name: (lambda b: calls.append(name))
    logged = []
    found = inference.time_in_turn(
        [('a', runner('a'), batch), ('b', 'b: cannot run here', batch), ('c', runner('c'), batch)],
        repeats=3, budget_seconds=0.01, warmup_seconds=0.05,
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

  def test_repeats_must_be_positive(self):
    with self.assertRaisesRegex(ValueError, 'repeats must be >= 1, got 0'):
      inference.time_in_turn([], repeats=0, budget_seconds=1, warmup_seconds=0)


if __name__ == '__main__':
  tf.test.main()
