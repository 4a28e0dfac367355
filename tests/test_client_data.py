"""Client data files: the writer, TFF's SQLite layout and TFRecord directories, read back.

Oracles: the NumPy arrays written (every example, in order), TFF's own
`SqlClientData` reader, and the built-in FashionMNIST path (a run on the
written files gives bit-for-bit the built-in run's final weights).
"""

import collections
import os
import sqlite3

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tests import fixtures
from tff_sparsify.simulation.sources import sqlite as sqlite_source
from tff_sparsify.simulation.sources import tensor_dir
from tff_sparsify.simulation.sources import tfrecord_dir
from tff_sparsify.simulation.sources import spec as spec_lib
from tff_sparsify.simulation.sources import writer

FEATURES = dict(x='x', y='y')


def npz_clients(directory, kinds=('f', 'f', 'f')):
  """Three clients of 3x2 inputs (float or int), the first two with test examples."""
  rng = np.random.default_rng(0)
  arrays = {}
  for i, (kind, n) in enumerate(zip(kinds, (5, 3, 4))):
    x = rng.normal(size=(n, 3, 2)).astype(np.float32) if kind == 'f' else rng.integers(
        0, 50, size=(n, 3, 2))
    y = rng.integers(0, 4, size=n)
    entry = dict(x=x, y=y)
    if i < 2:
      entry.update(x_test=x[:2] + 1, y_test=y[:2])
    arrays[f'c{i}'] = entry
    np.savez(os.path.join(directory, f'c{i}.npz'), **entry)
  return arrays


def read_back(client_data, client_id):
  elements = list(client_data.create_tf_dataset_for_client(client_id).as_numpy_iterator())
  return np.stack([e['x'] for e in elements]), np.array([e['y'] for e in elements])


class WriterTest(tf.test.TestCase):

  def test_npz_to_sqlite_and_tfrecord_dir_round_trip(self):
    root = self.create_tempdir().full_path
    npz = os.path.join(root, 'npz')
    os.makedirs(npz)
    arrays = npz_clients(npz)
    clients = writer.read_input(f'npz_dir:{npz}')
    for output, module in ((f'sqlite:{root}/d.sqlite', sqlite_source),
                           (f'tfrecord_dir:{root}/d', tfrecord_dir)):
      path = writer.write(clients, output)
      module.check(path)
      splits = module.open_splits(path, FEATURES)
      self.assertEqual(sorted(splits['train'].client_ids), ['c0', 'c1', 'c2'])
      self.assertEqual(sorted(splits['test'].client_ids), ['c0', 'c1'])
      for cid, entry in arrays.items():
        x, y = read_back(splits['train'], cid)
        self.assertAllEqual(x, entry['x'])
        self.assertAllEqual(y, entry['y'])
        self.assertEqual(y.dtype, np.int32)
        if 'x_test' in entry:
          x, y = read_back(splits['test'], cid)
          self.assertAllEqual(x, entry['x_test'])

  def test_sqlite_is_tffs_layout(self):
    """TFF's own reader, given the spec the file carries, reads what was written."""
    root = self.create_tempdir().full_path
    npz = os.path.join(root, 'npz')
    os.makedirs(npz)
    arrays = npz_clients(npz, kinds=('i', 'i', 'i'))
    path = writer.write(writer.read_input(f'npz_dir:{npz}'), f'sqlite:{root}/d.sqlite')
    spec = sqlite_source.read_spec(path)
    self.assertEqual(spec, dict(x=dict(dtype='int64', shape=[3, 2]),
                                y=dict(dtype='int64', shape=[])))
    tff_data = tff.simulation.datasets.load_and_parse_sql_client_data(
        path, collections.OrderedDict(x=tf.TensorSpec([3, 2], tf.int64),
                                      y=tf.TensorSpec([], tf.int64)), split_name='train')
    x, y = read_back(tff_data, 'c1')
    self.assertAllEqual(x, arrays['c1']['x'])
    self.assertAllEqual(y, arrays['c1']['y'])
    with sqlite3.connect(path) as connection:
      rows = dict(((cid, split), n) for cid, split, n in connection.execute(
          'SELECT client_id, split_name, num_examples FROM client_metadata'))
    self.assertEqual(rows[('c2', 'train')], 4)
    self.assertEqual(rows[('c0', 'test')], 2)

  def test_spec_from_the_first_record_without_a_spec(self):
    root = self.create_tempdir().full_path
    npz = os.path.join(root, 'npz')
    os.makedirs(npz)
    arrays = npz_clients(npz)
    path = writer.write(writer.read_input(f'npz_dir:{npz}'), f'tfrecord_dir:{root}/d')
    os.remove(os.path.join(path, spec_lib.SPEC_FILE))
    self.assertEqual(tfrecord_dir.read_spec(path),
                     dict(x=dict(dtype='float32', shape=[6]), y=dict(dtype='int64', shape=[])))
    x, _ = read_back(tfrecord_dir.open_splits(path, FEATURES)['train'], 'c0')
    self.assertAllEqual(x, arrays['c0']['x'].reshape(5, 6))

  def test_csv_input(self):
    root = self.create_tempdir().full_path
    path = os.path.join(root, 'records.csv')
    with open(path, 'w') as f:
      f.write('client_id,a,label,b,split\nh1,1.5,2,3,train\nh2,0,1,-1,train\n'
              'h1,2,0,4,train\nh1,9,1,9,test\n')
    clients = writer.read_input(f'csv:{path}')
    self.assertAllEqual(clients['train']['h1'][0], [[1.5, 3], [2, 4]])
    self.assertAllEqual(clients['train']['h1'][1], [2, 0])
    self.assertAllEqual(clients['test']['h1'][0], [[9, 9]])
    self.assertAllEqual(clients['train']['h2'][1], [1])

  def test_bad_inputs(self):
    root = self.create_tempdir().full_path
    path = os.path.join(root, 'bad.csv')
    with open(path, 'w') as f:
      f.write('client_id,a,label\nh1,x,2\n')
    with self.assertRaisesRegex(writer.WriterError, r'bad.csv:2: the inputs must be numbers'):
      writer.read_input(f'csv:{path}')
    with self.assertRaisesRegex(writer.WriterError, 'no column'):
      writer.csv_file(path, client_column='hospital')
    with self.assertRaisesRegex(writer.WriterError, 'cannot name a file'):
      writer.check_clients({'train': {'../x': (np.zeros((1, 2)), np.zeros(1, np.int64))}}, 'in')


class LabelScanTest(tf.test.TestCase):
  """The coordinator's check that every label fits the model reads every client and the test set."""

  def test_largest_label_of_all_clients_and_the_test_split_equals_numpy(self):
    from tff_sparsify.simulation import run_data  # pylint: disable=g-import-not-at-top
    from tff_sparsify.simulation import run_inputs  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(1)
    clients = {'train': collections.OrderedDict(), 'test': collections.OrderedDict()}
    for i in range(30):
      clients['train'][f'c{i:02d}'] = (rng.normal(size=(3, 2)).astype(np.float32),
                                      rng.integers(0, 4, 3))
    clients['train']['c17'][1][2] = 6  # Not in the first client, nor the last.
    modules = dict(sqlite=sqlite_source, tfrecord_dir=tfrecord_dir, tensor_dir=tensor_dir)
    for kind, module in modules.items():
      path = writer.write(clients, f'{kind}:{self.create_tempdir().full_path}/d')
      splits = module.open_splits(path, FEATURES)

      def largest(test_labels, splits=splits):
        test = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
            x=np.zeros((2, 2), np.float32), y=np.array(test_labels, np.int64)))
        return run_inputs._labels_max(run_data.RunData(  # pylint: disable=protected-access
            train=splits['train'], test=test, element_fn=lambda e: e, source=path))

      expected = max(int(y.max()) for _, y in clients['train'].values())
      self.assertEqual(expected, 6)
      self.assertEqual(largest([0, 0]), expected, kind)
      self.assertEqual(largest([0, 9]), 9, kind)  # A label of the test split only.


class WrittenFashionMnistTest(tf.test.TestCase):
  """FashionMNIST written by tff-sparsify-data trains exactly as the built-in path."""

  def test_sqlite_equals_the_builtin_path_bit_for_bit_and_tfrecord_dir_the_sqlite_file(self):
    root = self.create_tempdir().full_path
    data_dir = fixtures.write_fashion_mnist_like(os.path.join(root, 'idx'), num_test=80)
    partition = ['--partition=shards', '--num_clients=4', '--classes_per_client=2', '--seed=5']
    code, out, err = fixtures.run_binary_process('data', [
        '--input=fashion_mnist', f'--data_dir={data_dir}', *partition,
        f'--output=sqlite:{root}/fm.sqlite,tfrecord_dir:{root}/fm'])
    self.assertEqual(code, 0, err)
    self.assertIn('train 4 clients, 400 examples, test 4 clients, 80 examples', out)
    common = ['--algorithm=fedsparsify_global', '--final_sparsity=0.6', '--total_rounds=2',
              '--client_epochs_per_round=1', '--clients_per_round=3', '--progress=false',
              f'--root_output_dir={root}/out', *partition]
    weights, summaries = {}, {}
    # As a user runs them: separate processes (one process's earlier runs
    # leave TensorFlow state behind), side by side.
    runs = {name: fixtures.start_binary('train', [*common, data, f'--experiment_name={name}'])
            for name, data in (('builtin', f'--data_dir={data_dir}'),
                               ('sqlite', f'--client_data=sqlite:{root}/fm.sqlite'))}
    # The TFRecord directory holds the SQLite file's examples, client by
    # client in the same order, so it trains as the SQLite file does.
    by_format = [module.open_splits(path, FEATURES) for module, path in (
        (sqlite_source, f'{root}/fm.sqlite'), (tfrecord_dir, f'{root}/fm'))]
    for split in ('train', 'test'):
      self.assertEqual(by_format[0][split].client_ids, by_format[1][split].client_ids)
      for cid in by_format[0][split].client_ids:
        for a, b in zip(read_back(by_format[0][split], cid), read_back(by_format[1][split], cid)):
          self.assertAllEqual(a, b)
    for name, proc in runs.items():
      _, err = proc.communicate(timeout=300)
      self.assertEqual(proc.returncode, 0, err.decode()[-2000:])
      results = os.path.join(root, 'out', 'results', name)
      with np.load(os.path.join(results, 'final_weights.npz')) as f:
        weights[name] = [f[k] for k in sorted(f.files, key=lambda k: int(k.split('_')[1]))]
      summaries[name] = fixtures.read_json(os.path.join(results, 'summary.json'))
    for a, b in zip(weights['builtin'], weights['sqlite']):
      self.assertAllEqual(a, b)
    # Federated evaluation by default (the file's clients have test
    # examples): over the same examples as the built-in central test set,
    # each client's share of it.
    self.assertNotIn('test_accuracy', summaries['sqlite'])
    self.assertAlmostEqual(summaries['sqlite']['federated_test_accuracy'],
                           summaries['builtin']['test_accuracy'], places=6)
    self.assertLessEqual(summaries['sqlite']['federated_test_accuracy_min'],
                         summaries['sqlite']['federated_test_accuracy'])
    self.assertAlmostEqual(summaries['sqlite']['sparsity'], 0.6, places=5)
