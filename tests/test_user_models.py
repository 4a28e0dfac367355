"""Your model through the binary: a `.keras` file with BatchNormalization, a text model from a function.

Oracles: plain Keras `fit` on the same batches (one client, one local epoch,
server learning rate 1), tfmot's prune registry (which layers are wrapped),
an uninterrupted run (kill and resume), a hand count of the kernels' zeros.
"""

import os
import signal
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry  # pylint: disable=g-direct-tensorflow-import

from tests import fixtures
from tff_sparsify.learning import pruning
from tff_sparsify.simulation import training
from tff_sparsify.simulation.sources import writer

SEED = 7
TEXT_MODULE = textwrap.dedent('''\
    import tensorflow as tf
    VOCAB, LENGTH = 12, 5

    def gru_model():
      init = tf.keras.initializers.GlorotUniform
      inputs = tf.keras.Input((LENGTH,), dtype=tf.int64)
      x = tf.keras.layers.Embedding(VOCAB, 8, embeddings_initializer=init(0))(inputs)
      x = tf.keras.layers.GRU(8, kernel_initializer=init(1), recurrent_initializer='orthogonal')(x)
      return tf.keras.Model(inputs, tf.keras.layers.Dense(VOCAB, kernel_initializer=init(2))(x))

    def not_a_model():
      return 'a string'
    ''')


def bn_model(compiled=True):
  """Conv2D, BatchNormalization, Conv2D, GlobalAveragePooling, Dense (functional), seeded."""
  init = tf.keras.initializers.GlorotUniform
  inputs = tf.keras.Input((6, 6, 2))
  x = tf.keras.layers.Conv2D(6, 3, padding='same', kernel_initializer=init(0))(inputs)
  x = tf.keras.layers.BatchNormalization(momentum=0.6)(x)
  x = tf.keras.layers.ReLU()(x)
  x = tf.keras.layers.Conv2D(5, 3, kernel_initializer=init(1))(x)
  x = tf.keras.layers.GlobalAveragePooling2D()(x)
  model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, kernel_initializer=init(2))(x))
  if compiled:
    model.compile(tf.keras.optimizers.SGD(0.05),
                  tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=['accuracy'])
  return model


def image_clients(sizes, seed=0):
  rng = np.random.default_rng(seed)
  clients = {'train': {}, 'test': {}}
  for i, n in enumerate(sizes):
    x = rng.normal(1.0, 2.0, size=(n, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 3, n).astype(np.int64)
    clients['train'][f'site{i}'] = (x, y)
    clients['test'][f'site{i}'] = (x[:4] + 0.5, y[:4])
  return clients


def final_weights(out, experiment):
  with np.load(os.path.join(out, 'results', experiment, 'final_weights.npz')) as f:
    return [f[k] for k in sorted(f.files, key=lambda k: int(k.split('_')[1]))]


class BatchNormalizationThroughTheBinaryTest(tf.test.TestCase):

  def test_one_client_fed_avg_equals_keras_fit(self):
    root = self.create_tempdir().full_path
    clients = image_clients([20])
    data = writer.write(clients, f'sqlite:{root}/one.sqlite')
    bn_model().save(f'{root}/bn.keras')
    code, out, err = fixtures.run_binary_process('train', [
        f'--client_data=sqlite:{data}', f'--model={root}/bn.keras', '--algorithm=fedavg',
        '--total_rounds=1', '--client_epochs_per_round=1', '--client_batch_size=5',
        '--client_learning_rate=0.05', '--clients_per_round=1', f'--seed={SEED}',
        f'--root_output_dir={root}/out', '--experiment_name=bn', '--progress=false'])
    self.assertEqual(code, 0, err)
    self.assertIn('test accuracy', out)
    # The batch order the run used: its client shuffle (TF's, seeded by
    # (seed, round 1, client 0) under the run's global seed).
    tf.keras.utils.set_random_seed(SEED)
    order = list(tf.data.Dataset.range(20).shuffle(
        10_000, seed=training.client_shuffle_seed(SEED, 1, 0)).as_numpy_iterator())
    x, y = clients['train']['site0']
    keras_model = tf.keras.models.load_model(f'{root}/bn.keras')
    keras_model.fit(x[order], y[order], batch_size=5, epochs=1, shuffle=False, verbose=0)
    expected = keras_model.get_weights()
    found = final_weights(f'{root}/out', 'bn')
    self.assertLen(found, len(expected))
    for a, b in zip(found, expected):
      self.assertAllClose(a, b, atol=1e-6, rtol=0)
    self.assertNotAllClose(found[5], np.ones(6))  # The moving variance moved.

  @pytest.mark.timeout(600)
  def test_pruned_on_two_workers_kill_and_resume_exactly(self):
    root = self.create_tempdir().full_path
    data = writer.write(image_clients([20, 12, 16]), f'sqlite:{root}/three.sqlite')
    bn_model(compiled=False).save(f'{root}/bn.keras')

    def argv(out):
      return [f'--client_data=sqlite:{data}', f'--model={root}/bn.keras',
              '--algorithm=fedsparsify_global', '--final_sparsity=0.8', '--total_rounds=3',
              '--client_epochs_per_round=1', '--client_batch_size=4', '--clients_per_round=2',
              f'--seed={SEED}', f'--root_output_dir={out}', '--experiment_name=bn',
              '--progress=false', '--num_local_workers=2']

    reference = fixtures.start_binary('train', argv(f'{root}/ref'))
    victim = fixtures.start_binary('train', argv(f'{root}/run'))
    checkpoint_1 = f'{root}/run/checkpoints/bn/program_state_1'
    deadline = time.monotonic() + 300
    while not os.path.isdir(checkpoint_1) and victim.poll() is None:
      self.assertLess(time.monotonic(), deadline, 'no first checkpoint')
      time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    code, _, err = fixtures.run_binary_process('train', argv(f'{root}/run'))
    self.assertEqual(code, 0, err)
    self.assertIn('no compiled loss: training with sparse categorical cross-entropy', err)
    _, err = reference.communicate(timeout=300)
    self.assertEqual(reference.returncode, 0, err.decode()[-2000:])
    resumed, uninterrupted = final_weights(f'{root}/run', 'bn'), final_weights(f'{root}/ref', 'bn')
    for a, b in zip(resumed, uninterrupted):
      self.assertAllEqual(a, b)
    stripped = tf.keras.models.load_model(f'{root}/run/results/bn/final_model.keras')
    kernels = [w.numpy() for w in stripped.weights if 'kernel' in w.name]
    self.assertLen(kernels, 3)
    total = sum(k.size for k in kernels)
    self.assertIn(sum(int(np.sum(k == 0)) for k in kernels),
                  (np.floor(0.8 * total), np.ceil(0.8 * total)))
    moving_mean = [w.numpy() for w in stripped.weights if 'moving_mean' in w.name][0]
    self.assertNotAllClose(moving_mean, np.zeros(6))


class TextModelTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.module_dir = self.create_tempdir().full_path
    with open(os.path.join(self.module_dir, 'user_text_model.py'), 'w') as f:
      f.write(TEXT_MODULE)

  def test_wrapped_layers_are_tfmots_prunable_ones(self):
    sys.path.insert(0, self.module_dir)
    self.addCleanup(sys.path.remove, self.module_dir)
    import user_text_model  # pylint: disable=g-import-not-at-top,import-outside-toplevel
    model = user_text_model.gru_model()
    supported = {type(layer) for layer in model.layers if prune_registry.PruneRegistry.supports(layer)}
    self.assertEqual(supported, {tf.keras.layers.Embedding, tf.keras.layers.GRU,
                                 tf.keras.layers.Dense})
    wrapped = pruning.wrap_for_pruning(model)
    self.assertEqual({type(w.layer) for w in pruning.wrappers(wrapped)}, supported)
    names = sorted(w.name.split('/')[-1].split(':')[0] for w in pruning.prunable_weights(wrapped))
    # tfmot's registry: Embedding's embeddings, GRUCell's kernel and recurrent
    # kernel, Dense's kernel.
    self.assertEqual(names, ['embeddings', 'kernel', 'kernel', 'recurrent_kernel'])

  def test_fedsparsify_local_trains_and_exports(self):
    root = self.create_tempdir().full_path
    rng = np.random.default_rng(0)
    clients = {'train': {}}
    for c in range(3):
      tokens = (np.arange(80) * (c + 1) + rng.integers(0, 2, 80)) % 12
      clients['train'][f'user{c}'] = (np.stack([tokens[i:i + 5] for i in range(60)]),
                                      tokens[5:65])
    data = writer.write(clients, f'tfrecord_dir:{root}/text')
    env = dict(fixtures.subprocess_env(), PYTHONPATH=self.module_dir)
    proc = fixtures.start_binary('train', [
        f'--client_data=tfrecord_dir:{data}', '--model=user_text_model:gru_model',
        '--algorithm=fedsparsify_local', '--final_sparsity=0.5', '--total_rounds=2',
        '--client_epochs_per_round=1', '--clients_per_round=3', f'--root_output_dir={root}/out',
        '--experiment_name=text', '--progress=false'], env=env)
    out, err = proc.communicate(timeout=300)
    self.assertEqual(proc.returncode, 0, err.decode()[-2000:])
    self.assertIn('sparsity 0.5000', out.decode())
    self.assertNotIn('test accuracy', out.decode())  # No test split: not evaluated.
    code, out, err = fixtures.run_binary_process(
        'export', [f'--run_dir={root}/out/results/text'])
    self.assertEqual(code, 0, err)
    self.assertRegex(out, r'exported: .*model\.onnx .*max abs diff')
