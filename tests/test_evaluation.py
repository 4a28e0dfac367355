"""Federated evaluation (TFF's build_fed_eval per client) against a hand computation on 3 clients."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify.learning import models
from tff_sparsify.simulation import evaluation
from tff_sparsify.simulation import execution

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

  def test_weighted_mean_and_spread_equal_numpy(self):
    data = clients()
    client_data = tff.simulation.datasets.TestClientData(
        {cid: collections.OrderedDict(x=x, y=y) for cid, (x, y) in data.items()})
    model_fn = models.model_fn_from(keras_model)
    evaluate = evaluation.build_federated_evaluation_fn(
        model_fn, client_data, element_fn=lambda e: e, batch_size=4)
    with execution.local_cpp_execution_context():
      found = evaluate(tff.learning.models.ModelWeights.from_model(keras_model()))
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
    self.assertAllClose(found['loss_max'], max(loss), atol=1e-6)
    self.assertEqual(found['num_examples'], 19)
    self.assertEqual(found['num_clients'], 3)

  def test_held_out_split(self):
    client_data = tff.simulation.datasets.ClientData.from_clients_and_tf_fn(
        ['a'], lambda cid: tf.data.Dataset.range(8).map(lambda i: collections.OrderedDict(x=i)))
    train, test = evaluation.held_out_split(client_data, 0.25)
    # floor((i + 1) / 4) > floor(i / 4) at i = 3 and 7.
    self.assertEqual([e['x'] for e in test.create_tf_dataset_for_client('a').as_numpy_iterator()],
                     [3, 7])
    self.assertEqual([e['x'] for e in train.create_tf_dataset_for_client('a').as_numpy_iterator()],
                     [0, 1, 2, 4, 5, 6])

