"""Run integrity as a user meets it: bad input, resumes with other flags (issue 16).

Every case runs a binary as a subprocess (`python -m binaries.X`), the way a
user starts it, and checks: exit code 2, exactly one line on stderr naming the
flag or file, no traceback, and nothing already written changed. The binaries
check flags, data files and the run record before TensorFlow loads, so these
cases take well under a second each.
"""

import gzip
import json
import os
import shutil
import struct

from absl.testing import absltest
from absl.testing import parameterized

from tests import fixtures
from tff_sparsify import config as config_lib
from tff_sparsify.simulation import run_record

_TINY = dict(num_clients=4, clients_per_round=3, client_epochs_per_round=1,
             client_batch_size=16, seed=7, progress='false', total_rounds=2,
             experiment_name='exp')


def _flags(**values) -> list[str]:
  return [f'--{k}={v}' for k, v in values.items()]


class _BinaryCase(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = absltest.get_default_test_tmpdir()
    cls.data_dir = fixtures.write_fashion_mnist_like(os.path.join(cls.root, 'fmnist_ok'))

  def setUp(self):
    super().setUp()
    # An earlier run's outputs, which no failed command may touch.
    self.out = self.create_tempdir().full_path
    results = os.path.join(self.out, 'results', 'exp')
    os.makedirs(results)
    config_lib.save(config_lib.TrainConfig(data_dir=self.data_dir, root_output_dir=self.out,
                                           **{k: v for k, v in _TINY.items() if k != 'progress'},
                                           progress=False),
                    os.path.join(results, 'config.json'))
    os.makedirs(os.path.join(self.out, 'checkpoints', 'exp', 'program_state_1'))
    with open(os.path.join(self.out, 'checkpoints', 'exp', 'program_state_1', 'x'), 'w') as f:
      f.write('state')
    self.before = fixtures.tree_snapshot(self.out)

  def assert_one_line_error(self, module, argv, regex, code=2):
    got, out, err = fixtures.run_binary_process(module, argv, timeout=120)
    self.assertEqual(got, code, err)
    self.assertNotIn('Traceback', err)
    self.assertLen(err.strip().splitlines(), 1, err)
    self.assertRegex(err.strip(), f'^{module}.py: error: ')
    self.assertRegex(err, regex)
    self.assertEqual(fixtures.tree_snapshot(self.out), self.before)
    return err


class TrainBadFlagsTest(_BinaryCase):

  def _argv(self, **overrides):
    values = dict(_TINY, data_dir=self.data_dir, root_output_dir=self.out,
                  experiment_name='other')
    values.update(overrides)
    return _flags(**values)

  @parameterized.named_parameters(
      # Out of range.
      ('num_clients', dict(num_clients=0), r'--num_clients=0: must be positive'),
      ('clients_per_round', dict(clients_per_round=0), r'--clients_per_round=0: must be positive'),
      ('cpr_above', dict(clients_per_round=5), r'--clients_per_round=5: must be at most --num_clients \(4\)'),
      ('total_rounds', dict(total_rounds=-3), r'--total_rounds=-3: must be positive'),
      ('epochs', dict(client_epochs_per_round=0), r'--client_epochs_per_round=0: must be positive'),
      ('batch', dict(client_batch_size=0), r'--client_batch_size=0: must be positive'),
      ('client_lr', dict(client_learning_rate=0.0), r'--client_learning_rate=0.0: must be positive'),
      ('server_lr', dict(server_learning_rate=-1), r'--server_learning_rate=-1.0: must be positive'),
      ('lr_nan', dict(client_learning_rate='nan'), r'--client_learning_rate=nan: must be positive'),
      ('alpha', dict(dirichlet_alpha=0), r'--dirichlet_alpha=0.0: must be positive'),
      ('mu', dict(algorithm='fedprox', proximal_strength=0), r'--proximal_strength=0.0: must be positive'),
      ('k', dict(classes_per_client=11), r'--classes_per_client=11: must be in \[1, 10\]'),
      ('momentum', dict(client_momentum=1.0), r'--client_momentum=1.0: must be in \[0, 1\)'),
      ('mfl_zero', dict(algorithm='fedavg_momentum', client_momentum=0),
       r'--client_momentum=0.0: must be > 0 for --algorithm=fedavg_momentum'),
      ('final_sparsity', dict(algorithm='fedsparsify_global', final_sparsity=1.0),
       r'--final_sparsity=1.0: must be in \[0, 1\)'),
      ('initial_sparsity', dict(algorithm='fedsparsify_local', initial_sparsity=0.95),
       r'--initial_sparsity=0.95: must be in \[0, final_sparsity=0.9\]'),
      ('start_round', dict(algorithm='fedsparsify_global', sparsify_start_round=-1),
       r'--sparsify_start_round=-1: must be >= 0'),
      ('start_after_end', dict(algorithm='oneshot_pruning', sparsify_start_round=2),
       r'--total_rounds=2: must be > sparsify_start_round=2'),
      ('frequency', dict(algorithm='random_pruning', sparsify_frequency=0),
       r'--sparsify_frequency=0: must be >= 1'),
      ('end_round', dict(algorithm='fedsparsify_global', sparsify_end_round=3),
       r'--sparsify_end_round=3: must be in \(sparsify_start_round=1, total_rounds=2\]'),
      ('exponent', dict(algorithm='fedsparsify_global', sparsify_exponent=0),
       r'--sparsify_exponent=0.0: must be > 0'),
      ('client_rate', dict(client_message_prune_rate=1.0),
       r'--client_message_prune_rate=1.0: must be in \[0, 1\)'),
      ('target_without_rate', dict(message_prune_target='delta'),
       r"--message_prune_target='delta': needs client_message_prune_rate > 0"),
      ('server_rate_prox', dict(algorithm='fedprox', server_message_prune_rate=0.5),
       r'--server_message_prune_rate=0.5: must be 0 for --algorithm=fedprox'),
      ('quantize_bits', dict(quantize_bits=17), r'--quantize_bits=17: must be 0 \(off\) or in \[1, 16\]'),
      ('quantize_prox', dict(algorithm='fedprox', quantize_bits=8),
       r'--quantize_bits=8: must be 0 for --algorithm=fedprox'),
      ('threshold', dict(quantize_bits=8, quantize_threshold=-1), r'--quantize_threshold=-1: must be >= 0'),
      ('placement_random', dict(algorithm='random_pruning', sparsity_placement='uniform'),
       r"--sparsity_placement='uniform': must be global for random pruning \(--algorithm=random_pruning\)"),
      ('placement_grasp', dict(algorithm='grasp', sparsity_placement='compute'),
       r"--sparsity_placement='compute': must be global for GraSP \(--algorithm=grasp\)"),
      ('snip_sparsity', dict(algorithm='snip', final_sparsity=1.0),
       r'--final_sparsity=1.0: must be in \[0, 1\)'),
      ('rounds_per_eval', dict(rounds_per_eval=0), r'--rounds_per_eval=0: must be positive'),
      ('rounds_per_checkpoint', dict(rounds_per_checkpoint=-1), r'--rounds_per_checkpoint=-1: must be positive'),
      ('experiment_slash', dict(experiment_name='a/b'), r"--experiment_name='a/b': must be a non-empty name"),
      ('experiment_dotdot', dict(experiment_name='..'), r"--experiment_name='..': must be a non-empty name"),
      # Wrong type.
      ('int_word', dict(num_clients='ten'), r'flag --num_clients=ten: invalid literal'),
      ('int_float', dict(total_rounds=1.5), r'flag --total_rounds=1.5: invalid literal'),
      ('float_word', dict(client_learning_rate='fast'), r'flag --client_learning_rate=fast: could not convert'),
      ('bool_word', dict(progress='maybe'), r'flag --progress=maybe: .*Non-boolean'),
      ('seed_word', dict(seed='x'), r'flag --seed=x: invalid literal'),
      # Empty.
      ('int_empty', dict(num_clients=''), r'flag --num_clients=: invalid literal'),
      ('float_empty', dict(final_sparsity=''), r'flag --final_sparsity=: could not convert'),
      ('enum_empty', dict(algorithm=''), r'flag --algorithm=: value should be one of'),
      ('experiment_empty', dict(experiment_name=''), r"--experiment_name='': must be a non-empty name"),
      ('root_empty', dict(root_output_dir=''), r"--root_output_dir='': must not be empty"),
      ('data_dir_empty', dict(data_dir=''), r"--data_dir='': is not a directory"),
      # Not one of the choices.
      ('dataset', dict(dataset='mnist'), r'flag --dataset=mnist: value should be one of'),
      ('model', dict(model='resnet'), r"--model='resnet': must be one of paper, small_cnn, mobilenet, mobilenet_x2, a saved Keras model PATH.keras or package.module:function"),
      ('model_dataset', dict(dataset='cifar10', model='small_cnn'),
       r"--model='small_cnn': is a model for fashion_mnist only; --dataset=cifar10 takes --model=paper"),
      ('partition', dict(partition='shards2'), r'flag --partition=shards2: value should be one of'),
      # Your data (issue 33).
      ('client_data', dict(client_data='parquet:x'),
       r"--client_data='parquet:x': must be KIND:PATH with KIND one of sqlite, tfrecord_dir"),
      ('features', dict(features='x:a'), r"--features='x:a': must be x:NAME,y:NAME"),
      ('evaluation', dict(evaluation='per_client'), r'flag --evaluation=per_client: value should be one of'),
      ('client_test_fraction', dict(client_test_fraction=1.5),
       r'--client_test_fraction=1.5: must be in \[0, 1\)'),
      ('federated_without_client_tests', dict(evaluation='federated'),
       r"--evaluation='federated': needs test examples at the clients: a test split in "
       r'--client_data, or --client_test_fraction > 0'),
      ('algorithm', dict(algorithm='fedavg2'), r'flag --algorithm=fedavg2: value should be one of'),
      ('quantizer', dict(quantizer='dense'), r'flag --quantizer=dense: value should be one of'),
      ('placement', dict(sparsity_placement='even'), r'flag --sparsity_placement=even: value should be one of'),
      ('aggregation', dict(mask_aggregation='median'), r'flag --mask_aggregation=median: value should be one of'),
      ('unknown_flag', dict(no_such_flag=1), r"Unknown command line flag 'no_such_flag'"),
      ('data_dir_missing', dict(data_dir='/nonexistent/fmnist'), r"--data_dir='/nonexistent/fmnist': is not a directory"),
      # The authors' partition on the 400 fixture examples: 3 x 2 chunks do not divide them.
      ('shards_uneven', dict(partition='shards', num_clients=3, clients_per_round=3),
       r'partition shards cuts the 400 training examples into num_clients x classes_per_client '
       r'= 6 equal chunks, which does not divide them'),
      # Workers (issue 12).
      ('local_workers_zero', dict(num_local_workers=0), r'--num_local_workers=0: must be in \[1, 64\]'),
      ('local_workers_many', dict(num_local_workers=65), r'--num_local_workers=65: must be in \[1, 64\]'),
      ('worker_timeout', dict(worker_timeout_seconds=0), r'--worker_timeout_seconds=0.0: must be positive'),
      ('worker_timeout_nan', dict(worker_timeout_seconds='nan'), r'--worker_timeout_seconds=nan: must be positive'),
      ('restarts', dict(max_worker_restarts=-1), r'--max_worker_restarts=-1: must be >= 0'),
      ('workers_no_port', dict(workers='hostonly'), r"--workers=\['hostonly'\]: 'hostonly' is not HOST:PORT"),
      ('workers_bad_port', dict(workers='h:70000'), r"'h:70000' is not HOST:PORT with a port in \[1, 65535\]"),
      ('workers_twice', dict(workers='h:1,h:1'), r'--workers=.*: lists a worker twice'),
      ('workers_and_local', dict(workers='h:1', num_local_workers=2),
       r'--num_local_workers=2: must be 1 \(the default\) with --workers'),
      ('workers_no_credentials', dict(workers='h:1'),
       r'--worker_credentials=None: must be set with --workers: remote workers are reached only over mutual TLS'),
      ('credentials_missing', dict(workers='h:1', worker_credentials='/nonexistent'),
       r"--worker_credentials='/nonexistent': is not a directory"),
  )
  def test_bad_flag(self, overrides, regex):
    self.assert_one_line_error('train', self._argv(**overrides), regex)

  def test_extra_argument(self):
    self.assert_one_line_error('train', self._argv() + ['extra'], 'Unexpected arguments: extra')

  def test_started_as_a_script_too(self):
    # `python binaries/train.py`, not `-m`: same one line, no TFF shutdown noise.
    proc = fixtures.subprocess.run(
        [fixtures.sys.executable, os.path.join('binaries', 'train.py'), '--num_clients=0'],
        cwd=fixtures.REPO, env=fixtures.subprocess_env(), capture_output=True, timeout=60)
    self.assertEqual(proc.returncode, 2)
    self.assertEqual(proc.stderr.decode().strip(), 'train.py: error: --num_clients=0: must be positive')


def _damaged_copy(src: str, dst: str, name: str, mutate) -> str:
  shutil.copytree(src, dst)
  path = os.path.join(dst, name)
  with gzip.open(path, 'rb') as f:
    raw = f.read()
  with gzip.open(path, 'wb') as f:
    f.write(mutate(raw))
  return dst


class TrainBadDataTest(_BinaryCase):

  def _argv(self, data_dir):
    return _flags(**dict(_TINY, data_dir=data_dir, root_output_dir=self.out,
                         experiment_name='other'))

  def test_empty_directory(self):
    empty = self.create_tempdir().full_path
    self.assert_one_line_error('train', self._argv(empty),
                               r'train-images-idx3-ubyte.gz: file not found')

  def test_truncated_payload(self):
    bad = _damaged_copy(self.data_dir, os.path.join(self.create_tempdir().full_path, 'd'),
                        'train-images-idx3-ubyte.gz', lambda raw: raw[:-100])
    self.assert_one_line_error('train', self._argv(bad),
                               r'train-images-idx3-ubyte.gz: header says 400 items .* truncated')

  def test_truncated_gzip(self):
    bad = os.path.join(self.create_tempdir().full_path, 'd')
    shutil.copytree(self.data_dir, bad)
    path = os.path.join(bad, 't10k-labels-idx1-ubyte.gz')
    with open(path, 'rb') as f:
      raw = f.read()
    with open(path, 'wb') as f:
      f.write(raw[:len(raw) // 2])
    self.assert_one_line_error('train', self._argv(bad),
                               r't10k-labels-idx1-ubyte.gz: not a readable gzip file')

  def test_wrong_magic(self):
    bad = _damaged_copy(self.data_dir, os.path.join(self.create_tempdir().full_path, 'd'),
                        'train-labels-idx1-ubyte.gz',
                        lambda raw: struct.pack('>i', 2051) + raw[4:])
    self.assert_one_line_error('train', self._argv(bad),
                               r'train-labels-idx1-ubyte.gz: bad magic number 2051, expected 2049')

  def test_label_out_of_range(self):
    bad = _damaged_copy(self.data_dir, os.path.join(self.create_tempdir().full_path, 'd'),
                        'train-labels-idx1-ubyte.gz', lambda raw: raw[:8] + b'\x0c' + raw[9:])
    self.assert_one_line_error('train', self._argv(bad), r'label 12 outside \[0, 10\)')

  def test_partition_impossible(self):
    # 400 examples cannot give 500 clients one each.
    self.assert_one_line_error(
        'train', _flags(**dict(_TINY, data_dir=self.data_dir, root_output_dir=self.out,
                               experiment_name='other', num_clients=500,
                               partition='iid')), r'num_clients')


class ResumeCheckTest(_BinaryCase):
  """The record of `setUp`'s run: other flags are refused before anything is touched."""

  def _argv(self, **overrides):
    values = dict(_TINY, data_dir=self.data_dir, root_output_dir=self.out)
    values.update(overrides)
    return _flags(**values)

  def test_other_flags_are_refused_one_line_each(self):
    got, _, err = fixtures.run_binary_process(
        'train', self._argv(algorithm='fedsparsify_global', final_sparsity=0.5, total_rounds=4))
    self.assertEqual(got, 2, err)
    self.assertNotIn('Traceback', err)
    lines = err.strip().splitlines()
    self.assertEqual(lines[0], f"train.py: error: experiment 'exp' in {self.out} was "
                               'started with other flags:')
    self.assertEqual(lines[1:4], [
        '  --total_rounds: checkpoint has 2, command has 4',
        '  --algorithm: checkpoint has fedavg, command has fedsparsify_global',
        '  --final_sparsity: checkpoint has 0.9, command has 0.5',
    ])
    self.assertIn('new --experiment_name', lines[4])
    self.assertIn('--overwrite', lines[4])
    self.assertLen(lines, 5)
    self.assertEqual(fixtures.tree_snapshot(self.out), self.before)

  def test_checkpoints_without_a_record_are_refused(self):
    os.remove(os.path.join(self.out, 'results', 'exp', 'config.json'))
    self.before = fixtures.tree_snapshot(self.out)
    self.assert_one_line_error('train', self._argv(), r'has checkpoints in .* but no config.json')

  def test_unreadable_record_is_refused(self):
    with open(os.path.join(self.out, 'results', 'exp', 'config.json'), 'w') as f:
      f.write('{"num_clients": 4,')
    self.before = fixtures.tree_snapshot(self.out)
    self.assert_one_line_error('train', self._argv(), r'config.json cannot be read')


class RunRecordTest(parameterized.TestCase):
  """`run_record.prepare` and `config.differences`, in process (no training)."""

  def _config(self, root, **overrides):
    values = dict(root_output_dir=root, experiment_name='exp', total_rounds=5)
    values.update(overrides)
    return config_lib.TrainConfig(**values)

  def _saved(self, root):
    with open(os.path.join(root, 'results', 'exp', 'config.json')) as f:
      return json.load(f)

  def test_first_run_records_its_configuration(self):
    root = self.create_tempdir().full_path
    dirs = run_record.prepare(self._config(root, final_sparsity=0.8))
    self.assertTrue(all(os.path.isdir(d) for d in dirs.all()))
    self.assertEqual(self._saved(root)['final_sparsity'], 0.8)
    self.assertEqual(config_lib.TrainConfig.from_dict(self._saved(root)),
                     self._config(root, final_sparsity=0.8))

  @parameterized.parameters('progress', 'rounds_per_eval', 'rounds_per_checkpoint')
  def test_result_neutral_flags_may_differ_and_keep_the_record(self, name):
    root = self.create_tempdir().full_path
    run_record.prepare(self._config(root))
    other = {'progress': False, 'rounds_per_eval': 3, 'rounds_per_checkpoint': 2}[name]
    run_record.prepare(self._config(root, **{name: other}))
    self.assertEqual(self._saved(root)[name], getattr(config_lib.TrainConfig(), name))

  def test_more_rounds_continue_a_baseline_but_not_a_pruning_run(self):
    root = self.create_tempdir().full_path
    run_record.prepare(self._config(root))
    run_record.prepare(self._config(root, total_rounds=8))  # FedAvg trains on.
    self.assertEqual(self._saved(root)['total_rounds'], 8)
    with self.assertRaisesRegex(run_record.RunMismatchError,
                                '--total_rounds: checkpoint has 8, command has 6'):
      run_record.prepare(self._config(root, total_rounds=6))
    pruning = self.create_tempdir().full_path
    run_record.prepare(self._config(pruning, algorithm='fedsparsify_global'))
    with self.assertRaisesRegex(run_record.RunMismatchError,
                                '--total_rounds: checkpoint has 5, command has 8'):
      run_record.prepare(self._config(pruning, algorithm='fedsparsify_global', total_rounds=8))

  def test_overwrite_removes_the_old_run(self):
    root = self.create_tempdir().full_path
    dirs = run_record.prepare(self._config(root, final_sparsity=0.8))
    os.makedirs(os.path.join(dirs.checkpoints, 'program_state_3'))
    run_record.prepare(self._config(root, final_sparsity=0.5), overwrite=True)
    self.assertEqual(os.listdir(dirs.checkpoints), [])
    self.assertEqual(self._saved(root)['final_sparsity'], 0.5)

  def test_a_field_an_older_record_lacks_counts_as_its_default(self):
    root = self.create_tempdir().full_path
    run_record.prepare(self._config(root))
    saved = self._saved(root)
    del saved['quantizer']
    self.assertEqual(config_lib.differences(saved, self._config(root)), [])
    self.assertEqual(config_lib.differences(saved, self._config(root, quantizer='sparse')),
                     [('quantizer', 'tff', 'sparse')])


class ExportBadInputTest(_BinaryCase):

  @parameterized.named_parameters(
      ('neither', [], r'--run_dir=None: give exactly one of --run_dir and --checkpoint'),
      ('both', ['--run_dir=/x', '--checkpoint=/y'], r'give exactly one of'),
      ('run_dir_missing', ['--run_dir=/nonexistent/run'], r"--run_dir='/nonexistent/run': does not exist"),
      ('checkpoint_missing', ['--checkpoint=/nonexistent/ck'], r"--checkpoint='/nonexistent/ck': does not exist"),
      ('opset_low', ['--run_dir=/x', '--opset=5'], r'--opset=5: must be in \[9, 18\]'),
      ('opset_word', ['--run_dir=/x', '--opset=new'], r'flag --opset=new: invalid literal'),
      ('opset_empty', ['--run_dir=/x', '--opset='], r'flag --opset=: invalid literal'),
  )
  def test_bad_flag(self, argv, regex):
    self.assert_one_line_error('export', argv, regex)

  def test_checkpoint_directory_without_a_run_record(self):
    # setUp's checkpoint has no readable state; its config.json is gone here.
    os.remove(os.path.join(self.out, 'results', 'exp', 'config.json'))
    self.before = fixtures.tree_snapshot(self.out)
    self.assert_one_line_error(
        'export', [f'--checkpoint={os.path.join(self.out, "checkpoints", "exp")}'],
        r'--checkpoint=.*: cannot use the run configuration .*config.json')

  def test_empty_and_corrupt_keras_files(self):
    # These load TensorFlow (about 15 s each): both run at once.
    empty = os.path.join(self.out, 'empty.keras')
    corrupt = os.path.join(self.out, 'corrupt.keras')
    open(empty, 'wb').close()
    with open(corrupt, 'wb') as f:
      f.write(b'PK\x03\x04 not really a zip' * 10)
    self.before = fixtures.tree_snapshot(self.out)
    procs = [fixtures.start_binary('export', [f'--run_dir={p}']) for p in (empty, corrupt)]
    for proc, path in zip(procs, (empty, corrupt)):
      _, err = proc.communicate(timeout=300)
      err = err.decode()
      self.assertEqual(proc.returncode, 2, err)
      self.assertLen(err.strip().splitlines(), 1, err)
      self.assertRegex(err, f"^export.py: error: --run_dir='{path}': cannot read the Keras model")
    self.assertEqual(fixtures.tree_snapshot(self.out), self.before)


class TrainWorkerCredentialsTest(_BinaryCase):

  def test_credentials_without_the_coordinator_files(self):
    argv = _flags(**dict(_TINY, data_dir=self.data_dir, root_output_dir=self.out,
                         experiment_name='other', workers='h:1',
                         worker_credentials=self.out))
    self.assert_one_line_error('train', argv, r'--worker_credentials=.*: has no ca.pem')


class WorkerBadInputTest(_BinaryCase):

  def test_bad_flags(self):
    for argv, regex in (
        ([], r'--port=None: must be set'),
        (['--port=0'], r'flag --port=0: 0 is not an integer in the range \[1, 65535\]'),
        (['--port=8000'], r'--credentials=None: must be set: a worker is served only over mutual TLS'),
        (['--port=8000', f'--credentials={self.out}'], r'--credentials=.*: .* has no ca.pem'),
        ([f'--make_credentials={self.out}/c'], r'--hosts=\[\]: must name the worker hosts'),
        (['--port=8000', '--host=nowhere.invalid', '--credentials=x'], r'--credentials=.x.: x has no ca.pem'),
        (['extra', '--port=1'], r'unexpected arguments: extra'),
    ):
      with self.subTest(argv=argv):
        self.assert_one_line_error('worker', argv, regex)


class BenchmarkBadInputTest(_BinaryCase):

  def setUp(self):
    super().setUp()
    self.empty = os.path.join(self.out, 'empty.onnx')
    open(self.empty, 'wb').close()
    self.corrupt = os.path.join(self.out, 'corrupt.onnx')
    with open(self.corrupt, 'wb') as f:
      f.write(b'\x08\x07\x12\x04junk' * 50)
    self.before = fixtures.tree_snapshot(self.out)

  def test_bad_flags_and_files(self):
    out = os.path.join(self.out, 'bench')
    for argv, regex in (
        ([], r'--onnx=None: give at least one ONNX model'),
        (['--onnx='], r'--onnx=\[\]: give at least one ONNX model'),
        (['--onnx=/nonexistent.onnx'], r"'/nonexistent.onnx' does not exist"),
        ([f'--onnx={self.empty}'], r'empty.onnx\' is not a valid ONNX model'),
        ([f'--onnx={self.corrupt}'], r'corrupt.onnx\' is not a valid ONNX model'),
        ([f'--onnx={self.empty}', '--batch_size=0'], r'--batch_size=0: must be >= 1'),
        ([f'--onnx={self.empty}', '--budget_seconds=0'], r'--budget_seconds=0.0: must be > 0'),
        ([f'--onnx={self.empty}', '--warmup_seconds=-1'], r'--warmup_seconds=-1.0: must be >= 0'),
        ([f'--onnx={self.empty}', '--num_threads=0'], r'--num_threads=0: must be >= 1'),
        ([f'--onnx={self.empty}', '--repeats=0'], r'--repeats=0: must be >= 1'),
        ([f'--onnx={self.empty}', '--runtime=tvm'], r'flag --runtime=tvm: value should be one of'),
        ([f'--onnx={self.empty}', '--batch_size=big'], r'flag --batch_size=big: invalid literal'),
        ([f'--onnx={self.empty}', '--output='], r"--output='': must be a path prefix"),
    ):
      with self.subTest(argv=argv):
        self.assert_one_line_error('benchmark_inference', argv + [f'--output={out}']
                                   if not any(a.startswith('--output') for a in argv) else argv,
                                   regex)
    self.assertFalse(os.path.exists(out + '.json'))


if __name__ == '__main__':
  absltest.main()
