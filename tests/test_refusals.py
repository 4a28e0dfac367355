"""One-line refusals of the training binary that time nothing (so they run on both cores).

Moved from the serial fault and scale-out files: a run with no loadable
checkpoint, and a platform where no network namespace can be made.
"""

import os
import subprocess
import sys

import pytest
import tensorflow as tf

from tests import fixtures
from tests import test_faults
from tests import test_scale_out_faults
from tff_sparsify import config as config_lib


class NoLoadableCheckpointTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = fixtures.write_fashion_mnist_like(
        os.path.join(tf.compat.v1.test.get_temp_dir(), 'fmnist_nl'))

  def test_no_loadable_checkpoint_is_one_line_and_leaves_the_files(self):
    out = self.create_tempdir().full_path
    argv = test_faults._argv(self.data_dir, out)
    # A recorded run whose two checkpoints are both unreadable.
    config = config_lib.TrainConfig(
        data_dir=self.data_dir, root_output_dir=out, experiment_name='exp', num_clients=4,
        clients_per_round=3, client_epochs_per_round=1, client_batch_size=16,
        client_learning_rate=0.05, seed=7, progress=False, total_rounds=test_faults.ROUNDS,
        algorithm='fedsparsify_local', final_sparsity=0.8)
    os.makedirs(os.path.join(out, 'results', 'exp'))
    config_lib.save(config, os.path.join(out, 'results', 'exp', 'config.json'))
    ckpt = os.path.join(out, 'checkpoints', 'exp')
    for version in (1, 2):
      os.makedirs(os.path.join(ckpt, f'program_state_{version}', 'variables'))
      with open(os.path.join(ckpt, f'program_state_{version}', 'saved_model.pb'), 'wb') as f:
        f.write(b'\x08\x01 not a saved model')
    before = fixtures.tree_snapshot(out)
    code, _, err = fixtures.run_binary_process('train', argv)
    self.assertEqual(code, 1, err)
    lines = err.strip().splitlines()
    self.assertNotIn('Traceback', err)
    # No digest record (as a run made before it): said, then one line per
    # checkpoint tried, then the verdict.
    self.assertLen(lines, 4, err)
    self.assertRegex(lines[0], r'checkpoints in .* have no digest record .*: loaded unverified')
    self.assertRegex(lines[1], r'checkpoint .*program_state_2 cannot be loaded')
    self.assertRegex(lines[2], r'checkpoint .*program_state_1 cannot be loaded')
    self.assertRegex(lines[3], r'^train.py: error: no checkpoint in .* loads \(2 tried, all left in place\)')
    after = fixtures.tree_snapshot(out)
    self.assertEqual({k: v for k, v in after.items() if k.startswith('checkpoints')},
                     {k: v for k, v in before.items() if k.startswith('checkpoints')})


@pytest.mark.skipif(os.geteuid() != 0, reason='limiting namespaces needs root')
class IsolationPlatformsTest(tf.test.TestCase):
  """A platform where no network namespace can be made: one line, refused."""

  def test_no_namespace_is_one_line_and_a_refusal(self):
    # A user namespace that may make no more (max_user_namespaces=0), and a
    # process in it without capabilities (uid 0 made ordinary by securebits):
    # neither unshare works, as on a platform without namespaces.
    out = self.create_tempdir().full_path
    data_dir = fixtures.write_fashion_mnist_like(self.create_tempdir().full_path)
    argv = ' '.join(test_scale_out_faults._argv(out, f'--data_dir={data_dir}'))
    script = ('echo 0 > /proc/sys/user/max_user_namespaces && exec setpriv '
              '--securebits=+noroot,+noroot_locked --bounding-set=-all --inh-caps=-all '
              f'{sys.executable} -m binaries.train {argv}')
    result = subprocess.run(
        ['unshare', '--user', '--map-root-user', 'sh', '-c', script],
        cwd=fixtures.REPO, env=fixtures.subprocess_env(), capture_output=True,
        text=True, timeout=300)
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertRegex(
        result.stderr.strip(),
        r'^train.py: error: cannot make a private network namespace .*: a local '
        r'worker cannot be isolated here; pass --allow_unisolated_workers to run '
        r"it anyway \(bound to loopback, reachable by other local users\)$")
    self.assertFalse(os.path.exists(os.path.join(out, 'checkpoints', 'exp', 'program_state_1')))
