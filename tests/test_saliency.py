"""SNIP and GraSP (learning/saliency.py) against NumPy.

The toy model is 2 -> 3 (tanh) -> 2 in float64 with softmax cross-entropy:
its gradient is written out by hand in NumPy (and checked against central
differences of the NumPy loss), and the Hessian-gradient product is the
central difference of that gradient along g, so no number below comes from
TensorFlow.
"""

import collections

import numpy as np
import tensorflow as tf

from tff_sparsify.learning import pruning
from tff_sparsify.learning import saliency

W1 = np.array([[0.4, -0.7, 0.2], [0.9, 0.1, -0.5]])
B1 = np.array([0.1, -0.2, 0.05])
W2 = np.array([[0.3, -0.6], [-0.8, 0.5], [0.7, 0.2]])
B2 = np.array([0.0, 0.1])
X = np.array([[1.0, -0.5], [0.3, 0.8], [-1.2, 0.4], [0.6, 0.6]])
Y = np.array([0, 1, 1, 0])


def np_loss(params):
  w1, b1, w2, b2 = params
  logits = np.tanh(X @ w1 + b1) @ w2 + b2
  logits = logits - logits.max(axis=1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return -np.mean(log_p[np.arange(len(Y)), Y])


def np_grad(params):
  """Backpropagation by hand: mean softmax cross-entropy of the toy model."""
  w1, b1, w2, b2 = params
  h = np.tanh(X @ w1 + b1)
  logits = h @ w2 + b2
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p /= p.sum(axis=1, keepdims=True)
  d_logits = (p - np.eye(2)[Y]) / len(Y)
  d_h = d_logits @ w2.T * (1 - h ** 2)
  return [X.T @ d_h, d_h.sum(0), h.T @ d_logits, d_logits.sum(0)]


def central_difference(f, params, direction, eps):
  plus = f([p + eps * d for p, d in zip(params, direction)])
  minus = f([p - eps * d for p, d in zip(params, direction)])
  if isinstance(plus, list):
    return [(a - b) / (2 * eps) for a, b in zip(plus, minus)]
  return (plus - minus) / (2 * eps)


def toy_model():
  tf.keras.backend.set_floatx('float64')
  try:
    model = tf.keras.Sequential([
        tf.keras.layers.Dense(3, activation='tanh', input_shape=(2,)),
        tf.keras.layers.Dense(2)])
    model = pruning.wrap_for_pruning(model)
  finally:
    tf.keras.backend.set_floatx('float32')
  kernels = pruning.prunable_weights(model)
  biases = [v for v in model.trainable_variables if 'bias' in v.name]
  for var, value in zip(kernels + biases, [W1, W2, B1, B2]):
    var.assign(value)
  return model


def loss_fn():
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class ReferenceTest(tf.test.TestCase):
  """The NumPy reference itself: its gradient is the loss's derivative."""

  def test_hand_gradient_matches_central_differences(self):
    params = [W1, B1, W2, B2]
    grad = np_grad(params)
    rng = np.random.default_rng(0)
    for _ in range(3):
      direction = [rng.normal(size=p.shape) for p in params]
      expected = sum(np.sum(g * d) for g, d in zip(grad, direction))
      self.assertAllClose(central_difference(np_loss, params, direction, 1e-6), expected,
                          atol=1e-8)


class ScoresTest(tf.test.TestCase):

  def test_snip_is_abs_gradient_times_weight(self):
    g_w1, _, g_w2, _ = np_grad([W1, B1, W2, B2])
    scores = saliency.snip_scores(toy_model(), loss_fn(), X, Y)
    self.assertAllClose(scores[0], np.abs(g_w1 * W1), atol=1e-10)
    self.assertAllClose(scores[1], np.abs(g_w2 * W2), atol=1e-10)

  def test_grasp_is_minus_weight_times_hessian_gradient(self):
    params = [W1, B1, W2, B2]
    g = np_grad(params)  # Over all weights, biases included (GraSP's g).
    hg = central_difference(np_grad, params, g, 1e-5)
    product = saliency.hessian_gradient_product(toy_model(), loss_fn(), X, Y)
    by_shape = {p.shape: h for p, h in zip(params, hg)}
    for tf_value in product:  # Shapes are distinct: (2, 3), (3,), (3, 2), (2,).
      self.assertAllClose(tf_value, by_shape[tuple(tf_value.shape)], atol=1e-8)
    scores = saliency.grasp_scores(toy_model(), loss_fn(), X, Y)
    self.assertAllClose(scores[0], -W1 * hg[0], atol=1e-8)
    self.assertAllClose(scores[1], -W2 * hg[2], atol=1e-8)
    # Not the SNIP ranking: the toy is small enough to tell them apart.
    grasp_masks = saliency.masks_from_scores(scores, 0.5, 'grasp')
    snip_masks = saliency.masks_from_scores(
        saliency.snip_scores(toy_model(), loss_fn(), X, Y), 0.5, 'snip')
    self.assertNotAllClose(np.concatenate([m.ravel() for m in grasp_masks]),
                           np.concatenate([m.ravel() for m in snip_masks]))


class MasksTest(tf.test.TestCase):

  def test_snip_keeps_the_highest_and_grasp_the_lowest(self):
    scores = [np.array([[0.5, -2.0], [3.0, 0.1]]), np.array([1.0, -0.3, 0.2])]
    # 7 scores, round(0.6 * 7) = 4 pruned.
    snip = saliency.masks_from_scores(scores, 0.6, 'snip')
    self.assertAllEqual(snip[0], [[1, 0], [1, 0]])
    self.assertAllEqual(snip[1], [1, 0, 0])
    grasp = saliency.masks_from_scores(scores, 0.6, 'grasp')
    self.assertAllEqual(grasp[0], [[0, 1], [0, 1]])
    self.assertAllEqual(grasp[1], [0, 1, 0])
    # Ties: the earlier position is pruned first; the count is exact.
    tied = [np.zeros((2, 2)), np.zeros(2)]
    tied_masks = saliency.masks_from_scores(tied, 0.5, 'snip')
    self.assertAllEqual(tied_masks[0], [[0, 0], [0, 1]])
    self.assertAllEqual(tied_masks[1], [1, 1])

  def test_initial_masks_count_and_bad_method(self):
    masks = saliency.initial_masks(toy_model(), loss_fn(), X, Y, method='snip', sparsity=0.5)
    self.assertEqual(sum(int(np.sum(m == 0)) for m in masks), 6)  # round(0.5 * 12)
    with self.assertRaisesRegex(ValueError, "method must be one of .*'synflow'"):
      saliency.initial_masks(toy_model(), loss_fn(), X, Y, method='synflow', sparsity=0.5)

  def test_scoring_batch_is_the_seeded_clients_first_examples(self):
    import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
    ids = [f'{i:04d}' for i in range(5)]

    def dataset_fn(cid):
      k = tf.strings.to_number(cid, tf.int32)
      return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
          x=tf.fill([40, 2, 2], tf.cast(k * 50, tf.uint8)),
          y=tf.fill([40], k)))

    client_data = tff.simulation.datasets.ClientData.from_clients_and_tf_fn(ids, dataset_fn)
    drawn = saliency.scoring_client(5, 1990)
    self.assertEqual(drawn, int(np.random.default_rng(1990).integers(5)))
    x, y = saliency.scoring_batch(client_data, 1990, 32)
    self.assertAllEqual(y, [drawn] * 32)
    self.assertAllClose(x, np.full((32, 2, 2), drawn * 50 / 255.0, np.float32))


class PruneFLInitialPruningTest(tf.test.TestCase):
  """`prunefl.initial_masks` against NumPy on a linear model (MSE, no bias)."""

  def test_reconfigurations_against_numpy(self):
    from tff_sparsify.learning.algorithms import prunefl  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(4)
    w0 = rng.normal(size=(5, 4)).astype(np.float32)
    x = rng.normal(size=(12, 5)).astype(np.float32)
    y = rng.normal(size=(12, 4)).astype(np.float32)
    lr, batch, sparsity, ratio = 0.05, 4, 0.6, 0.25

    def np_masks(reconfigurations):
      w, mask = w0.astype(np.float64), np.ones_like(w0)
      for r in range(reconfigurations):
        squares = np.zeros_like(w)
        for start in range(0, len(x), batch):
          xb, yb = x[start:start + batch], y[start:start + batch]
          grad = 2.0 / yb.size * xb.T @ (xb @ w - yb)
          squares += grad ** 2
          w = (w - lr * grad) * mask
        flat = np.abs(w).ravel()
        if r == 0:  # Magnitude: round(0.6 * 20) = 12 pruned.
          new = np.ones(w.size, np.float32)
          new[np.argsort(flat, kind='stable')[:12]] = 0.0
        else:  # k = round(0.25 * 8) = 2 swapped.
          kept = mask.ravel() != 0
          new = mask.ravel().copy()
          new[np.flatnonzero(kept)[np.argsort(flat[kept], kind='stable')[:2]]] = 0.0
          new[np.flatnonzero(~kept)[np.argsort(-squares.ravel()[~kept], kind='stable')[:2]]] = 1.0
        mask = new.reshape(w.shape)
        w = w * mask
      return mask

    for reconfigurations in (1, 3):
      model = pruning.wrap_for_pruning(tf.keras.Sequential([tf.keras.layers.Dense(
          4, use_bias=False, input_shape=(5,),
          kernel_initializer=tf.keras.initializers.Constant(w0))]))
      masks = prunefl.initial_masks(
          model, tf.keras.losses.MeanSquaredError(), x, y, sparsity=sparsity,
          reconfigurations=reconfigurations, ratio=ratio, learning_rate=lr, batch_size=batch)
      self.assertAllEqual(masks[0], np_masks(reconfigurations), msg=str(reconfigurations))
      self.assertEqual(int(np.sum(masks[0] == 0)), 12)
    self.assertNotAllEqual(np_masks(1), np_masks(3))


class RegistryTest(tf.test.TestCase):

  def test_process_starts_from_the_seeded_clients_masks(self):
    """`build_from_config` scores the initial model on client `scoring_client(seed)`."""
    # pylint: disable=g-import-not-at-top
    from tff_sparsify import config as config_lib
    from tff_sparsify.learning import pruning_layout as layout_lib
    from tff_sparsify.learning import models
    from tff_sparsify.learning import registry
    from tff_sparsify.simulation import run_data as data
    from tff_sparsify.simulation import execution
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 10).astype(np.int64)
    client_data = data.to_client_data(images, labels, np.split(np.arange(60), 6))
    config = config_lib.TrainConfig(algorithm='snip', final_sparsity=0.95, num_clients=6,
                                    clients_per_round=2, total_rounds=2, client_batch_size=8,
                                    seed=11, partition='iid')
    process, keras_model_fn = registry.build_from_config(config, client_data)
    with execution.local_cpp_execution_context():
      weights = process.get_model_weights(process.initialize())
    layout = layout_lib.layout_from_model_fn(
        models.build_model_fn('fashion_mnist', seed=11, prunable=True))
    # Independently: the drawn client's first 8 images, scored on a fresh model.
    k = saliency.scoring_client(6, 11)
    x = images[10 * k:10 * k + 8].astype(np.float32) / 255.0
    y = labels[10 * k:10 * k + 8]
    expected = saliency.initial_masks(keras_model_fn(), models.loss_fn(), x, y,
                                      method='snip', sparsity=0.95)
    found = layout.mask_list(weights.non_trainable)
    for e, f in zip(expected, found):
      self.assertAllEqual(f, e)
    kernels = layout.prunable_list(weights.trainable)
    n = sum(k.size for k in kernels)
    self.assertEqual(sum(int(np.sum(k == 0)) for k in kernels), int(np.floor(0.95 * n + 0.5)))
    with self.assertRaisesRegex(ValueError, '--algorithm=snip scores the initial model on '
                                'client data: pass client_data'):
      registry.build_from_config(config)


if __name__ == '__main__':
  tf.test.main()
