"""Tests for tff_sparsify.export: ONNX export keeps outputs and zeros."""

import gzip
import os

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tff_sparsify import export
from tff_sparsify import masks
from tff_sparsify import pruning


def small_pruned_model(sparsity=0.8):
  tf.keras.utils.set_random_seed(4)
  model = pruning.wrap_for_pruning(tf.keras.Sequential([
      tf.keras.layers.InputLayer((6, 6, 1)),
      tf.keras.layers.Conv2D(4, 3, padding='same', activation='relu'),
      tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(10)]))
  weights = pruning.prunable_weights(model)
  pruning.set_masks(model, masks.magnitude_masks([w.numpy() for w in weights], sparsity))
  pruning.apply_wrapper_masks(model)
  return model


class ExportTest(tf.test.TestCase):

  def test_export_keeps_outputs_and_zeros(self):
    out = self.create_tempdir().full_path
    report = export.export_model(small_pruned_model(), out)
    self.assertTrue(os.path.isfile(os.path.join(out, 'model.onnx')))
    self.assertTrue(os.path.isdir(os.path.join(out, 'saved_model')))
    self.assertLessEqual(report.max_abs_diff, 1e-4)
    kernels = 3 * 3 * 4 + 144 * 10
    self.assertEqual(sum(layer.size for layer in report.layers), kernels)
    self.assertEqual(sum(layer.keras_zeros for layer in report.layers), round(0.8 * kernels))
    for layer in report.layers:
      self.assertEqual(layer.onnx_zeros, layer.keras_zeros, layer.name)
    self.assertEqual(report.total_params, kernels + 4 + 10)
    self.assertEqual(report.nonzero_params, kernels - round(0.8 * kernels))  # Biases are 0.
    with open(report.onnx_path, 'rb') as f:
      raw = f.read()
    self.assertEqual(report.onnx_bytes, len(raw))
    self.assertEqual(report.onnx_gzip_bytes, len(gzip.compress(raw, 9)))
    self.assertAlmostEqual(report.as_dict()['sparsity'], round(0.8 * kernels) / kernels)

  def test_load_run_model_round_trip_and_errors(self):
    run = self.create_tempdir().full_path
    model = tfmot.sparsity.keras.strip_pruning(small_pruned_model())
    model.save(os.path.join(run, 'final_model.keras'))
    loaded = export.load_run_model(run)
    self.assertAllEqual(loaded.get_weights()[0], model.get_weights()[0])
    empty = self.create_tempdir().full_path
    with self.assertRaisesRegex(export.ExportError, f'no final_model.keras at {empty!r}'):
      export.load_run_model(empty)
    corrupt = os.path.join(empty, 'final_model.keras')
    with open(corrupt, 'wb') as f:
      f.write(b'not a model')
    with self.assertRaisesRegex(export.ExportError, 'cannot read the Keras model'):
      export.load_run_model(corrupt)


