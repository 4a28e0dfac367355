"""Tests for tff_sparsify.deploy.model_export: ONNX export keeps outputs and zeros."""

import gzip
import os

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tff_sparsify.core import masks
from tff_sparsify.deploy import export_configs as configs
from tff_sparsify.deploy import model_export as export
from tff_sparsify.deploy import inference
from tff_sparsify.deploy import input_layouts as layouts
from tff_sparsify.learning import pruning


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

  def test_check_rejects_an_altered_export(self):
    """Each failure branch of the check, on an ONNX file altered on purpose."""
    import onnx  # pylint: disable=g-import-not-at-top
    from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
    model = tfmot.sparsity.keras.strip_pruning(small_pruned_model())
    out = self.create_tempdir().full_path
    report = export.export_model(model, out)
    dense = model.layers[-1].kernel.numpy()

    def altered(change):
      onnx_model = onnx.load(report.onnx_path)
      for i, tensor in enumerate(onnx_model.graph.initializer):
        array = numpy_helper.to_array(tensor)
        if array.size == dense.size:  # The 144x10 kernel, however tf2onnx laid it out.
          array = array.copy()
          change(array.reshape(-1))
          onnx_model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, tensor.name))
      path = os.path.join(out, f'altered_{len(os.listdir(out))}.onnx')
      onnx.save(onnx_model, path)
      return path

    def scale_largest(flat):
      flat[np.argmax(np.abs(flat))] *= 3.0

    def nudge_one(flat):  # 1e-5: outputs still within 1e-4, values not within 1e-6.
      flat[np.flatnonzero(flat)[0]] += 1e-5

    def fill_zeros(flat):  # Zeros become 1e-9: outputs and values match, zeros lost.
      flat[flat == 0] = 1e-9

    with self.assertRaisesRegex(export.ExportError, 'ONNX outputs differ from Keras by'):
      export.check_onnx(model, altered(scale_largest))
    with self.assertRaisesRegex(export.ExportError, r'kernel \(144, 10\) not found among the ONNX'):
      export.check_onnx(model, altered(nudge_one))
    zeros = int(np.sum(dense == 0))
    with self.assertRaisesRegex(export.ExportError, f'{zeros} zeros in Keras, 0 in the ONNX'):
      export.check_onnx(model, altered(fill_zeros))
    export.check_onnx(model, report.onnx_path)  # The file as exported passes.

  def test_a_batch_norm_folded_into_its_convolution_keeps_the_zeros(self):
    # tf2onnx folds a BatchNormalization after a convolution into its kernel,
    # scaling each output channel: the zeros are matched through that scaling.
    tf.keras.utils.set_random_seed(8)
    inputs = tf.keras.Input((6, 6, 2))
    conv = tf.keras.layers.Conv2D(4, 3, use_bias=False)
    bn = tf.keras.layers.BatchNormalization()
    outputs = tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(bn(conv(inputs))))
    model = tf.keras.Model(inputs, outputs)
    kernel = conv.kernel.numpy()
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.6)] = 0.0
    conv.kernel.assign(kernel)
    rng = np.random.default_rng(0)
    bn.set_weights([rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4),
                    rng.uniform(0.5, 2, 4)])
    report = export.export_model(model, self.create_tempdir().full_path)
    import onnx  # pylint: disable=g-import-not-at-top
    ops = {node.op_type for node in onnx.load(report.onnx_path).graph.node}
    self.assertNotIn('BatchNormalization', ops)  # Folded.
    found = {layer.name: layer for layer in report.layers}[conv.name]
    self.assertEqual(found.keras_zeros, int(np.sum(kernel == 0)))  # NumPy's count.
    self.assertEqual(found.onnx_zeros, found.keras_zeros)
    # By hand: the ONNX layout (out, in, h, w) of the kernel times a factor per channel.
    scale = np.array([0.5, -2.0, 0.0, 3.0], np.float32)
    onnx_like = np.transpose(kernel * scale, (3, 2, 0, 1))
    zeros = int(np.sum(kernel == 0))
    self.assertEqual(export._scaled_zeros(kernel, onnx_like), zeros)  # pylint: disable=protected-access
    filled = np.where(onnx_like == 0, np.float32(1e-9), onnx_like)
    self.assertEqual(export._scaled_zeros(kernel, filled), 0)  # pylint: disable=protected-access
    nudged = onnx_like.copy()
    nudged[0, 0][np.nonzero(nudged[0, 0])[0][0], np.nonzero(nudged[0, 0])[1][0]] += 1e-4
    self.assertIsNone(export._scaled_zeros(kernel, nudged))  # pylint: disable=protected-access

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



  def test_inputs_as_nchw(self):
    import onnx  # pylint: disable=g-import-not-at-top
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
    model = small_pruned_model()
    out = self.create_tempdir().full_path
    report = export.export_model(model, out, inputs_as_nchw=True)
    self.assertEqual(report.input_layout, 'NCHW')
    self.assertEqual(layouts.onnx_input_layout(report.onnx_path), 'NCHW')
    onnx_model = onnx.load(report.onnx_path)
    self.assertEqual([d.dim_value for d in onnx_model.graph.input[0].type.tensor_type.shape.dim[1:]],
                     [1, 6, 6])
    self.assertNotIn('Transpose', [n.op_type for n in onnx_model.graph.node][:1])
    x = np.random.default_rng(1).random((3, 6, 6, 1), np.float32)
    session = ort.InferenceSession(report.onnx_path, providers=['CPUExecutionProvider'])
    found = session.run(None, {session.get_inputs()[0].name: x.transpose(0, 3, 1, 2)})[0]
    self.assertAllClose(found, export._strip(model)(x).numpy(), atol=1e-4)
    default = export.export_model(model, self.create_tempdir().full_path)
    self.assertEqual(layouts.onnx_input_layout(default.onnx_path), 'NHWC')
    flat = tf.keras.Sequential([tf.keras.layers.InputLayer((28, 28)), tf.keras.layers.Flatten(),
                                tf.keras.layers.Dense(10)])
    with self.assertRaisesRegex(export.ExportError, r'inputs_as_nchw needs an image input .* '
                                r'got input shape \(None, 28, 28\)'):
      export.export_model(flat, self.create_tempdir().full_path, inputs_as_nchw=True)


class InferenceTest(tf.test.TestCase):

  def test_time_runner_counts(self):
    calls = []
    timing = inference.time_runner(calls.append, np.zeros((4, 2), np.float32),
                                   budget_seconds=0.05, warmup_seconds=0.0, runtime='fake')
    self.assertEqual(timing.iterations + 1, len(calls))  # One warm-up call.
    self.assertEqual(timing.batch_size, 4)
    self.assertLessEqual(timing.ms_median, timing.ms_p99)
    self.assertAlmostEqual(timing.items_per_second, 4 * timing.iterations / timing.seconds)

  def test_all_runtimes_on_an_exported_model(self):
    out = self.create_tempdir().full_path
    report = export.export_model(small_pruned_model(), out, formats=('onnx', 'tflite'))
    repeats = inference.benchmark(
        report.onnx_path, configs.TimingConfig(batch_size=8, budget_seconds=0.2,
                                               warmup_seconds=0.05, repeats=2),
        saved_model_dir=report.saved_model_dir, input_shape=(6, 6, 1))
    self.assertTrue(all(len(found) == 2 for found in repeats))
    results = [found[1] for found in repeats]
    self.assertTrue(all(t.batch_size == 8 for t in results))
    self.assertEqual([r.runtime for r in results], list(inference.RUNTIMES))
    self.assertEqual(list(inference.RUNTIMES), ['deepsparse', 'onnxruntime', 'tflite',
                                                'litert', 'tensorflow'])
    for r in results:
      if r.unavailable:  # Only DeepSparse may be missing, with a one-line reason.
        self.assertEqual(r.runtime, 'deepsparse')
        self.assertLen(r.unavailable.splitlines(), 1)
      else:
        self.assertGreater(r.iterations, 0)
        self.assertGreater(r.items_per_second, 0)

  def test_channels_first_export_gets_the_transposed_batch(self):
    report = export.export_model(small_pruned_model(), self.create_tempdir().full_path,
                                 inputs_as_nchw=True)
    repeats = inference.benchmark(
        report.onnx_path, configs.TimingConfig(batch_size=4, budget_seconds=0.05,
                                               warmup_seconds=0.0),
        saved_model_dir=report.saved_model_dir, input_shape=(6, 6, 1),
        runtimes=['onnxruntime', 'tensorflow'])
    self.assertTrue(all(r.iterations > 0 for found in repeats for r in found))  # A wrong shape would raise.

  def test_deepsparse_layer_profile(self):
    report = export.export_model(small_pruned_model(0.9), self.create_tempdir().full_path)
    batch = np.random.default_rng(0).random((8, 6, 6, 1), np.float32)
    try:
      layers = inference.deepsparse_layer_profile(report.onnx_path, batch, iterations=3,
                                                  warmup_iterations=1)
    except inference.RuntimeUnavailable as e:  # Not a pass: says why DeepSparse is out.
      self.fail(f'DeepSparse runs on this project\'s machines: {e}')
    self.assertNotEmpty(layers)
    self.assertTrue(all(layer.ms >= 0 for layer in layers))
    self.assertGreater(sum(layer.ms for layer in layers), 0)
    # The Conv and the MatMul of the model appear among the kernels' ops.
    ops = ' '.join(layer.ops for layer in layers)
    self.assertIn('Conv2D', ops)
    with self.assertRaisesRegex(inference.RuntimeUnavailable, '^deepsparse: '):
      inference.deepsparse_layer_profile('/nonexistent.onnx', batch)
    with self.assertRaisesRegex(ValueError, 'iterations must be >= 1'):
      inference.deepsparse_layer_profile(report.onnx_path, batch, iterations=0)

  def test_deepsparse_on_a_missing_file_is_one_line(self):
    with self.assertRaisesRegex(inference.RuntimeUnavailable, '^deepsparse: '):
      inference.build_runner('deepsparse', onnx_path='/nonexistent.onnx',
                             saved_model_dir=None, batch_size=1)
