"""Channels tied by depthwise convolutions and residual additions (issue 37).

Oracles: the groups of our MobileNet-style model written out by hand from
its definition; grouped channel masks against a NumPy ranking; the
process's masks round by round (tied kernels prune the same channels, the
depthwise kernels, biases and BatchNormalization vectors of pruned
channels are zero, the counts are round(s_t C) over the groups' channels);
the compact model against the masked one on random inputs and its
parameter count by hand.
"""

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_model_optimization as tfmot

from tff_sparsify.core import channel_graph
from tff_sparsify.core import masks
from tff_sparsify.deploy import compact
from tff_sparsify.learning import configs
from tff_sparsify.learning import models
from tff_sparsify.learning import pruning
from tff_sparsify.learning import pruning_layout as layout_lib
from tests import test_fed_sparsify as fs

L = tf.keras.layers


def _names(layout, keras_model):
  """Per position in `prunable`, its kernel's layer name."""
  return [w.name.split('/')[0] for w in pruning.prunable_weights(keras_model)]


def tiny_mobilenet(wrap=True):
  """Stem conv (8) - BN - ReLU6 - one inverted residual block (12 expanded, 8 out) added
  to the stem's output - global average pooling - Dense 10."""
  tf.keras.utils.set_random_seed(7)
  inputs = L.Input((28, 28))
  x = L.Reshape((28, 28, 1))(inputs)
  x = L.ReLU(6.0)(L.BatchNormalization(name='stem_bn')(
      L.Conv2D(8, 3, strides=2, padding='same', use_bias=False, name='stem')(x)))
  y = L.ReLU(6.0)(L.BatchNormalization(name='expand_bn')(
      L.Conv2D(12, 1, name='expand')(x)))
  y = L.ReLU(6.0)(L.BatchNormalization(name='dw_bn')(
      L.DepthwiseConv2D(3, padding='same', name='dw')(y)))
  y = L.BatchNormalization(name='project_bn')(L.Conv2D(8, 1, use_bias=False,
                                                       name='project')(y))
  x = L.Add()([x, y])
  outputs = L.Dense(10, name='logits')(L.GlobalAveragePooling2D()(x))
  model = tf.keras.Model(inputs, outputs)
  return pruning.wrap_for_pruning(model) if wrap else model


def tiny_model_fn():
  return models.build_model_fn('fashion_mnist', keras_model_fn=tiny_mobilenet)


class TraceTest(tf.test.TestCase):

  def test_mobilenet_groups_by_hand(self):
    model_fn = models.build_model_fn('fashion_mnist', model='mobilenet', prunable=True)
    layout = layout_lib.layout_from_model_fn(model_fn, 'channel')
    keras_model = models.create_keras_model('fashion_mnist', prunable=True, model='mobilenet')
    names = _names(layout, keras_model)
    # The definition's order: stem, (expand, project) x 4 blocks, head, logits.
    self.assertEqual(names, ['conv2d', 'conv2d_1', 'conv2d_2', 'conv2d_3', 'conv2d_4',
                             'conv2d_5', 'conv2d_6', 'conv2d_7', 'conv2d_8', 'conv2d_9',
                             'dense'])
    groups = {tuple(names[p] for p in g) for g in layout.channel_groups}
    # Blocks 2 and 4 add their input (blocks 1 and 3's projections) to their projection.
    self.assertEqual(groups, {('conv2d',), ('conv2d_1',), ('conv2d_2', 'conv2d_4'),
                              ('conv2d_3',), ('conv2d_5',), ('conv2d_6', 'conv2d_8'),
                              ('conv2d_7',), ('conv2d_9',), ('dense',)})
    self.assertEqual([names[p] for p in layout.channel_frozen], ['dense'])
    # Each depthwise kernel follows its block's expansion (64, 96, 96, 192 channels).
    self.assertEqual([(names[p], shape) for _, p, shape in layout.channel_depthwise_links],
                     [('conv2d_1', (3, 3, 64, 1)), ('conv2d_3', (3, 3, 96, 1)),
                      ('conv2d_5', (3, 3, 96, 1)), ('conv2d_7', (3, 3, 192, 1))])
    # 14 BatchNormalizations (gamma, beta) and the logits' bias; no conv has a bias.
    self.assertLen(layout.channel_links, 29)
    layout.check_granularity()

  def test_a_sum_with_the_input_and_the_outputs_are_frozen(self):
    inputs = L.Input((4,))
    hidden = L.Dense(4, name='summed')(inputs)
    free = L.Dense(6, name='free')(L.Add()([inputs, hidden]))
    outputs = L.Softmax()(L.Dense(3, name='out')(free))
    graph = channel_graph.trace(tf.keras.Model(inputs, outputs),
                                channel_graph.stripped_kernels)
    frozen = {graph.groups[g][0].name.split('/')[0] for g in graph.frozen}
    # 'summed' is added to the model's input, whose channels no layer prunes;
    # 'out' reaches the outputs through a Softmax that mixes channels.
    self.assertEqual(frozen, {'summed', 'out'})

  def test_a_shared_layer_is_refused_in_channel_granularity(self):
    def shared():
      inputs = L.Input((28, 28))
      x = L.Flatten()(inputs)
      dense = L.Dense(784)
      return pruning.wrap_for_pruning(tf.keras.Model(inputs, L.Dense(10)(dense(dense(x)))))
    layout = layout_lib.layout_from_model_fn(
        models.build_model_fn('fashion_mnist', keras_model_fn=shared), 'channel')
    with self.assertRaisesRegex(ValueError, 'called more than once'):
      layout.check_granularity()


class GroupedMasksTest(tf.test.TestCase):

  def test_tied_tensors_prune_the_same_channels_against_numpy(self):
    rng = np.random.default_rng(11)
    a = rng.normal(size=(4, 6)).astype(np.float32)
    b = (rng.normal(size=(5, 6)) * 3).astype(np.float32)
    c = rng.normal(size=(3, 4)).astype(np.float32)
    d = rng.normal(size=(2, 3)).astype(np.float32)
    found = masks.channel_masks([a, b, c, d], 0.5, frozen=[3], groups=[(0, 1), (2,), (3,)])
    rel = lambda w: np.sqrt((w ** 2).mean(0)) / np.sqrt((w ** 2).mean(0)).mean()
    ab = (rel(a) + rel(b)) / 2
    scores = np.concatenate([ab, rel(c)])
    scores[[int(np.argmax(ab)), 6 + int(np.argmax(rel(c)))]] = np.inf
    pruned = set(np.argsort(scores, kind='stable')[:5])  # 10 channels, half pruned.
    want_ab = np.array([i not in pruned for i in range(6)])
    want_c = np.array([6 + i not in pruned for i in range(4)])
    for i in (0, 1):
      self.assertAllEqual(masks.channel_vector(found[i]).numpy() == 1, want_ab)
    self.assertAllEqual(masks.channel_vector(found[2]).numpy() == 1, want_c)
    self.assertAllEqual(found[3], np.ones_like(d))
    uniform = masks.channel_masks([a, b, c, d], 0.5, 'uniform', frozen=[3],
                                  groups=[(0, 1), (2,), (3,)])
    self.assertEqual([int(masks.channel_vector(m).numpy().sum()) for m in uniform],
                     [3, 3, 2, 3])
    with self.assertRaisesRegex(ValueError, 'ties tensors of \\[4, 6\\] channels'):
      masks.channel_masks([a, c], 0.5, groups=[(0, 1)])
    with self.assertRaisesRegex(ValueError, 'must partition'):
      masks.channel_masks([a, b], 0.5, groups=[(0,)])


def _prune_by_layout(keras_model, layout, sparsity, multiple=1):
  """Channel masks of `layout` set into the wrapped model, as the server sets them."""
  found = layout.prune_variables(keras_model.trainable_variables,
                                 keras_model.non_trainable_variables, sparsity, 'global',
                                 channel_multiple=multiple)
  return [int(masks.channel_vector(m).numpy().sum()) for m in found]


def _conv_params(k, c_in, c_out):
  return k * k * c_in * c_out


class MobileNetCompactTest(tf.test.TestCase):

  def test_compact_mobilenet_computes_the_masked_model(self):
    layout = layout_lib.layout_from_model_fn(
        models.build_model_fn('fashion_mnist', model='mobilenet', prunable=True), 'channel')
    model = models.create_keras_model('fashion_mnist', prunable=True, model='mobilenet')
    rng = np.random.default_rng(2)
    # Non-trivial statistics and betas, so that only the linked masks make a channel dead.
    for v in model.variables:
      name = v.name.split('/')[-1]
      if name.startswith(('moving_mean', 'beta')):
        v.assign(rng.normal(size=v.shape).astype(np.float32))
      elif name.startswith('moving_variance'):
        v.assign(rng.uniform(0.5, 2.0, size=v.shape).astype(np.float32))
    kept = _prune_by_layout(model, layout, 0.5, multiple=8)
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    small, diff = compact.compact_model(stripped)
    self.assertLessEqual(diff, 1e-5)
    inputs = rng.random((6, 28, 28), np.float32)
    self.assertAllClose(small(inputs, training=False), stripped(inputs, training=False),
                        atol=1e-5, rtol=0)
    # Hand count from the kept channels: stem s, per block expansion e and
    # output o (tied across a residual pair), head h.
    s, e1, o1, e2, _, e3, o3, e4, _, h = kept[:10]
    self.assertEqual(kept[2], kept[4])
    self.assertEqual(kept[6], kept[8])
    expected = _conv_params(3, 1, s) + 2 * s
    for c_in, e, o in ((s, e1, o1), (o1, e2, o1), (o1, e3, o3), (o3, e4, o3)):
      expected += _conv_params(1, c_in, e) + 2 * e + 9 * e + 2 * e + _conv_params(1, e, o) + 2 * o
    expected += _conv_params(1, o3, h) + 2 * h + h * 10 + 10
    self.assertEqual(models.num_trainable_parameters(small), expected)
    self.assertLess(expected, models.num_trainable_parameters(stripped) // 2)
    self.assertEqual([l.filters for l in small.layers if type(l) is L.Conv2D],
                     [s, e1, o1, e2, o1, e3, o3, e4, o3, h])

  def test_wide_mobilenet_keeps_the_hand_counts(self):
    # channel_targets' setting for mobilenet_x2: uniform 0.53, multiples of 16.
    # By hand, 0.47 of (32, 128, 48, 192, 48, 192, 96, 384, 96, 384) channels is
    # (15.0, 60.2, 22.6, 90.2, 22.6, 90.2, 45.1, 180.5, 45.1, 180.5), to the
    # nearest multiple of 16 (at least 16):
    want = [16, 64, 16, 96, 16, 96, 48, 176, 48, 176]
    layout = layout_lib.layout_from_model_fn(
        models.build_model_fn('fashion_mnist', model='mobilenet_x2', prunable=True), 'channel')
    model = models.create_keras_model('fashion_mnist', prunable=True, model='mobilenet_x2')
    found = layout.prune_variables(model.trainable_variables, model.non_trainable_variables,
                                   0.53, 'uniform', channel_multiple=16)
    self.assertEqual([int(masks.channel_vector(m).numpy().sum()) for m in found][:10], want)
    small, diff = compact.compact_model(tfmot.sparsity.keras.strip_pruning(model))
    self.assertLessEqual(diff, 1e-5)
    self.assertEqual([l.filters for l in small.layers if type(l) is L.Conv2D], want)


class MobileNetProcessTest(tf.test.TestCase):

  def test_tied_channels_round_by_round(self):
    schedule = configs.ScheduleConfig(0.6, 2, initial_sparsity=0.3)
    process = fs.build(tiny_model_fn(), tff.learning.optimizers.build_sgdm(0.1),
                       schedule=schedule, sparsity_granularity='channel')
    history = fs.run_rounds(process, fs.image_clients(), 2)
    layout = layout_lib.layout_from_model_fn(tiny_model_fn(), 'channel')
    keras_model = tiny_mobilenet()
    names = _names(layout, keras_model)
    self.assertEqual(names, ['stem', 'expand', 'project', 'logits'])
    self.assertEqual(set(layout.channel_groups), {(0, 2), (1,), (3,)})
    variables = {v.name.split(':')[0]: i for i, v in enumerate(keras_model.trainable_variables)}
    for round_num, (weights, _) in enumerate(history, start=1):
      t = [np.asarray(w) for w in weights.trainable]
      pruned = lambda kernel: set(np.flatnonzero(~np.any(
          kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)))
      stem, expand = t[variables['stem/kernel']], t[variables['expand/kernel']]
      project = t[variables['project/kernel']]
      self.assertEqual(pruned(stem), pruned(project))  # Tied by the addition.
      dead = sorted(pruned(expand))
      dw = t[variables['dw/depthwise_kernel']][:, :, dead, :]
      self.assertAllEqual(dw, np.zeros_like(dw))
      for name in ('expand/bias', 'dw/bias', 'expand_bn/gamma', 'expand_bn/beta',
                   'dw_bn/gamma', 'dw_bn/beta'):
        self.assertAllEqual(t[variables[name]][dead], np.zeros(len(dead)), name)
      for name in ('stem_bn/gamma', 'stem_bn/beta', 'project_bn/gamma', 'project_bn/beta'):
        values = t[variables[name]][sorted(pruned(stem))]
        self.assertAllEqual(values, np.zeros_like(values), name)
      # Global: round(s_t * 20) of the groups' 8 + 12 channels (the logits frozen).
      target = int(np.floor(fs.s_t(schedule, round_num) * 20 + 0.5))
      self.assertEqual(len(pruned(stem)) + len(dead), target)
    # The trained model compacts to the same outputs.
    model = tiny_mobilenet()
    for variable, value in zip(model.trainable_variables, history[-1][0].trainable):
      variable.assign(value)
    for variable, value in zip(model.non_trainable_variables, history[-1][0].non_trainable):
      variable.assign(value)
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    small, _ = compact.compact_model(stripped)
    inputs = np.random.default_rng(4).random((3, 28, 28), np.float32)
    self.assertAllClose(small(inputs, training=False), stripped(inputs, training=False),
                        atol=1e-5, rtol=0)
    self.assertEqual([l.filters for l in small.layers if type(l) is L.Conv2D],
                     [8 - len(pruned(stem)), 12 - len(dead), 8 - len(pruned(stem))])


if __name__ == '__main__':
  tf.test.main()
