"""TFLite (float32, INT8) and ONNX INT8 exports: outputs, accuracy, zeros, timing.

The oracles are independent of `deploy/tflite.py` and `deploy/onnx_int8.py`:
a `tf.lite.Interpreter` driven by hand (int8 input quantized with the
file's own scale and zero point), ONNX Runtime sessions on the files, and
accuracies counted here.
"""

import json
import os

import numpy as np
import onnx
from onnx import numpy_helper
import onnxruntime as ort
import tensorflow as tf

from tff_sparsify import config as config_lib
from tff_sparsify.binaries import benchmark_inference
from tff_sparsify.binaries import export as export_binary
from tff_sparsify.binaries import flag_utils
from tff_sparsify.core import masks
from tff_sparsify.deploy import export_configs as configs
from tff_sparsify.deploy import model_export as export
from tff_sparsify.deploy import inference
from tff_sparsify.deploy import onnx_int8
from tff_sparsify.deploy import tflite
from tff_sparsify.simulation import data_sources
from tests import fixtures

SPARSITY = 0.8


def _trained_pruned_model(data_dir):
  """A small FC net trained on the synthetic set, magnitude-pruned to 0.8."""
  tf.keras.utils.set_random_seed(3)
  data = data_sources.load_fashion_mnist_idx(data_dir)
  model = tf.keras.Sequential([
      tf.keras.layers.InputLayer((28, 28)), tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(32, activation='relu'), tf.keras.layers.Dense(10)])
  model.compile(tf.keras.optimizers.Adam(0.01),
                tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(data.train_images / 255.0, data.train_labels, epochs=3, batch_size=32, verbose=0)
  kernels = [layer.kernel for layer in model.layers if hasattr(layer, 'kernel')]
  for kernel, mask in zip(kernels, masks.magnitude_masks([k.numpy() for k in kernels],
                                                         SPARSITY)):
    kernel.assign(kernel.numpy() * mask)
  return model


def _interpreter_logits(path, images):
  """Logits of a .tflite file by a hand-driven interpreter (fixed batch: padded chunks)."""
  interpreter = tf.lite.Interpreter(model_path=path)
  inp = interpreter.get_input_details()[0]
  batch = len(images) if -1 in inp['shape_signature'] else int(inp['shape'][0])
  if batch == len(images):
    interpreter.resize_tensor_input(inp['index'], images.shape)
  interpreter.allocate_tensors()
  inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
  if inp['dtype'] == np.int8:
    scale, zero = inp['quantization']
    images = np.clip(np.round(images / scale + zero), -128, 127).astype(np.int8)
  found = []
  for start in range(0, len(images), batch):
    chunk = np.zeros((batch,) + images.shape[1:], images.dtype)
    chunk[:len(images[start:start + batch])] = images[start:start + batch]
    interpreter.set_tensor(inp['index'], chunk)
    interpreter.invoke()
    found.append(interpreter.get_tensor(out['index'])[:len(images[start:start + batch])])
  logits = np.concatenate(found)
  if out['dtype'] == np.int8:
    scale, zero = out['quantization']
    logits = (logits.astype(np.float32) - zero) * scale
  return logits, inp['dtype']


def _session_logits(path, images):
  session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
  return session.run(None, {session.get_inputs()[0].name: images})[0]


class ExportFormatsTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = tf.compat.v1.test.get_temp_dir()
    cls.data_dir = fixtures.write_fashion_mnist_like(os.path.join(root, 'data'), 600, 200)
    cls.model = _trained_pruned_model(cls.data_dir)
    data = data_sources.load_fashion_mnist_idx(cls.data_dir)
    cls.test_images = (data.test_images / 255.0).astype(np.float32)
    cls.test_labels = data.test_labels
    cls.calibration = (data.train_images[:128] / 255.0).astype(np.float32)
    cls.out = os.path.join(root, 'export')
    cls.report = export.export_model(
        cls.model, cls.out, formats=('onnx', 'tflite'), int8=True,
        int8_calibration=cls.calibration,
        test_set=(cls.test_images, cls.test_labels))

  def _file(self, file_format, precision):
    found = [f for f in self.report.files
             if (f.format, f.precision) == (file_format, precision)]
    self.assertLen(found, 1)
    return found[0]

  def test_tflite_files_have_a_fixed_batch_and_run_any_batch(self):
    """XNNPACK runs only static shapes: the files hold the timed batch (32 for
    28x28 inputs); the runner feeds other batches as padded whole batches."""
    keras = self.model(self.test_images[:70]).numpy()
    for name in ('model.tflite', 'model_int8.tflite'):
      path = os.path.join(self.out, name)
      interpreter = tf.lite.Interpreter(model_path=path)
      self.assertAllEqual(interpreter.get_input_details()[0]['shape_signature'], [32, 28, 28])
      model = tflite.Model(path)
      self.assertEqual(model.fixed_batch_size, 32)
      for n in (5, 32, 70):
        found = model(self.test_images[:n])
        self.assertEqual(found.shape, (n, 10))
        if name == 'model.tflite':
          self.assertAllClose(found, keras[:n], atol=1e-4, rtol=0)
        else:  # Row by row as the INT8 file computes it alone.
          self.assertAllClose(found, _interpreter_logits(path, self.test_images[:n])[0],
                              atol=1e-6, rtol=0)

  def test_files_and_accuracies_against_independent_runs(self):
    self.assertCountEqual(os.listdir(self.out), [
        'saved_model', 'model.onnx', 'model_int8.onnx', 'model.tflite', 'model_int8.tflite'])
    keras = np.mean(np.argmax(self.model(self.test_images).numpy(), 1) == self.test_labels)
    self.assertGreater(keras, 0.9)  # The synthetic task is learnt: accuracy means something.
    self.assertAlmostEqual(self.report.keras_test_accuracy, keras)
    for (file_format, precision), dtype in {('tflite', 'float32'): np.float32,
                                            ('tflite', 'int8'): np.int8}.items():
      found = self._file(file_format, precision)
      logits, input_dtype = _interpreter_logits(found.path, self.test_images)
      self.assertEqual(input_dtype, dtype)  # INT8 is integer-only: int8 input.
      self.assertAlmostEqual(found.test_accuracy,
                             np.mean(np.argmax(logits, 1) == self.test_labels))
      with open(found.path, 'rb') as f:
        self.assertLen(f.read(), found.bytes)
    int8_onnx = self._file('onnx', 'int8')
    logits = _session_logits(int8_onnx.path, self.test_images)
    self.assertAlmostEqual(int8_onnx.test_accuracy,
                           np.mean(np.argmax(logits, 1) == self.test_labels))
    for f in self.report.files:
      if f.precision == 'int8':  # The check the export promises: within 1 point.
        self.assertLessEqual(keras - f.test_accuracy, 0.01, f.path)
    self.assertLess(self._file('tflite', 'int8').bytes, self._file('tflite', 'float32').bytes)

  def test_float_tflite_matches_keras(self):
    found = self._file('tflite', 'float32')
    inputs = np.random.default_rng(7).random((16, 28, 28), np.float32)
    logits, _ = _interpreter_logits(found.path, inputs)
    self.assertAllClose(logits, self.model(inputs).numpy(), atol=1e-4, rtol=0)
    self.assertLessEqual(found.max_abs_diff, 1e-4)
    # At 0.8 sparsity TFLite's sparse encoding is smaller than the dense float
    # weights (4 bytes each), so the export keeps it.
    dense_bytes = 4 * sum(w.size for w in self.model.get_weights())
    self.assertTrue(found.sparse_encoding)
    self.assertLess(found.bytes, dense_bytes)
    dense = tflite.convert(self.model, 'float32')
    self.assertLessEqual(found.bytes, len(dense.flatbuffer))

  def test_every_tflite_file_runs_on_litert(self):
    """LiteRT 2.3 cannot prepare the INT8 file with TFLite's sparse encoding (its
    XNNPACK fails on the sparse FULLY_CONNECTED); TF 2.14's interpreter can.
    The export keeps, for each file, an encoding LiteRT runs."""
    from ai_edge_litert import interpreter as litert  # pylint: disable=g-import-not-at-top
    for precision in ('float32', 'int8'):
      found = self._file('tflite', precision)
      runner = litert.Interpreter(model_path=found.path)
      runner.allocate_tensors()  # Raises where LiteRT cannot run it.
    self.assertFalse(self._file('tflite', 'int8').sparse_encoding)
    sparse_int8 = tflite.convert(self.model, 'int8', self.calibration, batch_size=32)
    self.assertFalse(sparse_int8.sparse_encoding)
    # Converted with the sparse encoding by hand: TF's interpreter runs it, LiteRT does not.
    converter = tflite._converter(self.model, 32)  # pylint: disable=protected-access
    converter.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    converter.representative_dataset = lambda: ([self.calibration[i:i + 32]]
                                                for i in range(0, 128, 32))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    flatbuffer = converter.convert()
    tf.lite.Interpreter(model_content=flatbuffer).allocate_tensors()
    with self.assertRaisesRegex(RuntimeError, 'FULLY_CONNECTED'):
      litert.Interpreter(model_content=flatbuffer).allocate_tensors()
    self.assertFalse(tflite.runs_on_litert(flatbuffer))

  def test_int8_onnx_keeps_the_zeros(self):
    """The weights ORT quantized dequantize to zero where the float kernel is zero."""
    model = onnx.load(self._file('onnx', 'int8').path)
    self.assertEqual(onnx_int8.precision(model), 'int8')
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    quantized = [arrays[n.input[0]] for n in model.graph.node
                 if n.op_type == 'DequantizeLinear' and n.input[0] in arrays
                 and arrays[n.input[0]].ndim == 2]
    for layer in self.model.layers:
      if not hasattr(layer, 'kernel'):
        continue
      kernel = layer.kernel.numpy()
      candidates = [q for q in quantized if q.size == kernel.size]
      self.assertNotEmpty(candidates, layer.name)
      # Same zero count (zero is exact in symmetric int8; small weights may add zeros).
      self.assertTrue(any(np.sum(q == 0) >= np.sum(kernel == 0) for q in candidates))
      self.assertEqual(candidates[0].dtype, np.int8)

  def test_quantizer_variants(self):
    """QOperator writes QLinear ops; uint8 activations get uint8 zero points; all run."""
    source = os.path.join(self.out, 'model.onnx')
    found = {}
    for quant_format, activation_type in (('qdq', 'uint8'), ('qoperator', 'uint8')):
      path = os.path.join(self.create_tempdir().full_path, 'q.onnx')
      onnx_int8.quantize(source, path, self.calibration, quant_format=quant_format,
                         activation_type=activation_type)
      model = onnx.load(path)
      found[quant_format] = {n.op_type for n in model.graph.node}
      arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
      input_zero_point = next(arrays[n.input[2]] for n in model.graph.node
                              if n.op_type == 'QuantizeLinear')
      self.assertEqual(input_zero_point.dtype, np.uint8)
      logits = ort.InferenceSession(path, providers=['CPUExecutionProvider']).run(
          None, {model.graph.input[0].name: self.calibration[:4]})[0]
      self.assertEqual(logits.shape, (4, 10))
    self.assertIn('DequantizeLinear', found['qdq'])
    self.assertNotIn('QLinearMatMul', found['qdq'])
    self.assertTrue(found['qoperator'] & {'QLinearMatMul', 'QGemm'}, found['qoperator'])
    with self.assertRaisesRegex(ValueError, "activation_type must be one of .* got 'int4'"):
      onnx_int8.quantize(source, path, self.calibration, activation_type='int4')
    with self.assertRaisesRegex(ValueError, "quant_format must be one of .* got 'qlinear'"):
      onnx_int8.quantize(source, path, self.calibration, quant_format='qlinear')

  def test_bad_calibration_fails_the_accuracy_check_and_writes_nothing(self):
    out = self.create_tempdir().full_path
    with self.assertRaisesRegex(export.ExportError,
                                r'model_int8.onnx: INT8 test accuracy .* below the float'):
      export.export_model(self.model, out, int8=True,
                          int8_calibration=np.zeros((8, 28, 28), np.float32),
                          test_set=(self.test_images, self.test_labels))
    self.assertEmpty(os.listdir(out))

  def test_altered_tflite_fails_the_float_check(self):
    other = tf.keras.models.clone_model(self.model)  # Fresh random weights.
    path = os.path.join(self.create_tempdir().full_path, 'other.tflite')
    with open(path, 'wb') as f:
      f.write(tflite.convert(other).flatbuffer)
    with self.assertRaisesRegex(export.ExportError, 'TFLite outputs differ from Keras by'):
      export.check_tflite(self.model, path)

  def test_argument_errors(self):
    out = self.create_tempdir().full_path
    with self.assertRaisesRegex(ValueError, r"formats=\['tflite'\]: must list formats among"):
      export.export_model(self.model, out, formats=('tflite',))
    with self.assertRaisesRegex(ValueError, 'INT8 export needs a test_set'):
      export.export_model(self.model, out, int8=True, int8_calibration=self.calibration)
    with self.assertRaisesRegex(ValueError, 'int8_calibration must be given exactly when'):
      export.export_model(self.model, out, int8_calibration=self.calibration)
    with self.assertRaisesRegex(ValueError, 'int8_calibration must be given exactly when'):
      export.export_model(self.model, out, int8=True, test_set=(self.test_images,
                                                                 self.test_labels))
    with self.assertRaisesRegex(TypeError, r'either config or its fields.*\[\'compact\'\]'):
      export.export_model(self.model, out, configs.ExportConfig(), compact=True)
    self.assertEmpty(os.listdir(out))
    with self.assertRaisesRegex(ValueError, 'int8 needs representative inputs'):
      tflite.convert(self.model, 'int8')

  def test_every_runtime_times_the_exports(self):
    onnx_path = os.path.join(self.out, 'model.onnx')
    int8_path = os.path.join(self.out, 'model_int8.onnx')
    saved_model = os.path.join(self.out, 'saved_model')
    self.assertEqual(inference.runtimes_for(onnx_path, saved_model),
                     ['deepsparse', 'onnxruntime', 'tflite', 'litert', 'tensorflow'])
    # The SavedModel is the float model: not timed as the INT8 one.
    self.assertEqual(inference.runtimes_for(int8_path, saved_model),
                     ['deepsparse', 'onnxruntime', 'tflite', 'litert'])
    batch = self.test_images[:8]
    for path in (onnx_path, int8_path):
      expected = _session_logits(path, batch)
      for runtime in ('onnxruntime', 'tflite', 'litert'):
        run = inference.build_runner(runtime, onnx_path=path, saved_model_dir=None,
                                     batch_size=8)
        found = run(batch)
        found = found[0] if isinstance(found, list) else found
        # Float files agree to 1e-4; INT8 files (two quantizers) on the argmax.
        if path == onnx_path:
          self.assertAllClose(found, expected, atol=1e-4, rtol=0)
        else:
          self.assertGreaterEqual(np.mean(np.argmax(found, 1) == np.argmax(expected, 1)), 0.75)
    timings = [found[0] for found in inference.benchmark(
        int8_path, configs.TimingConfig(batch_size=8, budget_seconds=0.1, warmup_seconds=0),
        input_shape=(28, 28))]
    self.assertEqual([t.runtime for t in timings],
                     ['deepsparse', 'onnxruntime', 'tflite', 'litert'])
    self.assertTrue(all(t.iterations > 0 for t in timings), timings)

  def test_deepsparse_abort_is_one_line_not_a_crash(self):
    """A QDQ model DeepSparse 1.8 cannot plan (no pre-processing) aborts its process."""
    quantization = onnx_int8._quantization()  # pylint: disable=protected-access
    path = os.path.join(self.create_tempdir().full_path, 'raw_qdq.onnx')
    source = os.path.join(self.out, 'model.onnx')
    name = onnx.load(source).graph.input[0].name

    class Reader(quantization.CalibrationDataReader):

      def __init__(self, images):
        self._batches = iter([{name: images}])

      def get_next(self):
        return next(self._batches, None)

    quantization.quantize_static(source, path, Reader(self.calibration),
                                 quant_format=quantization.QuantFormat.QDQ)
    timings = [found[0] for found in inference.benchmark(
        path, configs.TimingConfig(batch_size=4, budget_seconds=0.05, warmup_seconds=0),
        input_shape=(28, 28), runtimes=['deepsparse', 'onnxruntime'])]
    self.assertRegex(timings[0].unavailable,
                     r'^deepsparse: the engine failed compiling .*raw_qdq.onnx \(exit status')
    self.assertLen(timings[0].unavailable.splitlines(), 1)
    self.assertGreater(timings[1].iterations, 0)  # This process went on.


class ExportFormatsBinaryTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    root = tf.compat.v1.test.get_temp_dir()
    data_dir = fixtures.write_fashion_mnist_like(os.path.join(root, 'data_b'), 600, 200)
    cls.run_dir = os.path.join(root, 'results', 'run')
    os.makedirs(cls.run_dir)
    _trained_pruned_model(data_dir).save(os.path.join(cls.run_dir, 'final_model.keras'))
    config_lib.save(config_lib.TrainConfig(dataset='fashion_mnist', data_dir=data_dir),
                    os.path.join(cls.run_dir, 'config.json'))

  def test_formats_and_int8_through_the_binary(self):
    out = os.path.join(self.create_tempdir().full_path, 'e')
    code, stdout, err = fixtures.run_binary_process('export', [
        f'--run_dir={self.run_dir}', f'--output_dir={out}', '--formats=onnx,tflite', '--int8',
        '--calibration_examples=64'])
    self.assertEqual(code, 0, err)
    for name in ('model.onnx', 'model_int8.onnx', 'model.tflite', 'model_int8.tflite'):
      self.assertIn(f'exported: {os.path.join(out, name)}', stdout)
    with open(os.path.join(out, 'export_report.json')) as f:
      report = json.load(f)
    self.assertLen(report['files'], 3)
    self.assertTrue(all(abs(report['keras_test_accuracy'] - f['test_accuracy']) <= 0.01
                        for f in report['files']))
    prefix = os.path.join(self.create_tempdir().full_path, 'timings')
    code, _, err = fixtures.run_binary(benchmark_inference, [
        f'--onnx={out}/model.onnx,{out}/model_int8.onnx', '--batch_size=4',
        '--budget_seconds=0.05', '--warmup_seconds=0', f'--output={prefix}',
        '--runtime=onnxruntime', '--runtime=tflite', '--runtime=tensorflow'])
    self.assertEqual(code, 0, err)
    with open(prefix + '.json') as f:
      rows = json.load(f)
    self.assertEqual([(os.path.basename(r['model']), r['runtime']) for r in rows], [
        ('model.onnx', 'onnxruntime'), ('model.onnx', 'tflite'), ('model.onnx', 'tensorflow'),
        ('model_int8.onnx', 'onnxruntime'), ('model_int8.onnx', 'tflite')])

  def test_bad_flags_are_one_line(self):
    keras_only = self.create_tempdir().full_path
    tf.keras.models.load_model(os.path.join(self.run_dir, 'final_model.keras')).save(
        os.path.join(keras_only, 'final_model.keras'))
    cases = [
        (['--formats=tflite'], r"--formats=\['tflite'\]: must list formats among onnx,tflite "
         'and include onnx'),
        (['--formats=onnx,coreml'], r'--formats=.*must list formats among onnx,tflite'),
        (['--int8', '--calibration_examples=0'], '--calibration_examples=0: must be >= 1'),
        (['--int8', '--max_int8_accuracy_drop=2'], '--max_int8_accuracy_drop=2.0: must be in'),
    ]
    for extra, pattern in cases:  # In this process; the last case as a user meets it.
      code, _, err = fixtures.run_binary(
          export_binary, [f'--run_dir={self.run_dir}', f'--output_dir={keras_only}/e'] + extra)
      self.assertEqual(code, flag_utils.USAGE_EXIT_CODE, err)
      self.assertRegex(err, pattern)
      self.assertLen(err.strip().splitlines(), 1, err)
    code, _, err = fixtures.run_binary_process(
        'export', [f'--run_dir={keras_only}', f'--output_dir={keras_only}/e', '--int8'])
    self.assertEqual(code, flag_utils.USAGE_EXIT_CODE, err)
    self.assertRegex(err, r"--run_dir=.*: --int8 needs the run's data: cannot use the run "
                     'configuration .*config.json')
    self.assertLen(err.strip().splitlines(), 1, err)
    self.assertFalse(os.path.exists(os.path.join(keras_only, 'e')))
