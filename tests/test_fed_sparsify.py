"""Tests for FedSparsify as a TFF learning process (fed_sparsify.py and parts).

The linear-model tests compare the process with a NumPy re-implementation of
Algorithm 1 (client SGD under the mask, weighted average, global magnitude
purge or majority vote), so every number is computed independently of TF.
"""

import collections

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_model_optimization as tfmot

from tff_sparsify import validation
from tff_sparsify.compression import aggregators as compression_aggregators
from tff_sparsify.compression import codecs
from tff_sparsify.compression import distributors
from tff_sparsify.core import masks
from tff_sparsify.core import schedules
from tff_sparsify.learning import message_aggregation
from tff_sparsify.learning import configs
from tff_sparsify.learning import fed_sparsify
from tff_sparsify.learning import pruning_layout as layout_lib
from tff_sparsify.learning import models
from tff_sparsify.learning import pruning
from tff_sparsify.learning import registry
from tff_sparsify.learning.algorithms import base
from tff_sparsify.learning.algorithms import fedsparsify_global
from tff_sparsify.learning.algorithms import fedprox
from tff_sparsify.learning.algorithms import fedsparsify_local
from tff_sparsify.learning.algorithms import prunefl
from tff_sparsify.simulation import execution

LR = 0.1
BATCH = 2
LINEAR_SPEC = collections.OrderedDict(
    x=tf.TensorSpec((None, 3), tf.float32), y=tf.TensorSpec((None, 2), tf.float32))
W0 = np.array([[0.5, -0.3], [0.2, 0.8], [-0.6, 0.1]], np.float32)
_COMPRESSION = ('client_message_prune_rate', 'server_message_prune_rate', 'quantize_bits',
                'quantizer', 'quantize_threshold', 'message_prune_target')


def build(model_fn, client_optimizer_fn, server_optimizer_fn=None, *, schedule, **options):
  """The process of a `FedSparsifyConfig` made from `options` (`registry.build_process`)."""
  compression = configs.CompressionConfig(
      **{k: options.pop(k) for k in _COMPRESSION if k in options})
  config = configs.FedSparsifyConfig(schedule=schedule, compression=compression, **options)
  return registry.build_process(
      model_fn, config, client_optimizer_fn=client_optimizer_fn,
      server_optimizer_fn=server_optimizer_fn)


def s_t(schedule: configs.ScheduleConfig, round_num: int) -> float:
  return schedules.FedSparsifySchedule(schedule).sparsity(round_num)


def linear_model_fn(wrap=True):
  def model_fn():
    keras_model = tf.keras.Sequential([tf.keras.layers.Dense(
        2, use_bias=False, input_shape=(3,),
        kernel_initializer=tf.keras.initializers.Constant(W0))])
    if wrap:
      keras_model = pruning.wrap_for_pruning(keras_model)
    return tff.learning.models.from_keras_model(
        keras_model, loss=tf.keras.losses.MeanSquaredError(), input_spec=LINEAR_SPEC)
  return model_fn


LINEAR_LAYOUT = layout_lib.layout_from_model_fn(linear_model_fn())


def linear_clients(sizes, seed=0, identical=False):
  rng = np.random.default_rng(seed)
  clients = []
  for n in sizes:
    if not identical or not clients:
      x = rng.normal(size=(n, 3)).astype(np.float32)
      y = rng.normal(size=(n, 2)).astype(np.float32)
    clients.append((x, y))
  return clients


def as_datasets(clients):
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(BATCH)
          for x, y in clients]


def np_purge(w, s):
  """Zeros the round(s * n) smallest |w|, ties to the earlier position."""
  k = int(np.floor(s * w.size + 0.5))
  mask = np.ones(w.size, np.float32)
  mask[np.argsort(np.abs(w).ravel(), kind='stable')[:k]] = 0.0
  return mask.reshape(w.shape)


def np_client(w, mask, x, y):
  w = w.astype(np.float64)
  for start in range(0, len(x), BATCH):
    xb, yb = x[start:start + BATCH], y[start:start + BATCH]
    grad = 2.0 / yb.size * xb.T @ (xb @ w - yb)
    w = (w - LR * grad * mask) * mask
  return w


def np_training_loss(w, mask, clients):
  """The clients' mean squared error over their local steps (TFF's `loss`)."""
  total, count = 0.0, 0
  for x, y in clients:
    w_k = w.astype(np.float64)
    for start in range(0, len(x), BATCH):
      xb, yb = x[start:start + BATCH], y[start:start + BATCH]
      total += np.mean((xb @ w_k - yb) ** 2) * len(xb)
      count += len(xb)
      w_k = np_client(w_k, mask, xb, yb)
  return total / count


def np_round(w, mask, clients, s, mode, client_rate=0.0, server_rate=0.0):
  """One round of Algorithm 1 on the linear model (server SGD, lr 1).

  `client_rate` / `server_rate`: message pruning of arXiv 2310.14693.
  Returns the new global weights and mask, and the bytes the clients upload:
  their weights inside the global mask they received (the server knows it);
  in local mode, their masks inside it, then their weights inside their own
  masks.
  """
  trained = [np_client(w, mask, x, y) for x, y in clients]
  sizes = np.array([len(x) for x, _ in clients], np.float64)
  uploaded = 0
  if mode == 'local':
    client_masks = [np_purge(t, s) * mask for t in trained]
    trained = [t * m for t, m in zip(trained, client_masks)]
    votes = np.sum(client_masks, axis=0)
    new_mask = (2 * votes >= len(clients)).astype(np.float32) * mask
    uploaded += sum(len(codecs.encode_mask(m[mask != 0], methods=codecs.METHODS))
                    for m in client_masks)
  trained = [t * np_purge(t, client_rate) for t in trained]
  # Local mode: the values inside the client's own mask, which went above.
  sent = client_masks if mode == 'local' else [mask] * len(trained)
  uploaded += sum(len(codecs.encode(t.astype(np.float32)[m != 0] + 0.0, methods=codecs.METHODS))
                  for t, m in zip(trained, sent))
  average = np.tensordot(sizes / sizes.sum(), np.stack(trained), 1)
  if mode == 'global':
    new_mask = np_purge(average * mask, s) * mask
  average = average * new_mask
  return average * np_purge(average, server_rate), new_mask, uploaded


def run_rounds(process, datasets, rounds):
  """Model weights and metrics after each round."""
  history = []
  with execution.local_cpp_execution_context():
    state = process.initialize()
    for _ in range(rounds):
      output = process.next(state, datasets)
      state = output.state
      history.append((process.get_model_weights(state), output.metrics))
  return history


class LinearModelTest(tf.test.TestCase, parameterized.TestCase):
  """The process against the NumPy Algorithm 1, round by round."""

  @parameterized.parameters(('global', 0.0, 0.0), ('local', 0.0, 0.0), ('global', 0.5, 0.7))
  def test_matches_numpy_algorithm(self, mode, client_rate, server_rate):
    schedule = configs.ScheduleConfig(0.5, 3, initial_sparsity=0.2)
    clients = linear_clients([4, 6, 2])
    process = build(
        linear_model_fn(), tff.learning.optimizers.build_sgdm(LR),
        schedule=schedule, mode=mode, client_message_prune_rate=client_rate,
        server_message_prune_rate=server_rate)
    history = run_rounds(process, as_datasets(clients), 3)
    w, mask = W0.astype(np.float64), np.ones_like(W0)
    for round_num, (weights, metrics) in enumerate(history, start=1):
      previous_w = w
      previous_mask = mask
      w, mask, uploaded = np_round(w, mask, clients, s_t(schedule, round_num), mode,
                                   client_rate, server_rate)
      self.assertAllClose(weights.trainable[0], w, atol=1e-6, msg=f'round {round_num}')
      self.assertAllEqual(LINEAR_LAYOUT.mask_list(weights.non_trainable)[0], mask,
                          msg=f'round {round_num}')
      finalizer = metrics['finalizer']
      self.assertEqual(finalizer['round_num'], round_num)
      self.assertAlmostEqual(finalizer['target_sparsity'], s_t(schedule, round_num), places=6)
      self.assertAlmostEqual(finalizer['sparsity'], np.mean(w == 0), places=6)
      if mode == 'global' and not server_rate:  # Exactly round(s_t * 6) zeros: 1, 3, 3.
        self.assertEqual(int(np.sum(weights.trainable[0] == 0)), [1, 3, 3][round_num - 1])
      if server_rate:  # round(0.7 * 6) = 4 zeros, of which round(s_t * 6) masked.
        self.assertEqual(int(np.sum(weights.trainable[0] == 0)), 4)
      # + 0.0 turns NumPy's -0.0 (from products) into the +0.0 the process sends.
      downloaded = len(codecs.encode((previous_w + 0.0).astype(np.float32), methods=codecs.METHODS))
      self.assertEqual(metrics['distributor']['bytes_downloaded'],
                       3 * downloaded)
      self.assertEqual(metrics['client_work']['communication']['bytes_uploaded'], uploaded,
                       msg=f'round {round_num}, {int(np.sum(previous_mask == 0))} masked')
    if mode == 'local':
      self.assertLess(history[1][1]['aggregator']['mask_agreement'], 1.0)

  def test_mask_fixed_at_initialization_matches_numpy(self, method='grasp'):
    """SNIP/GraSP: the initial weights carry the mask, which never changes.

    The NumPy round is FedAvg under that mask: with s = 0.5 its global purge
    keeps exactly the 3 weights the mask keeps (they are non-zero). SNIP and
    GraSP take the same path here (they differ only in the scores,
    `tests/test_saliency.py`), so one of them is run.
    """
    mask = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    schedule = configs.ScheduleConfig.one_shot(0.5, 3, sparsify_start_round=0)
    clients = linear_clients([4, 6, 2])
    process = registry.build_process(
        linear_model_fn(), configs.FedSparsifyConfig(schedule=schedule, pruning_method=method),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(LR), initial_masks=[mask])
    with execution.local_cpp_execution_context():
      initial = process.get_model_weights(process.initialize())
    self.assertAllEqual(initial.trainable[0], W0 * mask)
    self.assertAllEqual(LINEAR_LAYOUT.mask_list(initial.non_trainable)[0], mask)
    w = (W0 * mask).astype(np.float64)
    for round_num, (weights, metrics) in enumerate(
        run_rounds(process, as_datasets(clients), 3), start=1):
      w, np_mask, _ = np_round(w, mask, clients, 0.5, 'global')
      self.assertAllEqual(np_mask, mask)
      self.assertAllClose(weights.trainable[0], w, atol=1e-6, msg=f'round {round_num}')
      self.assertAllEqual(LINEAR_LAYOUT.mask_list(weights.non_trainable)[0], mask)
      self.assertAllEqual(weights.trainable[0] == 0, mask == 0)
      self.assertAlmostEqual(metrics['finalizer']['target_sparsity'], 0.5)
      self.assertEqual(metrics['finalizer']['nonzero_params'], 3)

  def test_prunefl_readjusts_from_the_clients_squared_gradients(self):
    """PruneFL against NumPy: FedAvg under the mask, readjusted at the end of rounds 1 and 3.

    Importance: per client, the squared gradients of its local steps
    (unmasked), summed over the steps and the clients. Readjustment at ratio
    0.5 * 0.5^(t / 1000), t = 2 and 4: k = round(1.5 * 0.5^(t / 1000)) = 1 of
    the 3 kept weights, the smallest |w|, swapped for the pruned position of
    largest importance, which starts at zero.
    """
    mask = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    clients = linear_clients([4, 6, 2], seed=3)
    config = prunefl.PruneFLConfig(
        schedule=configs.ScheduleConfig.one_shot(0.5, 4, sparsify_start_round=0),
        readjust_every=2, readjust_ratio=0.5)
    process = registry.build_process(
        linear_model_fn(), config, client_optimizer_fn=tff.learning.optimizers.build_sgdm(LR),
        initial_masks=[mask])
    w = (W0 * mask).astype(np.float64)
    changed = 0
    for round_num, (weights, metrics) in enumerate(
        run_rounds(process, as_datasets(clients), 4), start=1):
      per_client = []
      for x, y in clients:
        squares, w_k = np.zeros_like(w), w.copy()
        for start in range(0, len(x), BATCH):
          xb, yb = x[start:start + BATCH], y[start:start + BATCH]
          squares += (2.0 / yb.size * xb.T @ (xb @ w_k - yb)) ** 2
          w_k = np_client(w_k, mask, xb, yb)
        per_client.append(squares)
      importance = np.sum(per_client, axis=0)
      w, _, uploaded = np_round(w, mask, clients, 0.5, 'global')
      if round_num in (1, 3):
        k = int(np.floor(1.5 * 0.5 ** ((round_num + 1) / 1000) + 0.5))
        self.assertEqual(k, 1)
        flat_w, flat_imp, kept = np.abs(w).ravel(), importance.ravel(), mask.ravel() != 0
        drop = np.flatnonzero(kept)[np.argsort(flat_w[kept], kind='stable')[:k]]
        grow = np.flatnonzero(~kept)[np.argsort(-flat_imp[~kept], kind='stable')[:k]]
        new = mask.ravel().copy()
        new[drop], new[grow] = 0.0, 1.0
        changed += int(np.any(new.reshape(mask.shape) != mask))
        mask = new.reshape(mask.shape)
        w = w * mask
      self.assertAllEqual(LINEAR_LAYOUT.mask_list(weights.non_trainable)[0], mask,
                          msg=f'round {round_num}')
      self.assertAllClose(weights.trainable[0], w, atol=1e-6, msg=f'round {round_num}')
      self.assertEqual(metrics['finalizer']['pruned'], int(round_num in (1, 3)))
      # 3 pruned, and the weight regrown this round starts at zero.
      self.assertEqual(int(np.sum(weights.trainable[0] == 0)), 3 + int(round_num in (1, 3)))
      # Each client's importance goes up at readjustment rounds only (dense).
      if round_num in (1, 3):
        uploaded += sum(len(codecs.encode(p.astype(np.float32), methods=codecs.METHODS))
                        for p in per_client)
      self.assertEqual(metrics['client_work']['communication']['bytes_uploaded'], uploaded,
                       msg=f'round {round_num}')
    self.assertEqual(changed, 2)

  @parameterized.parameters(('global', 0.0), ('global', 0.5), ('local', 0.5))
  def test_sparse_quantizer(self, mode, final_sparsity):
    """Quantized broadcast and uploads, against NumPy (threshold 0: all tensors).

    The broadcast (nearest rounding) is reproduced exactly; an upload, rounded
    stochastically, is within one quantization step of the client's delta.
    """
    bits = 2
    clients = linear_clients([4, 6, 2], seed=3)
    schedule = configs.ScheduleConfig(final_sparsity, 3, initial_sparsity=final_sparsity)
    process = build(
        linear_model_fn(), tff.learning.optimizers.build_sgdm(LR), schedule=schedule,
        mode=mode, quantize_bits=bits, quantizer='sparse', quantize_threshold=0)
    history = run_rounds(process, as_datasets(clients), 3)
    w, mask = W0, np.ones_like(W0)
    sizes = np.array([len(x) for x, _ in clients], np.float64)
    for round_num, (weights, metrics) in enumerate(history, start=1):
      present = w != 0
      levels, lo, hi = codecs.quantize(w[present], bits)
      message = codecs.encode_quantized(levels, lo, hi, bits)
      received = np.zeros_like(w)
      received[present] = codecs.decode_quantized(message)
      self.assertLessEqual(len(set(received[present].tolist())), 2**bits)
      communication = metrics['client_work']['communication']
      self.assertEqual(metrics['distributor']['bytes_downloaded'], 3 * (
          len(codecs.encode_mask(present, methods=codecs.METHODS)) + len(message)))
      trained = [np_client(received, mask, x, y) for x, y in clients]
      # The clients train from what they received: their loss says so.
      self.assertAllClose(metrics['client_work']['train']['loss'],
                          np_training_loss(received, mask, clients), atol=1e-5)
      new = weights.trainable[0]
      new_mask = LINEAR_LAYOUT.mask_list(weights.non_trainable)[0]
      if mode == 'local':
        client_masks = [np_purge(t, final_sparsity) * mask for t in trained]
        trained = [t * m for t, m in zip(trained, client_masks)]
        sent = [m != 0 for m in client_masks]
        positions = sum(len(codecs.encode_mask(m[mask != 0], methods=codecs.METHODS))
                        for m in client_masks)
      else:
        sent, positions = [mask != 0] * 3, 0
      self.assertEqual(communication['bytes_uploaded'], positions + sum(
          codecs.quantized_values_size(int(m.sum()), bits) for m in sent))
      deltas = [received - t for t in trained]
      step = max(np.ptp(d[m]) for d, m in zip(deltas, sent)) / (2**bits - 1)
      # The server steps from its own full-precision model, not the broadcast.
      average = w - np.tensordot(sizes / sizes.sum(), np.stack(deltas), 1)
      kept = new_mask != 0
      self.assertAllClose(new[kept], average[kept], atol=step + 1e-6, rtol=0)
      self.assertGreater(np.abs(new[kept] - average[kept]).max(), 1e-6)  # Lossy.
      self.assertAllEqual(new[~kept], np.zeros(int((~kept).sum())))
      w, mask = new, new_mask
    if mode == 'global':
      self.assertEqual(int(np.sum(mask == 0)), round(final_sparsity * 6))
    else:
      self.assertGreater(int(np.sum(mask == 0)), 0)

  def test_no_pruning_equals_tff_fed_avg(self):
    clients = as_datasets(linear_clients([4, 6, 3], seed=1))
    optimizer = tff.learning.optimizers.build_sgdm(LR, momentum=0.9)
    server = tff.learning.optimizers.build_sgdm(1.0, momentum=0.5)
    ours = build(
        linear_model_fn(), optimizer, server, schedule=configs.ScheduleConfig(0.0, 3))
    fed_avg = tff.learning.algorithms.build_weighted_fed_avg(
        linear_model_fn(wrap=False), optimizer, server)
    for (a, _), (b, _) in zip(run_rounds(ours, clients, 3), run_rounds(fed_avg, clients, 3)):
      self.assertAllClose(a.trainable, b.trainable, atol=1e-6, rtol=0)
    self.assertNotAllClose(a.trainable[0], W0)

  def test_fedprox_proximal_term_acts(self):
    """FedProx through the registry against NumPy SGD on loss + mu/2 ||w - w_t||^2."""
    clients = linear_clients([4, 6, 2], seed=4)
    sizes = np.array([len(x) for x, _ in clients], np.float64)

    def np_fed_prox(proximal_gradient):
      trained = []
      for x, y in clients:
        w = W0.astype(np.float64)
        for start in range(0, len(x), BATCH):
          xb, yb = x[start:start + BATCH], y[start:start + BATCH]
          w = w - LR * (2.0 / yb.size * xb.T @ (xb @ w - yb) + proximal_gradient(w))
        trained.append(w)
      return np.tensordot(sizes / sizes.sum(), np.stack(trained), 1)

    results = {}
    for mu in (2.0, 1e-9):
      config = fedprox.FedProxConfig(client_learning_rate=LR, proximal_strength=mu)
      process = registry.get('fedprox').build(linear_model_fn(), config)
      (weights, _), = run_rounds(process, as_datasets(clients), 1)
      self.assertAllClose(weights.trainable[0], np_fed_prox(lambda w, mu=mu: mu * (w - W0)),
                          atol=1e-6, rtol=0, msg=f'mu={mu}')
      results[mu] = weights.trainable[0]
    self.assertGreater(np.abs(results[2.0] - results[1e-9]).max(), 1e-3)  # mu acts.
    # TFF 0.87's own FedProx steps the other way: mu (w_t - w) is added.
    tffs = tff.learning.algorithms.build_weighted_fed_prox(
        linear_model_fn(wrap=False), proximal_strength=2.0,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(LR))
    (weights, _), = run_rounds(tffs, as_datasets(clients), 1)
    self.assertAllClose(weights.trainable[0], np_fed_prox(lambda w: 2.0 * (W0 - w)),
                        atol=1e-6, rtol=0)

  def test_non_finite_client_updates_are_dropped(self):
    """A client whose update is not finite sends zero weight and zero delta;
    an aggregate that is still not finite is rejected by the server."""
    clients = linear_clients([4, 6, 2], seed=2)
    poisoned = [(x.copy(), y) for x, y in clients]
    poisoned[1][0][0, 0] = np.nan  # Client 1's first example: NaN loss, NaN delta.
    schedule = configs.ScheduleConfig(0.5, 3, initial_sparsity=0.5)
    process = build(linear_model_fn(), tff.learning.optimizers.build_sgdm(LR), schedule=schedule)
    (weights, metrics), = run_rounds(process, as_datasets(poisoned), 1)
    # NumPy: the weighted mean over clients 0 and 2 only, then the purge to 0.5.
    trained = {i: np_client(W0, np.ones_like(W0), x, y) for i, (x, y) in enumerate(clients)
               if i != 1}
    sizes = {i: len(clients[i][0]) for i in trained}
    average = W0 - sum(sizes[i] * (W0 - trained[i]) for i in trained) / sum(sizes.values())
    self.assertAllClose(weights.trainable[0], average * np_purge(average, 0.5), atol=1e-6)
    self.assertEqual(metrics['client_work']['train']['num_examples'], 4 + 2)
    self.assertEqual(metrics['finalizer']['update_non_finite'], 0)
    # Every client poisoned: zero total weight, the mean is 0/0, and TFF's
    # finalizer keeps the old model (then the purge of round 1 applies).
    for x, _ in poisoned:
      x[0, 0] = np.nan
    (weights, metrics), = run_rounds(process, as_datasets(poisoned), 1)
    self.assertEqual(metrics['finalizer']['update_non_finite'], 1)
    self.assertAllClose(weights.trainable[0], W0 * np_purge(W0, 0.5), atol=0)

  def test_encoded_broadcast_composes_with_tff_fed_avg(self):
    """TFF's own FedAvg with `model_distributor=` our broadcast: clients train
    from the 2-bit broadcast, the server steps from its full-precision model,
    and the distributor counts what it sent (NumPy codecs as the oracle)."""
    bits = 2
    clients = linear_clients([4, 6, 2], seed=3)
    model_fn = linear_model_fn(wrap=False)
    compression = configs.CompressionConfig(
        quantize_bits=bits, quantizer='sparse', quantize_threshold=0)
    with tf.Graph().as_default():
      weights_type = tff.learning.models.weights_type_from_model(model_fn())
    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, tff.learning.optimizers.build_sgdm(LR),
        model_distributor=distributors.build_encoded_broadcast_process(
            weights_type, compression))
    weights, metrics = run_rounds(process, as_datasets(clients), 1)[0]
    levels, lo, hi = codecs.quantize(W0, bits)
    message = codecs.encode_quantized(levels, lo, hi, bits)
    received = codecs.decode_quantized(message).reshape(W0.shape)
    self.assertNotAllClose(received, W0)
    self.assertEqual(metrics['distributor']['bytes_downloaded'], 3 * (
        len(codecs.encode_mask(W0 != 0, methods=codecs.METHODS)) + len(message)))
    sizes = np.array([len(x) for x, _ in clients], np.float64)
    deltas = [received - np_client(received, np.ones_like(W0), x, y) for x, y in clients]
    expected = W0 - np.tensordot(sizes / sizes.sum(), np.stack(deltas), 1)
    self.assertAllClose(weights.trainable[0], expected, atol=1e-6, rtol=0)
    # Without quantization it is TFF's broadcast, plus the lossless bytes.
    lossless = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, tff.learning.optimizers.build_sgdm(LR),
        model_distributor=distributors.build_encoded_broadcast_process(weights_type))
    plain = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, tff.learning.optimizers.build_sgdm(LR))
    (ours, ours_metrics), = run_rounds(lossless, as_datasets(clients), 1)
    (tffs, _), = run_rounds(plain, as_datasets(clients), 1)
    self.assertAllEqual(ours.trainable, tffs.trainable)
    self.assertEqual(ours_metrics['distributor']['bytes_downloaded'],
                     3 * len(codecs.encode(W0, methods=codecs.METHODS)))

  def test_sparse_delta_mean_composes_with_tff_fed_avg(self):
    """TFF's own FedAvg with `model_aggregator=` our top-k delta mean: the server
    steps with the mean of the pruned deltas and the aggregator counts their
    encodings (NumPy pruning and codecs as the oracle)."""
    clients = linear_clients([4, 6, 2], seed=5)
    process = tff.learning.algorithms.build_weighted_fed_avg(
        linear_model_fn(wrap=False), tff.learning.optimizers.build_sgdm(LR),
        model_aggregator=compression_aggregators.SparseDeltaMeanFactory(0.5))
    weights, metrics = run_rounds(process, as_datasets(clients), 1)[0]
    deltas = [(W0 - np_client(W0, np.ones_like(W0), x, y)).astype(np.float32)
              for x, y in clients]
    # np.where, not d * mask: a pruned position is +0.0 (-0.0 would be sent).
    pruned = [np.where(np_purge(d, 0.5) > 0, d, np.float32(0)) for d in deltas]
    self.assertTrue(all(np.count_nonzero(d) == 3 for d in pruned))
    sizes = np.array([len(x) for x, _ in clients], np.float64)
    expected = W0 - np.tensordot(sizes / sizes.sum(), np.stack(pruned), 1)
    self.assertAllClose(weights.trainable[0], expected, atol=1e-6, rtol=0)
    self.assertEqual(metrics['aggregator']['bytes_uploaded'],
                     sum(len(codecs.encode(d, methods=codecs.METHODS)) for d in pruned))

  def test_delta_target_is_the_delta_aggregator_under_fed_sparsify(self):
    """`message_prune_target='delta'`: FedSparsify-Global prunes under its mask
    while the aggregator prunes the update; the client work counts no upload."""
    clients = as_datasets(linear_clients([4, 6, 2], seed=5))
    schedule = configs.ScheduleConfig(0.5, 3, initial_sparsity=0.5)
    ours = build(linear_model_fn(), tff.learning.optimizers.build_sgdm(LR),
                 schedule=schedule, client_message_prune_rate=0.5,
                 message_prune_target='delta')
    composed = registry.build_process(
        linear_model_fn(), configs.FedSparsifyConfig(schedule=schedule),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(LR),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
        model_aggregator=compression_aggregators.SparseDeltaMeanFactory(0.5))
    model = run_rounds(ours, clients, 2)
    delta = run_rounds(composed, clients, 2)
    for (w, m), (w_ref, m_ref) in zip(model, delta):
      self.assertAllEqual(w.trainable, w_ref.trainable)
      self.assertEqual(m['aggregator']['bytes_uploaded'], m_ref['aggregator']['bytes_uploaded'])
      self.assertEqual(m['client_work']['communication']['bytes_uploaded'], 0)
    self.assertGreater(model[-1][1]['aggregator']['bytes_uploaded'], 0)
    # Pruning the model, not the delta, ends elsewhere.
    by_model = run_rounds(build(linear_model_fn(), tff.learning.optimizers.build_sgdm(LR),
                                schedule=schedule, client_message_prune_rate=0.5), clients, 2)
    self.assertNotAllClose(by_model[-1][0].trainable, model[-1][0].trainable)

  def test_local_with_identical_clients_equals_global(self):
    clients = as_datasets(linear_clients([4, 4, 4], identical=True))
    schedule = configs.ScheduleConfig(0.6, 3, initial_sparsity=0.3)
    runs = {}
    for mode in ('global', 'local'):
      process = build(
          linear_model_fn(), tff.learning.optimizers.build_sgdm(LR, momentum=0.5),
          schedule=schedule, mode=mode)
      runs[mode] = run_rounds(process, clients, 3)
    for (g, _), (l, metrics) in zip(runs['global'], runs['local']):
      self.assertAllClose(g.trainable, l.trainable, atol=1e-6)
      self.assertAllEqual(LINEAR_LAYOUT.mask_list(g.non_trainable),
                          LINEAR_LAYOUT.mask_list(l.non_trainable))
      self.assertEqual(metrics['aggregator']['mask_agreement'], 1.0)


def fc_model_fn():
  def keras_model_fn():
    tf.keras.utils.set_random_seed(7)
    return pruning.wrap_for_pruning(tf.keras.Sequential([
        tf.keras.layers.InputLayer((28, 28)), tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(16, activation='relu'), tf.keras.layers.Dense(10)]))
  return models.build_model_fn('fashion_mnist', keras_model_fn=keras_model_fn)


def image_clients(num_clients=3, n=12, seed=0):
  rng = np.random.default_rng(seed)
  return [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
      x=rng.random((n, 28, 28), dtype=np.float32),
      y=rng.integers(0, 10, n).astype(np.int32))).batch(4)
          for _ in range(num_clients)]


class MultiLayerTest(tf.test.TestCase, parameterized.TestCase):
  """Zero counts, no regrowth and measurements on a two-layer ReLU net."""

  @parameterized.named_parameters(
      ('global', dict(mode='global')),
      ('local', dict(mode='local')),
      ('random', dict(pruning_method='random', seed=5)),
  )
  def test_exact_zeros_no_regrowth_and_counts(self, kwargs):
    schedule = configs.ScheduleConfig(0.9, 4)
    process = build(
        fc_model_fn(), tff.learning.optimizers.build_sgdm(0.5, momentum=0.9),
        tff.learning.optimizers.build_sgdm(1.0, momentum=0.9),
        schedule=schedule, **kwargs)
    history = run_rounds(process, image_clients(), 4)
    prunable = 784 * 16 + 16 * 10
    previous_zeros = None
    downloaded = prunable  # Keras biases start at zero.
    kept_at_start = prunable
    layout = layout_lib.layout_from_model_fn(fc_model_fn())
    for round_num, (weights, metrics) in enumerate(history, start=1):
      kernels = layout.prunable_list(weights.trainable)
      zeros = np.concatenate([k.ravel() == 0 for k in kernels])
      if kwargs.get('mode') != 'local':
        self.assertEqual(zeros.sum(), int(np.floor(s_t(schedule, round_num) * prunable + 0.5)))
      masks = layout.mask_list(weights.non_trainable)
      self.assertAllEqual(np.concatenate([m.ravel() == 0 for m in masks]), zeros)
      if previous_zeros is not None:
        self.assertTrue(np.all(zeros[previous_zeros]), msg=f'regrowth at round {round_num}')
      previous_zeros = zeros
      nonzero = sum(int(np.count_nonzero(t)) for t in weights.trainable)
      self.assertEqual(metrics['finalizer']['nonzero_params'], nonzero)
      communication = metrics['client_work']['communication']
      self.assertEqual(communication['params_downloaded'], 3 * downloaded)
      self.assertEqual(communication['mask_bits_uploaded'],
                       3 * prunable if kwargs.get('mode') == 'local' else 0)
      if kwargs.get('mode') != 'local':  # Clients keep the global mask.
        self.assertLessEqual(communication['params_uploaded'], 3 * (kept_at_start + 26))
      downloaded, kept_at_start = nonzero, int(np.sum(~zeros))
    self.assertGreater(previous_zeros.mean(), 0.85)

  @parameterized.parameters('global', 'local')
  def test_uniform_placement_prunes_every_kernel_to_s_t(self, mode):
    schedule = configs.ScheduleConfig(0.9, 3)
    process = build(
        fc_model_fn(), tff.learning.optimizers.build_sgdm(0.5),
        schedule=schedule, mode=mode, sparsity_placement='uniform')
    history = run_rounds(process, image_clients(), 3)
    layout = layout_lib.layout_from_model_fn(fc_model_fn())
    for round_num, (weights, _) in enumerate(history, start=1):
      target = s_t(schedule, round_num)
      for kernel in layout.prunable_list(weights.trainable):
        zeros = int(np.sum(kernel == 0))
        if mode == 'global':  # Exactly round(s_t * n) per kernel.
          self.assertEqual(zeros, int(np.floor(target * kernel.size + 0.5)))
        else:  # Clients prune each kernel to s_t; the majority vote may keep
          # a few more (up to 1.5x what one client keeps, with 3 clients).
          kept_by_client = kernel.size - int(np.floor(target * kernel.size + 0.5))
          self.assertGreaterEqual(zeros, kernel.size - 1.5 * kept_by_client)
    if mode == 'global':  # Global placement leaves the 16x10 kernel far less sparse.
      global_history = run_rounds(build(
          fc_model_fn(), tff.learning.optimizers.build_sgdm(0.5), schedule=schedule,
          mode=mode), image_clients(), 3)
      small = layout.prunable_list(global_history[-1][0].trainable)[1]
      self.assertLess(np.mean(small == 0), 0.8)

  def test_compute_placement_prunes_the_costly_kernel_hardest(self):
    def keras_model_fn():
      tf.keras.utils.set_random_seed(7)
      return pruning.wrap_for_pruning(tf.keras.Sequential([
          tf.keras.layers.InputLayer((28, 28)), tf.keras.layers.Reshape((28, 28, 1)),
          tf.keras.layers.Conv2D(4, 3, strides=2, activation='relu'),  # 13x13 positions.
          tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)]))
    model_fn = models.build_model_fn('fashion_mnist', keras_model_fn=keras_model_fn)
    schedule = configs.ScheduleConfig(0.8, 2)
    process = build(
        model_fn, tff.learning.optimizers.build_sgdm(0.1), schedule=schedule,
        sparsity_placement='compute')
    history = run_rounds(process, image_clients(), 2)
    layout = layout_lib.layout_from_model_fn(model_fn)
    self.assertEqual(layout.costs, (169.0, 1.0))
    for round_num, (weights, _) in enumerate(history, start=1):
      kernels = layout.prunable_list(weights.trainable)
      sizes = [k.size for k in kernels]
      expected = masks.compute_layer_sparsities(sizes, layout.costs,
                                                s_t(schedule, round_num))
      zeros = [int(np.sum(k == 0)) for k in kernels]
      self.assertEqual(zeros, [int(masks.num_to_prune(e, n)) for e, n in zip(expected, sizes)])
    # At s_t = 0.8 the conv kernel keeps 20% of 20%: 36 x 0.04, one weight.
    self.assertEqual(zeros[0], 35)
    def any_size():  # Images of any size: the convolution's cost is unknown.
      return pruning.wrap_for_pruning(tf.keras.Sequential([
          tf.keras.layers.InputLayer((None, None)),
          tf.keras.layers.Lambda(lambda x: x[..., None]), tf.keras.layers.Conv2D(4, 3),
          tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(10)]))
    with self.assertRaisesRegex(ValueError, "'compute' needs a built Keras model with known output sizes"):
      build(models.build_model_fn('fashion_mnist', keras_model_fn=any_size),
            tff.learning.optimizers.build_sgdm(0.1), schedule=schedule,
            sparsity_placement='compute')

  def test_random_differs_from_magnitude(self):
    results = {}
    for method in ('magnitude', 'random'):
      process = build(
          fc_model_fn(), tff.learning.optimizers.build_sgdm(0.1),
          schedule=configs.ScheduleConfig.one_shot(0.5, 2), pruning_method=method)
      weights, metrics = run_rounds(process, image_clients(), 1)[0]
      self.assertEqual(metrics['finalizer']['sparsity'], 0.5)
      results[method] = np.concatenate([m.ravel() for m in weights.non_trainable])
    self.assertNotAllEqual(results['magnitude'], results['random'])

  def test_final_model_strips_to_plain_sparse_keras(self):
    process = build(
        fc_model_fn(), tff.learning.optimizers.build_sgdm(0.1),
        schedule=configs.ScheduleConfig.one_shot(0.8, 2))
    weights, _ = run_rounds(process, image_clients(), 1)[0]
    keras_model = pruning.wrap_for_pruning(tf.keras.Sequential([
        tf.keras.layers.InputLayer((28, 28)), tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(16, activation='relu'), tf.keras.layers.Dense(10)]))
    weights.assign_weights_to(keras_model)
    stripped = tfmot.sparsity.keras.strip_pruning(keras_model)
    self.assertFalse(pruning.wrappers(stripped))
    kernels = [stripped.layers[1].kernel.numpy(), stripped.layers[2].kernel.numpy()]
    zeros = sum(int(np.sum(k == 0)) for k in kernels)
    self.assertEqual(zeros, int(np.floor(0.8 * (784 * 16 + 160) + 0.5)))


class MaskMergingTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(
      # votes out of N=4: keep iff 2 * votes >= 4; a tie at 2 keeps.
      ('majority_vote', 4, [0, 1, 2, 3, 4], [0, 0, 1, 1, 1], (4 + 3 + 2 + 3 + 4) / 20),
      ('majority_vote', 3, [0, 1, 2, 3], [0, 0, 1, 1], (3 + 2 + 2 + 3) / 12),
      ('mean', 3, [0, 1, 2, 3], [0, 1, 1, 1], (3 + 1 + 2 + 3) / 12),
  )
  def test_merge_votes(self, aggregation, n, votes, expected, agreement):
    merged, found = masks.merge_votes(
        [tf.constant(votes, tf.float32)], n, aggregation)
    self.assertAllEqual(merged[0], expected)
    self.assertAlmostEqual(float(found), agreement, places=6)

  def test_factory_on_two_clients_with_a_tie(self):
    value_type = tff.StructWithPythonType([
        ('model_delta', tff.StructWithPythonType([tff.TensorType(np.float32, [3])], tuple)),
        ('mask', tff.StructWithPythonType([tff.TensorType(np.float32, [3])], tuple)),
    ], collections.OrderedDict)
    rules = fedsparsify_local.LocalRules(configs.FedSparsifyConfig(
        schedule=configs.ScheduleConfig(0.5, 3), mode='local'))
    process = message_aggregation.MessageFactory(rules).create(value_type, tff.TensorType(np.float32))
    values = [
        collections.OrderedDict(model_delta=(np.array([1., 2., 0.], np.float32),),
                                mask=(np.array([1., 1., 0.], np.float32),)),
        collections.OrderedDict(model_delta=(np.array([4., 0., 0.], np.float32),),
                                mask=(np.array([1., 0., 0.], np.float32),)),
    ]
    with execution.local_cpp_execution_context():
      output = process.next(process.initialize(), values, [1.0, 2.0])
    self.assertAllClose(output.result['model_delta'][0], [3.0, 2 / 3, 0.0])
    self.assertAllEqual(output.result['mask'][0], [1.0, 1.0, 0.0])
    self.assertAlmostEqual(output.measurements['mask_agreement'], 5 / 6, places=6)


PRUNEFL = dict(config_class=prunefl.PruneFLConfig,
               schedule=configs.ScheduleConfig(0.5, 3, sparsify_start_round=0))


class BadArgumentsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.named_parameters(
      ('mode', dict(mode='server'), 'mode', "mode='server': must be one of global, local"),
      ('aggregation', dict(mask_aggregation='median'), 'mask_aggregation',
       'must be one of majority_vote, mean'),
      ('method', dict(pruning_method='gradient'), 'pruning_method',
       'must be one of magnitude, random, snip, grasp'),
      ('readjust_every', dict(readjust_every=0, **PRUNEFL), 'readjust_every', 'must be >= 1'),
      ('readjust_ratio', dict(readjust_ratio=1.0, **PRUNEFL), 'readjust_ratio',
       r'must be in \[0, 1\)'),
      ('halving', dict(readjust_halving_rounds=0.5, **PRUNEFL), 'readjust_halving_rounds',
       'must be >= 1'),
      ('reconfigurations', dict(initial_reconfigurations=0, **PRUNEFL),
       'initial_reconfigurations', 'must be >= 1'),
      ('prunefl_method', dict(pruning_method='magnitude', **PRUNEFL), 'pruning_method',
       'must be one of prunefl'),
      ('not_prunefl', dict(pruning_method='prunefl'), 'pruning_method',
       'must be one of magnitude, random, snip, grasp'),
      ('snip_start', dict(pruning_method='grasp'), 'sparsify_start_round',
       'must be 0 for grasp: its mask is made before round 1'),
      ('local_snip', dict(mode='local', pruning_method='snip',
                          schedule=configs.ScheduleConfig(0.5, 3, sparsify_start_round=0)),
       'pruning_method', "must be 'magnitude' in local mode"),
      ('local_random', dict(mode='local', pruning_method='random'), 'pruning_method',
       "must be 'magnitude' in local mode"),
      ('placement', dict(sparsity_placement='even'), 'sparsity_placement',
       'must be one of global, uniform, compute'),
      ('random_uniform', dict(pruning_method='random', sparsity_placement='uniform'),
       'sparsity_placement', 'must be global for random pruning'),
      ('schedule', dict(schedule=0.9), 'schedule', 'must be a ScheduleConfig'),
      ('no_schedule', dict(schedule=None), 'schedule', 'must be a ScheduleConfig'),
      ('seed', dict(seed=1.5), 'seed', 'must be an integer'),
  )
  def test_bad_configuration(self, overrides, field, regex):
    values = dict(schedule=configs.ScheduleConfig(0.5, 3))
    values.update(overrides)
    config_class = values.pop('config_class', configs.FedSparsifyConfig)
    with self.assertRaisesRegex(validation.ConfigError, regex) as raised:
      config_class(**values)
    self.assertEqual(raised.exception.field, field)

  def test_bad_builder_arguments(self):
    config = configs.FedSparsifyConfig(schedule=configs.ScheduleConfig(0.5, 3))
    with self.assertRaisesRegex(TypeError, 'config must be a FedSparsifyConfig, got FedAvgConfig'):
      fed_sparsify.build_weighted_fed_sparsify(
          linear_model_fn(), configs.FedAvgConfig(), base.Rules(config))
    with self.assertRaisesRegex(TypeError, 'client_optimizer_fn must be a tff.learning.optimizers.Optimizer'):
      fed_sparsify.build_weighted_fed_sparsify(
          linear_model_fn(), config, fedsparsify_global.GlobalMagnitudeRules(config),
          client_optimizer_fn=tf.keras.optimizers.SGD)
    with self.assertRaisesRegex(ValueError, 'rules must be made from the same configuration'):
      fed_sparsify.build_weighted_fed_sparsify(
          linear_model_fn(), config, base.Rules(configs.FedSparsifyConfig(
              schedule=configs.ScheduleConfig(0.5, 3))))
    with self.assertRaisesRegex(TypeError, 'fedsparsify_local does not take this FedSparsifyConfig'):
      registry.get('fedsparsify_local').build(linear_model_fn(), config)
    with self.assertRaisesRegex(ValueError, "initial_masks must be given with pruning_method in "
                                r"\('snip', 'grasp', 'prunefl'\) and only then; got "
                                "pruning_method='magnitude'"):
      fed_sparsify.build_weighted_fed_sparsify(linear_model_fn(), config, base.Rules(config),
                                               initial_masks=[np.ones((3, 2))])
    snip = configs.FedSparsifyConfig(
        schedule=configs.ScheduleConfig.one_shot(0.5, 3, sparsify_start_round=0),
        pruning_method='snip')
    with self.assertRaisesRegex(ValueError, "got pruning_method='snip' and initial_masks None"):
      fed_sparsify.build_weighted_fed_sparsify(linear_model_fn(), snip, base.Rules(snip))
    with self.assertRaisesRegex(ValueError, 'initial_masks must hold 1 masks'):
      fed_sparsify.build_weighted_fed_sparsify(linear_model_fn(), snip, base.Rules(snip),
                                               initial_masks=[np.ones((3, 2))] * 2)

  def test_model_without_wrappers(self):
    with self.assertRaisesRegex(ValueError, 'wrap_for_pruning'):
      build(linear_model_fn(wrap=False), tff.learning.optimizers.build_sgdm(LR),
            schedule=configs.ScheduleConfig(0.5, 3))
