"""Channel-granularity FedSparsify and the compact export of its models.

Oracles: channel norms and rankings computed here with NumPy on hand
kernels; the process checked round by round for whole-channel masks, exact
counts round(s_t * C), no regrowth and dead biases and BatchNormalization
vectors; the compact model against the masked one on random inputs, and its
parameter count by hand.
"""

import asyncio
import io
import os

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_model_optimization as tfmot

from tensorflow.python.framework import config as tf_config  # pylint: disable=g-direct-tensorflow-import

from tff_sparsify.binaries import export as export_binary
from tff_sparsify.binaries import train
from tff_sparsify.core import masks
from tff_sparsify.deploy import compact
from tff_sparsify.deploy import model_export as export
from tff_sparsify.learning import configs
from tff_sparsify.learning import pruning_layout as layout_lib
from tff_sparsify.learning import models
from tff_sparsify.learning import pruning
from tff_sparsify.simulation import training
from tests import fixtures
from tests import test_fed_sparsify as fs


def cnn(wrap=True):
  tf.keras.utils.set_random_seed(5)
  model = tf.keras.Sequential([
      tf.keras.layers.InputLayer((28, 28)), tf.keras.layers.Reshape((28, 28, 1)),
      tf.keras.layers.Conv2D(6, 3, strides=2, padding='same', activation='relu'),
      tf.keras.layers.MaxPool2D(), tf.keras.layers.BatchNormalization(),
      tf.keras.layers.Conv2D(8, 3, padding='same', activation='relu'),
      tf.keras.layers.Flatten(), tf.keras.layers.Dense(12, activation='relu'),
      tf.keras.layers.Dropout(0.1), tf.keras.layers.Dense(10)])
  return pruning.wrap_for_pruning(model) if wrap else model


def cnn_model_fn():
  return models.build_model_fn('fashion_mnist', keras_model_fn=cnn)


def _channels_pruned(kernel):
  """Output channels of `kernel` whose every weight is zero."""
  flat = kernel.reshape(-1, kernel.shape[-1])
  return set(np.flatnonzero(~np.any(flat != 0, axis=0)))


class ChannelMasksTest(tf.test.TestCase):

  def test_global_ranking_of_channel_norms(self):
    a = np.array([[3., 0., 1., 0.],
                  [4., 1., 0., 0.5]], np.float32)  # Norms 5, 1, 1, 0.5.
    b = np.array([[0.2, 2.], [0.1, 0.], [0., 0.], [0., 0.]], np.float32)  # ~0.224, 2.
    c = np.array([[9., 9.]], np.float32)  # Frozen: never pruned.
    found = masks.channel_masks([a, b, c], 0.5, frozen=[2])
    # Root mean squares: a 3.54, 0.71, 0.71, 0.35; b 0.11, 1.0 (the strongest
    # of each, a:0 and b:1, never pruned). 6 channels, 3 pruned: b:0, a:3 and,
    # of the tied 0.71s, the earlier (a:1).
    self.assertAllEqual(found[0], np.array([[1, 0, 1, 0]] * 2))
    self.assertAllEqual(found[1], np.array([[0, 1]] * 4))
    self.assertAllEqual(found[2], np.ones((1, 2)))
    norms = masks.channel_norms([a])[0]
    self.assertAllClose(norms, [5, 1, 1, 0.5])

  def test_global_ranking_is_relative_to_each_layer(self):
    """Issue 37's trap: the paper's FashionMNIST network at channel sparsity 0.5.

    Ranked by raw RMS (the old rule, computed here in NumPy), its 784-input
    layer, initialized about 1.9x smaller (Glorot: 1/sqrt(fan-in + fan-out)),
    keeps only its strongest unit of 128. Ranked relative to each layer's
    mean, both hidden layers keep a fair share, none is at the floor.
    """
    model = models.fashion_mnist_fc(seed=1990)
    kernels = [model.layers[i].kernel.numpy() for i in (1, 2, 3)]
    rms = [np.sqrt((k ** 2).mean(0)) for k in kernels]
    raw = np.concatenate(rms[:2])
    raw[[int(np.argmax(rms[0])), 128 + int(np.argmax(rms[1]))]] = np.inf
    old_kept_first = 128 - int(np.sum(np.argsort(raw, kind='stable')[:128] < 128))
    self.assertEqual(old_kept_first, 1)
    found = masks.channel_masks(kernels, 0.5, frozen=[2])
    kept = [int(masks.channel_vector(m).numpy().sum()) for m in found]
    self.assertEqual(kept[0] + kept[1], 128)
    self.assertBetween(kept[0], 48, 80)
    self.assertEqual(kept[2], 10)
    self.assertEqual(int(masks.channel_layers_at_floor(found, 0.5, frozen=[2])), 0)
    # The exact choice, against NumPy: relative scores, one ranking, strongest kept.
    relative = np.concatenate([r / r.mean() for r in rms[:2]])
    relative[[int(np.argmax(rms[0])), 128 + int(np.argmax(rms[1]))]] = np.inf
    pruned = set(np.argsort(relative, kind='stable')[:128])
    want = [np.array([c not in pruned for c in range(128)]),
            np.array([128 + c not in pruned for c in range(128)])]
    for mask, expected in zip(found[:2], want):
      self.assertAllEqual(masks.channel_vector(mask).numpy() == 1, expected)

  def test_no_layer_falls_under_the_floor(self):
    """A layer whose channels but one are tiny, beside an even one: the floor holds it.

    Global 0.5 over 2 x 32 channels, 32 pruned by the ranking: a's 31 tiny
    ones (relative to a mean that its one large channel dominates) and b's
    weakest; a would keep its strongest channel only. The floor,
    floor(0.25 * (1 - 0.5) * 32) = 4, gives a back its 4 strongest (29
    pruned instead of 32), and `channel_layers_at_floor` counts a (the
    warning's cue).
    """
    rng = np.random.default_rng(3)
    a = (rng.normal(size=(20, 32)) * np.r_[100.0, np.linspace(0.01, 0.02, 31)]).astype(np.float32)
    b = rng.normal(size=(20, 32)).astype(np.float32)
    found = masks.channel_masks([a, b], 0.5)
    rms_a = np.sqrt((a ** 2).mean(0))
    self.assertEqual(set(np.flatnonzero(masks.channel_vector(found[0]).numpy())),
                     set(np.argsort(rms_a)[-4:]))
    rms_b = np.sqrt((b ** 2).mean(0))
    self.assertAllEqual(masks.channel_vector(found[1]).numpy() == 0,
                        np.arange(32) == np.argmin(rms_b))
    self.assertEqual(int(masks.channel_layers_at_floor(found, 0.5)), 1)
    self.assertEqual(int(masks.channel_floor(0.5, 32)), 4)
    self.assertEqual(int(masks.channel_floor(0.99, 32)), 1)
    # Uniform placement is not ranked across layers: each keeps 16.
    uniform = masks.channel_masks([a, b], 0.5, placement='uniform')
    self.assertEqual([int(masks.channel_vector(m).numpy().sum()) for m in uniform], [16, 16])
    self.assertEqual(int(masks.channel_layers_at_floor(uniform, 0.5)), 0)

  def test_uniform_and_conv_kernels(self):
    rng = np.random.default_rng(0)
    conv = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    dense = rng.normal(size=(7, 4)).astype(np.float32)
    found = masks.channel_masks([conv, dense], 0.4, placement='uniform')
    for kernel, mask in zip((conv, dense), found):
      norms = np.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(0))
      pruned = int(np.floor(0.4 * kernel.shape[-1] + 0.5))  # Below C - 1 here.
      self.assertEqual(_channels_pruned(kernel * mask.numpy()), set(np.argsort(norms)[:pruned]))
      self.assertEqual(np.sum(mask == 0), pruned * kernel.size // kernel.shape[-1])
    self.assertAllEqual(masks.channel_vector(found[1]), (np.abs(found[1]).max(0) > 0) * 1.0)
    with self.assertRaisesRegex(ValueError, "placement 'global' or 'uniform', got 'compute'"):
      masks.channel_masks([conv], 0.5, placement='compute')

  def test_round_channels(self):
    # (kept, channels, multiple) -> rounded, by hand.
    for args, want in [((19, 32, 8), 16), ((20, 32, 8), 24), ((38, 64, 8), 40),
                       ((77, 128, 8), 80), ((3, 32, 8), 8), ((32, 32, 8), 32),
                       ((30, 32, 8), 32), ((9, 10, 8), 8), ((10, 10, 8), 10),
                       ((5, 6, 8), 6), ((19, 32, 1), 19)]:
      self.assertEqual(int(masks.round_channels(*args)), want, args)
    # Never grows as fewer are kept: a rising sparsity never regrows.
    found = [int(masks.round_channels(k, 50, 8)) for k in range(50, 0, -1)]
    self.assertEqual(found, sorted(found, reverse=True))

  def test_channel_multiple_keeps_the_strongest_rounded_count(self):
    rng = np.random.default_rng(1)
    conv = rng.normal(size=(3, 3, 2, 32)).astype(np.float32)
    dense = rng.normal(size=(40, 20)).astype(np.float32)
    out = rng.normal(size=(20, 10)).astype(np.float32)
    rms = lambda k: np.sqrt((k.reshape(-1, k.shape[-1]) ** 2).mean(0))
    # Uniform 0.4: conv keeps 19 -> 16, dense keeps 12 -> 16 (multiple 8).
    found = masks.channel_masks([conv, dense, out], 0.4, 'uniform', frozen=[2], multiple=8)
    for kernel, mask, kept in zip((conv, dense), found, (16, 16)):
      self.assertEqual(_channels_pruned(kernel * mask.numpy()),
                       set(np.argsort(rms(kernel))[:kernel.shape[-1] - kept]))
    self.assertAllEqual(found[2], np.ones((20, 10)))
    # Global 0.4 of 52 channels: 21 pruned by one ranking, then each layer's
    # kept count rounded (its strongest kept, as without rounding).
    exact = masks.channel_masks([conv, dense, out], 0.4, frozen=[2])
    rounded = masks.channel_masks([conv, dense, out], 0.4, frozen=[2], multiple=8)
    for kernel, e, r in zip((conv, dense), exact, rounded):
      kept = kernel.shape[-1] - len(_channels_pruned(kernel * e.numpy()))
      want = int(masks.round_channels(kept, kernel.shape[-1], 8))
      self.assertEqual(want % 8 if want < kernel.shape[-1] else 0, 0)
      self.assertEqual(_channels_pruned(kernel * r.numpy()),
                       set(np.argsort(rms(kernel))[:kernel.shape[-1] - want]))
    with self.assertRaisesRegex(ValueError, 'multiple must be an integer >= 1, got 0'):
      masks.channel_masks([conv], 0.5, multiple=0)

  def test_layout_links_biases_and_batch_norm(self):
    layout = layout_lib.layout_from_model_fn(cnn_model_fn(), 'channel')
    with tf.Graph().as_default():
      names = [v.name for v in cnn_model_fn()().trainable_variables]
    linked = {names[t].split('/')[-1].split(':')[0]: p for t, p in layout.channel_links}
    self.assertEqual(sorted(linked), ['beta', 'bias', 'gamma'])  # Names collapse to kinds.
    by_kernel = {}
    for t, p in layout.channel_links:
      by_kernel.setdefault(p, []).append(names[t].split('/')[-1].split(':')[0])
    # Conv 0: its bias, and the BatchNormalization after the pooling.
    self.assertCountEqual(by_kernel[0], ['bias', 'gamma', 'beta'])
    self.assertEqual(by_kernel[1], ['bias'])
    self.assertEqual(by_kernel[2], ['bias'])
    self.assertEqual(by_kernel[3], ['bias'])
    self.assertEqual(layout.channel_frozen, (3,))  # The output layer.
    layout.check_granularity()

    def bn_after_flatten():
      return pruning.wrap_for_pruning(tf.keras.Sequential([
          tf.keras.layers.InputLayer((28, 28)), tf.keras.layers.Flatten(),
          tf.keras.layers.BatchNormalization(), tf.keras.layers.Dense(4),
          tf.keras.layers.Dense(10)]))
    bad = layout_lib.layout_from_model_fn(
        models.build_model_fn('fashion_mnist', keras_model_fn=bn_after_flatten), 'channel')
    with self.assertRaisesRegex(ValueError, 'BatchNormalization to follow a prunable layer'):
      bad.check_granularity()


class ChannelFloorWarningTest(tf.test.TestCase):

  def test_one_line_once_when_a_layer_is_at_the_floor(self):
    stream = io.StringIO()
    warning = training.ChannelFloorWarning(stream)
    zero = dict(finalizer=dict(channel_layers_at_floor=0, sparsity=0.3))
    # A loop of its own: `asyncio.run` would unset the thread's current loop,
    # which the in-process runs of later tests (TFF's program) need.
    loop = asyncio.new_event_loop()
    self.addCleanup(loop.close)
    loop.run_until_complete(warning.release(zero, 1))
    self.assertEqual(stream.getvalue(), '')
    for key in (2, 3):
      loop.run_until_complete(
          warning.release(dict(finalizer=dict(channel_layers_at_floor=2)), key))
    lines = stream.getvalue().splitlines()
    self.assertLen(lines, 1)
    self.assertStartsWith(lines[0], 'warning: round 2: 2 layer(s) kept only the floor')


class ChannelProcessTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters('global', 'local')
  def test_whole_channels_exact_counts_no_regrowth(self, mode):
    # s_1 = 0.3 (S_0), s_2 = 0.6: two rounds show the counts and the nesting.
    schedule = configs.ScheduleConfig(0.6, 2, initial_sparsity=0.3)
    process = fs.build(cnn_model_fn(), tff.learning.optimizers.build_sgdm(0.1),
                       schedule=schedule, mode=mode, sparsity_granularity='channel')
    history = fs.run_rounds(process, fs.image_clients(), 2)
    layout = layout_lib.layout_from_model_fn(cnn_model_fn(), 'channel')
    channels = [6, 8, 12]  # The output layer's 10 are frozen.
    before = [set() for _ in channels]
    for round_num, (weights, metrics) in enumerate(history, start=1):
      self.assertEqual(metrics['finalizer']['channel_layers_at_floor'], 0)
      kernels = layout.prunable_list(weights.trainable)
      masks_now = layout.mask_list(weights.non_trainable)
      pruned = []
      for kernel, mask, was in zip(kernels[:3], masks_now[:3], before):
        mask = np.asarray(mask)
        flat = mask.reshape(-1, mask.shape[-1])
        self.assertTrue(np.all((flat == flat[:1])), 'a mask that is not whole channels')
        found = set(np.flatnonzero(flat[0] == 0))
        self.assertTrue(was <= found, 'a pruned channel grew back')
        self.assertTrue(found <= _channels_pruned(np.asarray(kernel)))
        pruned.append(found)
      self.assertAllEqual(np.asarray(masks_now[3]), np.ones((12, 10)))
      self.assertTrue(all(len(p) < c for p, c in zip(pruned, channels)), 'a layer emptied')
      total = sum(len(p) for p in pruned)
      target = int(np.floor(fs.s_t(schedule, round_num) * sum(channels) + 0.5))
      if mode == 'global':
        self.assertEqual(total, target)
      else:  # Each client prunes `target`; the vote of 3 keeps some more.
        self.assertLessEqual(total, target)
        self.assertEqual(total > 0, target > 0)
      # The dead channels' bias and BatchNormalization gamma and beta are zero.
      for t, p in layout.channel_links:
        if p in layout.channel_frozen:
          continue
        values = np.asarray(weights.trainable[t])
        self.assertAllEqual(values[sorted(pruned[p])], np.zeros(len(pruned[p])))
      before = pruned

  def test_bad_combinations(self):
    schedule = configs.ScheduleConfig(0.5, 2)
    for options, pattern in [
        (dict(pruning_method='random'), 'sparsity_granularity=.channel.: must be weight for '
         'random pruning'),
        (dict(sparsity_placement='compute'), 'sparsity_placement=.compute.: must be global '
         'or uniform with sparsity_granularity=channel'),
        (dict(sparsity_granularity='filter'), 'sparsity_granularity=.filter.'),
        (dict(channel_multiple=0), 'channel_multiple=0: must be >= 1'),
        (dict(channel_multiple=8, sparsity_granularity='weight'),
         'channel_multiple=8: must be 1 unless sparsity_granularity=channel'),
        (dict(channel_multiple=8, mode='local'), 'channel_multiple=8: must be 1 in local mode')]:
      with self.assertRaisesRegex(Exception, pattern):
        configs.FedSparsifyConfig(schedule=schedule, **dict(
            dict(sparsity_granularity='channel'), **options))


def _channel_pruned_cnn(sparsity=0.5):
  """The CNN with channels pruned as the process prunes them (masks and links)."""
  # First: a Keras model made in the layout's throwaway graph invalidates
  # the eager models made before it.
  layout = layout_lib.layout_from_model_fn(cnn_model_fn(), 'channel')
  model = cnn()
  kernels = pruning.prunable_weights(model)
  found = masks.channel_masks([k.numpy() for k in kernels], sparsity, 'uniform',
                              frozen=layout.channel_frozen)
  pruning.set_masks(model, found)
  pruning.apply_wrapper_masks(model)
  stripped = tfmot.sparsity.keras.strip_pruning(model)
  bn = stripped.layers[3]
  vector = masks.channel_vector(found[0]).numpy()
  for layer in stripped.layers:
    if hasattr(layer, 'kernel'):
      layer.bias.assign(layer.bias.numpy() * masks.channel_vector(layer.kernel).numpy())
  # Non-zero statistics, so that only gamma = beta = 0 makes a channel dead.
  bn.moving_mean.assign(np.linspace(0.1, 0.6, 6).astype(np.float32))
  bn.gamma.assign(bn.gamma.numpy() * vector)
  bn.beta.assign((bn.beta.numpy() + 0.3) * vector)
  return stripped, found


class CompactTest(tf.test.TestCase):

  def test_compact_model_is_smaller_and_computes_the_same(self):
    model, found = _channel_pruned_cnn()
    kept = [int(masks.channel_vector(m).numpy().sum()) for m in found]
    small, diff = compact.compact_model(model)
    self.assertLessEqual(diff, 1e-5)
    c0, c1, d0 = kept[:3]
    self.assertEqual(kept[:3], [3, 4, 6])  # Half of each layer's channels (uniform).
    self.assertEqual([l.filters for l in small.layers if hasattr(l, 'filters')], [c0, c1])
    # Hand count: conv 3x3x1xc0 + c0, BN 2 c0 trainable, conv 3x3xc0xc1 + c1,
    # dense (7*7*c1) x d0 + d0, dense d0 x 10 + 10.
    expected = (9 * c0 + c0) + 2 * c0 + (9 * c0 * c1 + c1) + (49 * c1 * d0 + d0) + (d0 * 10 + 10)
    self.assertEqual(sum(w.numpy().size for w in small.trainable_weights), expected)
    self.assertLess(expected, sum(w.numpy().size for w in model.trainable_weights))
    inputs = np.random.default_rng(3).random((5, 28, 28), np.float32)
    self.assertAllClose(small(inputs), model(inputs), atol=1e-5, rtol=0)

  def test_a_channel_that_is_not_dead_is_kept_or_caught(self):
    model, found = _channel_pruned_cnn()
    bn = model.layers[3]
    dead = np.flatnonzero(masks.channel_vector(found[0]).numpy() == 0)[0]
    beta = bn.beta.numpy()
    beta[dead] = 0.5  # Dead conv channel, but the BatchNormalization outputs 0.5: kept.
    bn.beta.assign(beta)
    small, _ = compact.compact_model(model)
    self.assertEqual([l.filters for l in small.layers if hasattr(l, 'filters')], [4, 4])
    inputs = np.random.default_rng(3).random((5, 28, 28), np.float32)
    self.assertAllClose(small(inputs), model(inputs), atol=1e-5, rtol=0)
    model, _ = _channel_pruned_cnn()
    # Dead channels of the second convolution, but sigmoid(0) = 0.5 reaches the Dense.
    model.layers[4].activation = tf.keras.activations.sigmoid
    with self.assertRaisesRegex(compact.CompactError, 'differ from the masked model'):
      compact.compact_model(model)

  def test_export_compact(self):
    model, _ = _channel_pruned_cnn()
    out = self.create_tempdir().full_path
    report = export.export_model(model, out, compact=True)
    self.assertLess(report.total_params, report.masked_params)
    self.assertLessEqual(report.compact_max_abs_diff, 1e-5)
    self.assertTrue(os.path.isfile(report.onnx_path))

    class Subclassed(tf.keras.Model):

      def __init__(self):
        super().__init__()
        self.dense = tf.keras.layers.Dense(2)

      def call(self, inputs):
        return self.dense(inputs)

    subclassed = Subclassed()
    subclassed(np.zeros((1, 4), np.float32))
    with self.assertRaisesRegex(export.ExportError,
                                'compact export takes a Sequential or functional'):
      export.export_model(subclassed, self.create_tempdir().full_path, compact=True)


class ChannelBinaryTest(tf.test.TestCase):
  """Through the binaries, in this process (their start-up is tested elsewhere)."""

  @classmethod
  def tearDownClass(cls):
    tf_config.disable_op_determinism()  # The training binary turned it on.
    super().tearDownClass()

  def test_train_channel_then_export_compact(self):
    root = self.create_tempdir().full_path
    data_dir = fixtures.write_fashion_mnist_like(os.path.join(root, 'data'))
    code, _, err = fixtures.run_binary(train, [
        f'--data_dir={data_dir}', f'--root_output_dir={root}', '--experiment_name=ch',
        '--algorithm=fedsparsify_global', '--sparsity_granularity=channel',
        '--sparsity_placement=uniform', '--channel_multiple=48',
        '--final_sparsity=0.5', '--total_rounds=2', '--num_clients=2',
        '--clients_per_round=2', '--client_epochs_per_round=1', '--noprogress'])
    self.assertEqual(code, 0, err)
    run_dir = os.path.join(root, 'results', 'ch')
    code, stdout, err = fixtures.run_binary(export_binary, [
        f'--run_dir={run_dir}', '--compact'])
    self.assertEqual(code, 0, err)
    self.assertIn('exported:', stdout)
    with open(os.path.join(run_dir, 'export', 'export_report.md')) as f:
      text = f.read()
    # FashionMNIST FC, 784-128-128-10: each hidden layer keeps 128 - 64 = 64
    # units, rounded to a multiple of 48: 48. 784*48+48 + 48*48+48 + 48*10+10.
    self.assertIn('compact model: 40522 parameters (masked model: 118282)', text)
    code, _, err = fixtures.run_binary(train, [
        f'--data_dir={data_dir}', f'--root_output_dir={root}', '--experiment_name=bad',
        '--algorithm=random_pruning', '--sparsity_granularity=channel'])
    self.assertNotEqual(code, 0)
    self.assertRegex(err, "--sparsity_granularity='channel': must be weight for random pruning")
    self.assertLen(err.strip().splitlines(), 1, err)
    code, _, err = fixtures.run_binary(train, [
        f'--data_dir={data_dir}', f'--root_output_dir={root}', '--experiment_name=bad',
        '--algorithm=fedsparsify_global', '--channel_multiple=8'])
    self.assertNotEqual(code, 0)
    self.assertRegex(err, '--channel_multiple=8: must be 1 unless sparsity_granularity=channel')
    self.assertLen(err.strip().splitlines(), 1, err)
