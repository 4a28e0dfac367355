"""Federated evaluation (one call for all clients) against a hand computation and TFF's build_fed_eval.

Oracles: NumPy (logits, accuracy and cross-entropy by hand) and TFF's
`build_fed_eval` run on all clients and on each client alone.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify.learning import models
from tff_sparsify.simulation import client_ids
from tff_sparsify.simulation import evaluation
from tff_sparsify.simulation import execution
from tff_sparsify.simulation import sources
from tff_sparsify.simulation.sources import tensor_dir

W = np.array([[1.0, -1.0], [0.5, 2.0], [-1.0, 0.0]], np.float32)


def keras_model():
  model = tf.keras.Sequential([tf.keras.layers.InputLayer((3,)),
                               tf.keras.layers.Dense(2, use_bias=False)])
  model.set_weights([W])
  return model


def clients():
  rng = np.random.default_rng(3)
  return {f'c{i}': (rng.normal(size=(n, 3)).astype(np.float32),
                    rng.integers(0, 2, n).astype(np.int32)) for i, n in enumerate((4, 9, 6))}


class FederatedEvaluationTest(tf.test.TestCase):

  def assert_equals_hand_computation(self, found, data):
    # By hand: logits x W, accuracy and mean cross-entropy per client.
    accuracy, loss, sizes = [], [], []
    for x, y in data.values():
      logits = x @ W
      log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
      accuracy.append(np.mean(logits.argmax(1) == y))
      loss.append(-np.mean(log_softmax[np.arange(len(y)), y]))
      sizes.append(len(y))
    sizes = np.array(sizes)
    self.assertAllClose(found['sparse_categorical_accuracy'],
                        np.sum(np.array(accuracy) * sizes) / sizes.sum())
    self.assertAllClose(found['loss'], np.sum(np.array(loss) * sizes) / sizes.sum(), atol=1e-6)
    self.assertAllClose(found['sparse_categorical_accuracy_min'], min(accuracy))
    self.assertAllClose(found['sparse_categorical_accuracy_median'], np.median(accuracy))
    self.assertAllClose(found['sparse_categorical_accuracy_max'], max(accuracy))
    self.assertAllClose(found['loss_min'], min(loss), atol=1e-6)
    self.assertAllClose(found['loss_max'], max(loss), atol=1e-6)
    self.assertEqual(found['num_examples'], sizes.sum())
    self.assertEqual(found['num_clients'], len(data))

  def test_weighted_mean_and_spread_equal_numpy(self):
    data = clients()
    client_data = tff.simulation.datasets.TestClientData(
        {cid: collections.OrderedDict(x=x, y=y) for cid, (x, y) in data.items()})
    model_fn = models.model_fn_from(keras_model)
    evaluate = evaluation.build_federated_evaluation_fn(
        model_fn, client_data, element_fn=lambda e: e, batch_size=4)
    with execution.local_cpp_execution_context():
      found = evaluate(tff.learning.models.ModelWeights.from_model(keras_model()))
    self.assert_equals_hand_computation(found, data)

  def test_one_call_equals_build_fed_eval_on_all_and_on_each_client(self):
    data = clients()
    datasets = [tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(4)
                for x, y in data.values()]
    client_data = tff.simulation.datasets.TestClientData(
        {cid: collections.OrderedDict(x=x, y=y) for cid, (x, y) in data.items()})
    # A second metric: each is finalized by its own finalizer.
    model_fn = models.model_fn_from(keras_model, metrics_fn=lambda: [
        tf.keras.metrics.SparseCategoricalAccuracy(),
        tf.keras.metrics.SparseTopKCategoricalAccuracy(k=1, name='top1')])
    evaluate = evaluation.build_federated_evaluation_fn(
        model_fn, client_data, element_fn=lambda e: e, batch_size=4)
    process = tff.learning.algorithms.build_fed_eval(model_fn)
    weights = tff.learning.models.ModelWeights.from_model(keras_model())

    def fed_eval(datasets_):
      state = process.set_model_weights(process.initialize(), weights)
      return process.next(state, datasets_).metrics['client_work']['eval'][
          'current_round_metrics']

    with execution.local_cpp_execution_context():
      found = evaluate(weights)
      expected = fed_eval(datasets)
      each = [fed_eval([d]) for d in datasets]
    for name, value in expected.items():
      self.assertAllClose(found[name], value, rtol=1e-6, msg=name)
      if name not in ('num_examples', 'num_batches'):
        values = [float(e[name]) for e in each]
        self.assertAllClose(found[f'{name}_min'], min(values), rtol=1e-6, msg=name)
        self.assertAllClose(found[f'{name}_median'], np.median(values), rtol=1e-6, msg=name)
        self.assertAllClose(found[f'{name}_max'], max(values), rtol=1e-6, msg=name)
    self.assertIn('top1', expected)

  def test_by_id_on_two_workers_equals_numpy(self):
    data = clients()
    root = self.create_tempdir().full_path + '/clients'
    tensor_dir.write({sources.TRAIN: collections.OrderedDict(
        (cid, (x, y.astype(np.int64))) for cid, (x, y) in data.items())}, root)
    with execution.worker_pool_context(num_local_workers=2,
                                       client_data=f'tensor_dir:{root}') as context:
      federation = client_ids.discover(context, shared=True)
      computation = client_ids.build_dataset_computation(
          federation, dict(x='x', y='y'), lambda dataset, seed: dataset.batch(4))
      evaluate = evaluation.build_federated_evaluation_fn_by_id(
          models.model_fn_from(keras_model), federation, context, computation,
          split=sources.TRAIN)
      found = evaluate(tff.learning.models.ModelWeights.from_model(keras_model()))
    self.assert_equals_hand_computation(found, data)

  def test_held_out_split(self):
    client_data = tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
        ['a'], lambda cid: tf.data.Dataset.range(8).map(lambda i: collections.OrderedDict(x=i)))
    train, test = evaluation.held_out_split(client_data, 0.25)
    # floor((i + 1) / 4) > floor(i / 4) at i = 3 and 7.
    self.assertEqual([e['x'] for e in test.create_tf_dataset_for_client('a').as_numpy_iterator()],
                     [3, 7])
    self.assertEqual([e['x'] for e in train.create_tf_dataset_for_client('a').as_numpy_iterator()],
                     [0, 1, 2, 4, 5, 6])

