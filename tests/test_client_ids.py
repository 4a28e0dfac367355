"""Clients served by id (issue 34): manifests, the federation, datasets built at the worker.

Oracles: NumPy for what the writer wrote (counts, examples), TFF's own
readers (`SqlClientData`) and the dataset path (datasets made on the
coordinator, TFF's default) for the weights of a round.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
from unittest import mock

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify.simulation import client_ids
from tff_sparsify.simulation import run_data as data
from tff_sparsify.simulation import execution
from tff_sparsify.simulation import silo
from tff_sparsify.simulation import sources
from tff_sparsify.simulation import training
from tff_sparsify.simulation.sources import sqlite
from tff_sparsify.simulation.sources import tensor_dir
from tff_sparsify.simulation.sources import tfrecord_dir
from tff_sparsify.simulation.sources import writer


def _clients(seed=0, ids=('c0', 'c1', 'c2', 'c3')):
  rng = np.random.default_rng(seed)
  found = collections.OrderedDict(train=collections.OrderedDict(), test=collections.OrderedDict())
  for i, cid in enumerate(ids):
    found['train'][cid] = (rng.normal(size=(20 + i, 5)).astype(np.float32),
                           rng.integers(0, 3, 20 + i))
    found['test'][cid] = (rng.normal(size=(5, 5)).astype(np.float32), rng.integers(0, 3, 5))
  return found


def _model_fn():
  model = tf.keras.Sequential([tf.keras.layers.InputLayer((5,)), tf.keras.layers.Dense(3)])
  return tff.learning.models.from_keras_model(
      model, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
      input_spec=collections.OrderedDict(x=tf.TensorSpec([None, 5], tf.float32),
                                         y=tf.TensorSpec([None], tf.int32)))


class ManifestTest(tf.test.TestCase):

  def test_manifest_of_each_format_counts_what_was_written(self):
    clients = _clients()
    tmp = self.create_tempdir().full_path
    expected = {split: {c: len(y) for c, (_, y) in by.items()} for split, by in clients.items()}
    for kind in ('sqlite', 'tfrecord_dir'):
      path = writer.write(clients, f'{kind}:{tmp}/{kind}')
      manifest = silo.build_manifest(f'{kind}:{path}')
      self.assertEqual(manifest['format'], kind)
      self.assertEqual({s: e['clients'] for s, e in manifest['splits'].items()}, expected)
      self.assertEqual(manifest['element_spec']['x'], dict(dtype='float32', shape=[5]))
    path = os.path.join(tmp, 'tensors')
    tensor_dir.write(clients, path)
    manifest = silo.build_manifest(f'tensor_dir:{path}')
    self.assertEqual({s: e['clients'] for s, e in manifest['splits'].items()}, expected)

  def test_tfrecord_count_from_headers_equals_tensorflows(self):
    tmp = self.create_tempdir().full_path
    path = os.path.join(tmp, 'a.tfrecord')
    with tf.io.TFRecordWriter(path) as w:
      for n in (0, 1, 300, 70000):
        w.write(b'x' * n)
    self.assertEqual(tfrecord_dir.count_records(path),
                     int(tf.data.TFRecordDataset(path).reduce(0, lambda c, _: c + 1)))
    with open(path, 'ab') as f:
      f.write(b'\x05')
    with self.assertRaisesRegex(sources.SourceError, 'truncated record header'):
      tfrecord_dir.count_records(path)

  def test_a_worker_reply_is_checked_as_untrusted_data(self):
    good = silo.build_manifest(
        f'sqlite:{writer.write(_clients(), "sqlite:" + self.create_tempdir().full_path + "/a")}')
    self.assertEqual(silo.parse_manifest(json.dumps(good).encode(), 'w'), good)

    def changed(**kwargs):
      manifest = json.loads(json.dumps(good))
      for key, value in kwargs.items():
        manifest[key] = value
      return json.dumps(manifest).encode()

    bad_id = json.loads(json.dumps(good))
    bad_id['splits']['train']['clients']['../../etc/passwd'] = 3
    bad_count = json.loads(json.dumps(good))
    bad_count['splits']['train']['clients']['c0'] = -1
    for raw, message in (
        (b'\xff not json', 'not JSON'),
        (changed(version=2), 'not a version 1 manifest'),
        (changed(format='python_pickle'), "format 'python_pickle' is not one of"),
        (changed(element_spec={'x': {'dtype': 'object', 'shape': [1]}}), "feature 'x' must be"),
        (changed(splits={'validation': {}}), 'splits must be train'),
        (json.dumps(bad_id).encode(), 'holds a path separator'),
        (json.dumps(bad_count).encode(), "client 'c0' has -1 examples"),
        (b' ' * (silo.MAX_MANIFEST_BYTES + 1), 'over the'),
    ):
      with self.assertRaisesRegex(silo.ManifestError, f'^w: .*{message}'):
        silo.parse_manifest(raw, 'w')


class StaleDirectoryTest(tf.test.TestCase):
  """A worker killed with SIGKILL leaves its directory; the next `prepare` removes it, only it."""

  def test_only_dead_workers_directories_of_this_user_are_removed(self):
    path = 'sqlite:' + writer.write(_clients(), f'sqlite:{self.create_tempdir().full_path}/d')
    tmp = self.create_tempdir().full_path
    env = dict(os.environ, TMPDIR=tmp)
    # A worker's `prepare` in a process of its own, killed with SIGKILL.
    code = ('import sys, time; from tff_sparsify.simulation import silo; '
            f'print(silo.prepare({path!r}), flush=True); time.sleep(120)')
    killed = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, env=env)
    alive = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, env=env)
    try:
      killed_dir = killed.stdout.readline().decode().strip()
      alive_dir = alive.stdout.readline().decode().strip()
      killed.send_signal(signal.SIGKILL)
      killed.wait(10)
      self.assertTrue(os.path.isdir(killed_dir))
      # Not a worker's: no lock file, a link, and (as root, who can give
      # it away) another user's with a free lock.
      no_lock = os.path.join(tmp, silo.PREFIX + 'nolock')
      os.mkdir(no_lock)
      others = os.path.join(tmp, silo.PREFIX + 'others')
      if os.geteuid() == 0:
        os.mkdir(others)
        open(os.path.join(others, silo.LOCK_FILE), 'w').close()
        os.chown(others, 65534, 65534)
      link = os.path.join(tmp, silo.PREFIX + 'link')
      os.symlink(killed_dir, link)
      with mock.patch.dict(os.environ, TMPDIR=tmp), mock.patch.object(tempfile, 'tempdir', None):
        mine = silo.prepare(path)
      try:
        self.assertFalse(os.path.exists(killed_dir))
        self.assertTrue(os.path.isfile(os.path.join(alive_dir, silo.MANIFEST_FILE)))
        self.assertTrue(os.path.isdir(no_lock))
        self.assertTrue(os.path.islink(link))
        self.assertEqual(os.path.isdir(others), os.geteuid() == 0)
        # This process's own directory is held too.
        self.assertEqual(silo.remove_stale(tmp), [])
        self.assertTrue(os.path.isdir(mine))
      finally:
        silo.remove(mine)
      self.assertFalse(os.path.exists(mine))
    finally:
      for proc in (killed, alive):
        proc.kill()
        proc.wait(10)
    # Its worker gone, the survivor's directory goes at the next sweep.
    self.assertEqual(silo.remove_stale(tmp), [alive_dir])


class FederationTest(tf.test.TestCase):

  def _manifest(self, ids, spec=None):
    return dict(version=1, format='sqlite',
                element_spec=spec or {'x': dict(dtype='float32', shape=[5]),
                                      'y': dict(dtype='int64', shape=[])},
                splits={'train': dict(name='train', clients={c: 10 + i for i, c in enumerate(ids)})})

  def test_clients_go_to_the_worker_holding_them_in_sampling_order(self):
    federation = client_ids.Federation(
        workers=('a:1', 'b:1'), manifests=(self._manifest(['c0', 'c2']),
                                           self._manifest(['c1', 'c3'])), shared=False)
    args, counts = federation.arguments(['c3', 'c2', 'c1'], [30, 20, 10])
    self.assertEqual([a['id'] for a in args], ['c2', 'c3', 'c1'])
    self.assertEqual([int(a['seed']) for a in args], [20, 30, 10])
    self.assertEqual([int(a['examples']) for a in args], [11, 11, 10])
    self.assertEqual(counts, [1, 2])
    shared = client_ids.Federation(workers=('a', 'b'), manifests=(self._manifest(['c0', 'c1']),) * 2,
                                   shared=True)
    args, counts = shared.arguments(['c1', 'c0'], [1, 2])
    self.assertEqual(([a['id'] for a in args], counts), (['c1', 'c0'], None))

  def test_duplicate_ids_and_differing_specs_name_the_workers(self):
    federation = client_ids.Federation(
        workers=('a:1', 'b:1'), manifests=(self._manifest(['c0', 'c1']),
                                           self._manifest(['c1'])), shared=False)
    with self.assertRaisesRegex(client_ids.FederationError,
                                "^client 'c1' is held by worker a:1 and by worker b:1"):
      client_ids._check_consistent(federation)  # pylint: disable=protected-access
    other = self._manifest(['c2'], spec={'x': dict(dtype='float32', shape=[6]),
                                         'y': dict(dtype='int64', shape=[])})
    federation = client_ids.Federation(workers=('a:1', 'b:1'),
                                       manifests=(self._manifest(['c0']), other), shared=False)
    with self.assertRaisesRegex(client_ids.FederationError, '^worker b:1: element spec'):
      client_ids._check_consistent(federation)  # pylint: disable=protected-access


class ByIdRoundTest(tf.test.TestCase):
  """One FedAvg round with datasets built at the workers equals the dataset path."""

  def test_round_by_id_equals_datasets_made_on_the_coordinator(self):
    path = writer.write(_clients(), f'sqlite:{self.create_tempdir().full_path}/a.sqlite')
    element_fn = data.cast_to(tf.float32)

    def preprocess(dataset, seed):
      return data.preprocess_client_dataset(dataset, batch_size=4, epochs=2, seed=seed,
                                            element_fn=element_fn)

    tf.keras.utils.set_random_seed(7)
    process = tff.learning.algorithms.build_weighted_fed_avg(
        _model_fn, tff.learning.optimizers.build_sgdm(0.1))
    ids, seeds = ['c2', 'c0', 'c3'], [11, 12, 13]
    # The oracle: TFF's SqlClientData read on the coordinator, datasets sent.
    reader = sqlite.open_splits(path, dict(x='x', y='y'))['train']
    for workers in (1, 2):
      with execution.worker_pool_context(num_local_workers=workers,
                                         client_data=f'sqlite:{path}') as context:
        federation = client_ids.discover(context, shared=True)
        self.assertEqual(list(federation.clients()), ['c0', 'c1', 'c2', 'c3'])
        computation = client_ids.build_dataset_computation(
            federation, dict(x='x', y='y'), preprocess, graph_seed=7)
        by_id = training.ByIdProcess(process, computation, context)
        state = by_id.next(by_id.initialize(), federation.arguments(ids, seeds)).state
        datasets = [preprocess(reader.create_tf_dataset_for_client(c), s)
                    for c, s in zip(ids, seeds)]
        expected = process.next(process.initialize(), datasets).state
        for a, b in zip(process.get_model_weights(state).trainable,
                        process.get_model_weights(expected).trainable):
          self.assertAllEqual(a, b)


class BuiltinByIdTest(tf.test.TestCase):
  """The built-in clients, written for the workers, train as the coordinator's datasets did."""

  def test_builtin_clients_by_id_equal_the_dataset_path_bit_for_bit(self):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (60, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 60).astype(np.int64)
    shards = [np.arange(0, 25), np.arange(25, 40), np.arange(40, 60)[::-1]]
    served = client_ids.write_builtin(shards, images, labels,
                                      os.path.join(self.create_tempdir().full_path, 'c'))
    train = data.to_client_data(images, labels, shards)  # The coordinator's (dataset path).

    def model_fn():
      model = tf.keras.Sequential([tf.keras.layers.Flatten(input_shape=(28, 28)),
                                   tf.keras.layers.Dense(10)])
      return tff.learning.models.from_keras_model(
          model, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
          input_spec=collections.OrderedDict(x=tf.TensorSpec([None, 28, 28], tf.float32),
                                             y=tf.TensorSpec([None], tf.int32)))

    def preprocess(dataset, seed):
      return data.preprocess_client_dataset(dataset, batch_size=8, epochs=2, seed=seed)

    tf.keras.utils.set_random_seed(5)
    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, tff.learning.optimizers.build_sgdm(0.1))
    ids, seeds = [data.client_id(2), data.client_id(0)], [21, 22]
    with execution.worker_pool_context(num_local_workers=1, client_data=served) as context:
      federation = client_ids.discover(context, shared=True)
      computation = client_ids.build_dataset_computation(
          federation, dict(x='x', y='y'), preprocess, graph_seed=5)
      by_id = training.ByIdProcess(process, computation, context)
      state = by_id.next(by_id.initialize(), federation.arguments(ids, seeds)).state
      expected = process.next(process.initialize(), [
          preprocess(train.create_tf_dataset_for_client(c), s) for c, s in zip(ids, seeds)]).state
      for a, b in zip(process.get_model_weights(state).trainable,
                      process.get_model_weights(expected).trainable):
        self.assertAllEqual(a, b)


if __name__ == '__main__':
  tf.test.main()
