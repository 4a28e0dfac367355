"""Tests for tff_sparsify.core.masks on small hand-computed fixtures."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tff_sparsify.core import masks


class MagnitudeMasksTest(tf.test.TestCase, parameterized.TestCase):

  def test_global_ranking_across_tensors(self):
    weights = [np.array([[0.5, -0.1], [0.3, 2.0]]), np.array([-0.2, 0.05, 1.0])]
    result = masks.magnitude_masks(weights, 3 / 7)
    # Smallest three |w|: 0.05, 0.1, 0.2 (in both tensors).
    self.assertAllEqual(result[0], [[1, 0], [1, 1]])
    self.assertAllEqual(result[1], [0, 0, 1])

  def test_ties_broken_by_position(self):
    result = masks.magnitude_masks([np.ones(4), np.ones(2)], 0.5)
    self.assertAllEqual(result[0], [0, 0, 0, 1])
    self.assertAllEqual(result[1], [1, 1])

  @parameterized.parameters(0.0, 0.1, 0.5, 0.8, 0.9, 0.95, 0.99)
  def test_exact_zero_count(self, s):
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(31, 17)), rng.normal(size=(17,)), rng.normal(size=(17, 5))]
    n = sum(w.size for w in weights)
    pruned = masks.apply_masks([tf.constant(w) for w in weights], masks.magnitude_masks(weights, s))
    zeros = sum(int(np.sum(np.asarray(p) == 0)) for p in pruned)
    self.assertEqual(zeros, int(np.floor(s * n + 0.5)))
    self.assertAllClose(masks.sparsity(pruned), zeros / n)

  def test_pruned_weights_stay_pruned_as_sparsity_grows(self):
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(50,))]
    first = np.asarray(masks.magnitude_masks(weights, 0.3)[0])
    pruned = np.asarray(masks.apply_masks(weights, [first])[0])
    # The survivors change unevenly (some to tiny magnitudes, never zero), so
    # the ranking among them changes; the zeros still rank first.
    later = pruned * rng.uniform(1e-6, 5.0, size=50)
    second = np.asarray(masks.magnitude_masks([later], 0.6)[0])
    expected = np.ones(50)
    expected[np.argsort(np.abs(later), kind='stable')[:30]] = 0  # floor(0.6 * 50 + 0.5)
    self.assertAllEqual(second, expected)
    self.assertTrue(np.all(second[first == 0] == 0))
    self.assertFalse(np.array_equal(np.argsort(np.abs(later)), np.argsort(np.abs(pruned))))


  @parameterized.parameters(0.0, 0.3, 0.5, 0.9, 0.999, 1.0)
  def test_equals_a_stable_sort_with_many_ties(self, s):
    rng = np.random.default_rng(int(s * 1000))
    # Few distinct magnitudes, zeros and -0.0 among them: ties everywhere.
    weights = [np.round(rng.normal(size=(40, 30)), 1).astype(np.float32),
               np.round(rng.normal(size=(333,)), 1).astype(np.float32) * -1.0]
    flat = np.abs(np.concatenate([w.ravel() for w in weights]))
    k = int(np.floor(s * flat.size + 0.5))
    expected = np.ones(flat.size, np.float32)
    expected[np.argsort(flat, kind='stable')[:k]] = 0
    got = np.concatenate([np.ravel(m) for m in masks.magnitude_masks(weights, s)])
    self.assertAllEqual(got, expected)

  def test_order_keys_follow_float_order(self):
    x = np.array([3.0, -np.inf, -2.5, -0.0, 0.0, 1e-45, -1e-45, np.inf, -1.0, 7.0],
                 np.float32)
    keys = np.asarray(masks._order_keys(tf.constant(x)))
    self.assertAllEqual(np.argsort(keys, kind='stable'), np.argsort(x, kind='stable'))
    self.assertLess(keys[3], keys[4])  # -0.0 ranks before +0.0.


class ReadjustedMasksTest(tf.test.TestCase):
  """PruneFL's readjustment on hand-made vectors."""

  def test_swaps_the_smallest_kept_for_the_most_important_pruned(self):
    w = [np.array([[0.5, -2.0], [0.0, 0.1]], np.float32), np.array([1.0, 0.0, -0.3], np.float32)]
    m = [np.array([[1, 1], [0, 1]], np.float32), np.array([1, 0, 1], np.float32)]
    importance = [np.array([[9, 9], [4, 9]], np.float32), np.array([9, 7, 9], np.float32)]
    # 5 kept: k = round(0.2 * 5) = 1: 0.1 (the smallest |w| kept) goes, the
    # pruned position of importance 7 comes back.
    new = masks.readjusted_masks(w, m, importance, 0.2)
    self.assertAllEqual(new[0], [[1, 1], [0, 0]])
    self.assertAllEqual(new[1], [1, 1, 1])
    # k = round(0.4 * 5) = 2 = every pruned position: -0.3 goes too.
    new = masks.readjusted_masks(w, m, importance, 0.4)
    self.assertAllEqual(new[0], [[1, 1], [1, 0]])
    self.assertAllEqual(new[1], [1, 1, 0])
    # k = round(0.9 * 5) = 4, capped at the 2 pruned positions: the count kept stays 5.
    new = masks.readjusted_masks(w, m, importance, 0.9)
    self.assertEqual(sum(int(np.sum(x)) for x in new), 5)
    # Ratio 0: nothing moves.
    new = masks.readjusted_masks(w, m, importance, 0.0)
    self.assertAllEqual(new[0], m[0])
    self.assertAllEqual(new[1], m[1])

  def test_ties_go_to_the_earlier_position(self):
    w = [np.array([1.0, 1.0, 1.0, 0.0, 0.0], np.float32)]
    m = [np.array([1, 1, 1, 0, 0], np.float32)]
    importance = [np.array([0.0, 0.0, 0.0, 5.0, 5.0], np.float32)]
    new = masks.readjusted_masks(w, m, importance, 0.3)  # k = round(0.9) = 1
    self.assertAllEqual(new[0], [0, 1, 1, 1, 0])


class RandomMasksTest(tf.test.TestCase):

  def test_random_keeps_pruned_and_counts(self):
    current = [np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 0], np.float32)]
    result = masks.random_masks(current, 0.5, seed=[1, 2])
    self.assertEqual(int(np.sum(np.asarray(result[0]) == 0)), 5)
    self.assertEqual(float(result[0][0]), 0.0)
    self.assertEqual(float(result[0][9]), 0.0)
    again = masks.random_masks(current, 0.5, seed=[1, 2])
    self.assertAllEqual(result[0], again[0])

  def test_random_never_regrows_below_current_sparsity(self):
    current = [np.array([0, 0, 0, 1, 1], np.float32), np.array([0, 1], np.float32)]
    result = masks.random_masks(current, 0.25, seed=[3, 4])  # Target 2 of 7 zeros.
    self.assertAllEqual(result[0], [0, 0, 0, 1, 1])
    self.assertAllEqual(result[1], [0, 1])


def _majority_vote(client_masks):
  """Eq. 2 through `merge_votes`, from the clients' masks (votes summed here)."""
  votes = [np.sum(np.stack(per_client), axis=0) for per_client in zip(*client_masks)]
  return masks.merge_votes(votes, len(client_masks), 'majority_vote')[0]


class MajorityVoteTest(tf.test.TestCase):

  def test_three_clients(self):
    client_masks = [[np.array([1, 1, 0, 0])], [np.array([1, 0, 1, 0])], [np.array([1, 0, 0, 1])]]
    # Kept counts 3, 1, 1, 1 of 3: only the first reaches half.
    self.assertAllEqual(_majority_vote(client_masks)[0], [1, 0, 0, 0])

  def test_tie_at_exactly_half_keeps(self):
    client_masks = [[np.array([1, 0, 1])], [np.array([0, 0, 1])]]
    self.assertAllEqual(_majority_vote(client_masks)[0], [1, 0, 1])

  def test_four_clients_two_tensors(self):
    a = [np.array([[1, 1], [0, 0]]), np.array([1, 0])]
    b = [np.array([[1, 0], [1, 0]]), np.array([1, 0])]
    c = [np.array([[0, 0], [1, 0]]), np.array([0, 1])]
    d = [np.array([[0, 1], [1, 0]]), np.array([0, 0])]
    merged = _majority_vote([a, b, c, d])
    self.assertAllEqual(merged[0], [[1, 1], [1, 0]])  # counts 2,2,3,0 of 4
    self.assertAllEqual(merged[1], [1, 0])  # counts 2,1 of 4


class ComputePlacementTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(0.0, 0.5, 0.8, 0.9, 0.95, 0.99, 1.0)
  def test_exact_total_and_minimum_multiply_adds(self, s):
    from scipy import optimize  # pylint: disable=g-import-not-at-top
    sizes = [1728, 36864, 73728, 147456, 2048, 5120]
    costs = [1024.0, 1024.0, 256.0, 64.0, 1.0, 1.0]
    found = masks.compute_layer_sparsities(sizes, costs, s, floor=0.2)
    kept = [n - int(masks.num_to_prune(x, n)) for x, n in zip(found, sizes)]
    n = sum(sizes)
    # The total up to one weight per layer of rounding.
    self.assertAllClose(sum(kept), n - int(np.floor(s * n + 0.5)), atol=len(sizes) / 2)
    floor = 0.2 * (1 - s)
    for k, size in zip(kept, sizes):
      self.assertGreaterEqual(k, int(floor * size) - 1)
      self.assertLessEqual(k, size)
    # The linear programme it solves: fewest multiply-adds at that count.
    best = optimize.linprog(
        np.array(costs) * sizes, A_eq=[sizes], b_eq=[sum(kept)],
        bounds=[(min(floor, 1.0), 1.0)] * len(sizes))
    self.assertTrue(best.success)
    self.assertLessEqual(sum(c * k for c, k in zip(costs, kept)),
                         best.fun + max(costs) * len(sizes))

  def test_equal_costs_or_floor_one_is_uniform(self):
    sizes = [100, 300, 600]
    for costs, floor in (([1.0, 1.0, 1.0], 0.2), ([9.0, 3.0, 1.0], 1.0)):
      self.assertAllClose(masks.compute_layer_sparsities(sizes, costs, 0.9, floor),
                          [0.9, 0.9, 0.9])

  def test_cheap_layers_fill_first(self):
    # Keep 100 of 1000; floors 0.5 * 0.1 of each size (5 + 45), the other 50
    # to the cheapest layer.
    found = masks.compute_layer_sparsities([100, 900], [50.0, 1.0], 0.9, floor=0.5)
    self.assertAllClose(found, [1 - 5 / 100, 1 - 95 / 900])
    # The same inside a graph, from a tensor sparsity (as TFF runs it).
    with tf.Graph().as_default():
      s = tf.constant(0.9, tf.float64)
      graph_found = masks.compute_layer_sparsities([100, 900], [50.0, 1.0], s, floor=0.5)
      with tf.compat.v1.Session() as session:
        self.assertAllClose(session.run(graph_found), [1 - 5 / 100, 1 - 95 / 900])

  def test_placed_masks_compute(self):
    rng = np.random.default_rng(2)
    weights = [rng.normal(size=(3, 3, 2, 8)), rng.normal(size=(64, 10))]
    result = masks.placed_magnitude_masks(weights, 0.5, 'compute', costs=[100.0, 1.0])
    zeros = [int(np.sum(np.asarray(m) == 0)) for m in result]
    # Keep 392 of 784: 20% of the uniform density everywhere (14.4 + 64),
    # the other 313.6 to the Dense kernel, the cheap one: it keeps 377.6.
    self.assertEqual(zeros, [144 - 14, 640 - 378])
    with self.assertRaisesRegex(ValueError, "'compute' needs the layers' costs"):
      masks.placed_magnitude_masks(weights, 0.5, 'compute')

  def test_masks_follow_the_sparsities(self):
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(3, 3, 2, 4)), rng.normal(size=(40, 10))]
    result = masks.sparsity_masks(weights, [0.75, 0.5])
    self.assertEqual(int(np.sum(np.asarray(result[0]) == 0)), 54)
    self.assertEqual(int(np.sum(np.asarray(result[1]) == 0)), 200)
    # Per-tensor ranking: the largest |w| of each tensor are the ones kept.
    kept = np.abs(weights[1])[np.asarray(result[1]) > 0]
    self.assertGreaterEqual(kept.min(), np.median(np.abs(weights[1])))

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, r'floor must be in \(0, 1\], got 0'):
      masks.compute_layer_sparsities([10], [1.0], 0.5, floor=0)
    with self.assertRaisesRegex(ValueError, r'sparsity must be in \[0, 1\], got 1.5'):
      masks.compute_layer_sparsities([10], [1.0], 1.5)
    with self.assertRaisesRegex(ValueError, 'sizes and costs must be'):
      masks.compute_layer_sparsities([10, 20], [1.0], 0.5)
    with self.assertRaisesRegex(ValueError, '2 weights but 1 sparsities'):
      masks.sparsity_masks([np.ones(3), np.ones(3)], [0.5])
