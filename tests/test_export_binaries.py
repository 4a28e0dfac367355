"""Tests for binaries/export.py and binaries/benchmark_inference.py."""

import json
import os

from absl.testing import parameterized
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tff_sparsify.binaries import benchmark_inference
from tff_sparsify.binaries import export as export_binary
from tff_sparsify.binaries import flag_utils
from tests import fixtures
from tests import test_export


class ExportBinariesTest(tf.test.TestCase, parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.run_dir = os.path.join(tf.compat.v1.test.get_temp_dir(), 'run')
    os.makedirs(cls.run_dir, exist_ok=True)
    model = tfmot.sparsity.keras.strip_pruning(test_export.small_pruned_model(0.9))
    model.save(os.path.join(cls.run_dir, 'final_model.keras'))

  @parameterized.parameters(False, True)
  def test_export_then_benchmark(self, nchw):
    out = self.create_tempdir().full_path
    code, stdout, _ = fixtures.run_binary(export_binary, [
        f'--run_dir={self.run_dir}', f'--output_dir={out}', f'--inputs_as_nchw={nchw}'])
    self.assertEqual(code, 0)
    self.assertIn('exported:', stdout)
    with open(os.path.join(out, 'export_report.json')) as f:
      report = json.load(f)
    self.assertEqual(report['input_layout'], 'NCHW' if nchw else 'NHWC')
    self.assertAlmostEqual(report['sparsity'], round(0.9 * 1476) / 1476)
    self.assertTrue(os.path.isfile(os.path.join(out, 'export_report.md')))

    prefix = os.path.join(self.create_tempdir().full_path, 'timings')
    code, stdout, _ = fixtures.run_binary(benchmark_inference, [
        f'--onnx={os.path.join(out, "model.onnx")}', '--batch_size=4',
        '--budget_seconds=0.1', '--warmup_seconds=0', f'--output={prefix}',
        '--runtime=onnxruntime', '--runtime=tensorflow', '--repeats=2'])
    self.assertEqual(code, 0)
    with open(prefix + '.json') as f:
      rows = json.load(f)
    self.assertEqual([r['runtime'] for r in rows], ['onnxruntime', 'tensorflow'])
    self.assertTrue(all(r['iterations'] > 0 for r in rows))
    # The row is the repeat of median throughput; the spread covers both repeats.
    self.assertTrue(all(r['repeats'] == 2 and r['spread'] >= 0 for r in rows), rows)
    self.assertIn('(median of 2, spread', stdout)
    self.assertTrue(os.path.isfile(prefix + '.md'))

  def test_inputs_as_nchw_needs_an_image_model(self):
    run = self.create_tempdir().full_path
    tf.keras.Sequential([tf.keras.layers.InputLayer((28, 28)), tf.keras.layers.Flatten(),
                         tf.keras.layers.Dense(10)]).save(os.path.join(run, 'final_model.keras'))
    out = self.create_tempdir().full_path
    code, _, err = fixtures.run_binary(export_binary, [
        f'--run_dir={run}', f'--output_dir={out}/e', '--inputs_as_nchw'])
    self.assertEqual(code, flag_utils.USAGE_EXIT_CODE)
    self.assertRegex(err, r'--inputs_as_nchw=True: inputs_as_nchw needs an image input')
    self.assertLen(err.strip().splitlines(), 1, err)
    self.assertEmpty(os.listdir(out))

  def test_checkpoint_without_config(self):
    root = self.create_tempdir().full_path
    state = os.path.join(root, 'checkpoints', 'exp', 'program_state_2')
    os.makedirs(state)
    code, _, err = fixtures.run_binary(export_binary, [f'--checkpoint={state}'])
    self.assertEqual(code, flag_utils.USAGE_EXIT_CODE)
    self.assertRegex(err, 'cannot use the run configuration .*results/exp/config.json')
    self.assertLen(err.strip().splitlines(), 1, err)
