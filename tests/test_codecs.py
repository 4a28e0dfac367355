"""Tests for tff_sparsify.compression.codecs: lossless round trips, sizes, entropy bound."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_model_optimization.python.core.internal import tensor_encoding as te  # pylint: disable=g-direct-tensorflow-import

from tff_sparsify.compression import aggregators as compression_aggregators
from tff_sparsify.compression import codecs
from tff_sparsify.simulation import execution


def sparse_tensor(sparsity, shape=(61, 37), seed=0, dtype=np.float32):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=shape).astype(dtype)
  x[rng.random(shape) < sparsity] = 0
  return x


class RoundTripTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(
      sparsity=[0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0], method=codecs.LOSSLESS)
  def test_every_method_is_bit_exact(self, sparsity, method):
    x = sparse_tensor(sparsity)
    message = codecs.encode(x, methods=[method])
    self.assertEqual(codecs.method_of(message), method)
    y = codecs.decode(message)
    self.assertEqual((y.dtype, y.shape), (x.dtype, x.shape))
    self.assertEqual(y.tobytes(), x.tobytes())

  @parameterized.named_parameters(
      ('empty', np.zeros((0,), np.float32)),
      ('empty_2d', np.zeros((3, 0), np.float64)),
      ('scalar', np.float32(-2.5)),
      ('zero_scalar', np.float32(0.0)),
      ('special', np.array([np.nan, -0.0, np.inf, 0.0, -np.inf, 1e-45], np.float32)),
      ('nan_payload', np.array([0, 0x7FC00123, 0x80000000], np.uint32).view(np.float32)),
      ('int64', np.arange(-5, 400, dtype=np.int64)),
      ('uint8_big', np.repeat(np.array([0, 7], np.uint8), 40_000)),
  )
  def test_edge_cases(self, x):
    for method in codecs.LOSSLESS:
      y = codecs.decode(codecs.encode(x, methods=[method]))
      self.assertEqual((y.dtype, y.shape), (np.asarray(x).dtype, np.shape(x)), method)
      self.assertEqual(y.tobytes(), np.asarray(x).tobytes(), method)

  def test_negative_zero_counts_as_non_zero(self):
    x = np.array([0.0, -0.0, 0.0, 0.0], np.float32)
    message = codecs.encode(x, methods=['indices'])
    # Header 1+1+1+1 (dim 4), count 1, one uint8 index, one float32.
    self.assertLen(message, 4 + 1 + 1 + 4)
    self.assertEqual(codecs.decode(message).tobytes(), x.tobytes())


class SizeTest(tf.test.TestCase, parameterized.TestCase):

  def test_sizes_by_hand(self):
    x = np.zeros(300, np.float32)
    x[[3, 10, 299]] = [1.0, -2.0, 3.0]
    header = 3 + 2  # method, dtype, ndim, varint(300) = 2 bytes.
    self.assertLen(codecs.encode(x, methods=['dense']), header + 1200)
    # count (1) + bitmap ceil(300 / 8) = 38 + 3 values.
    self.assertLen(codecs.encode(x, methods=['bitmap']), header + 1 + 38 + 12)
    # 300 needs uint16 indices.
    self.assertLen(codecs.encode(x, methods=['indices']), header + 1 + 6 + 12)
    self.assertEqual(codecs.method_of(codecs.encode(x, methods=['dense', 'bitmap', 'indices'])),
                     'indices')

  @parameterized.parameters(0.0, 0.3, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999)
  def test_within_ten_percent_of_entropy_bound(self, sparsity):
    tensors = [sparse_tensor(sparsity, (784, 128), seed=1),
               sparse_tensor(sparsity, (128,), seed=2),
               sparse_tensor(sparsity, (128, 10), seed=3)]
    size = codecs.encoded_size(tensors)
    self.assertLessEqual(size, 1.1 * codecs.entropy_bound_bytes(tensors))

  def test_bound_bytes_by_hand(self):
    # d = 1/2: one bit per position; d = 0 or 1: none; n = 0: nothing.
    self.assertAllClose(codecs.bound_bytes([16, 8, 8, 0], [8, 0, 8, 0]),
                        [4 * 8 + 16 / 8, 0.0, 4 * 8, 0.0])
    x = sparse_tensor(0.9, (100, 10), seed=4)
    self.assertAllClose(codecs.entropy_bound_bytes([x]),
                        codecs.bound_bytes(1000, np.count_nonzero(x)))

  def test_bitmap_alone_misses_the_bound_at_099(self):
    x = sparse_tensor(0.99, (784, 128))
    bitmap = len(codecs.encode(x, methods=['bitmap']))
    self.assertGreater(bitmap, 2 * codecs.entropy_bound_bytes([x]))

  def test_float16_is_lossy_and_says_so(self):
    x = sparse_tensor(0.5, (64, 64))
    message = codecs.encode(x, float16=True)
    self.assertEndsWith(codecs.method_of(message), '(float16)')
    y = codecs.decode(message)
    self.assertEqual(y.dtype, np.float16)
    self.assertAllClose(y.astype(np.float32), x, rtol=1e-3, atol=1e-4)
    self.assertLess(len(message), 0.6 * len(codecs.encode(x)))

  @parameterized.named_parameters(
      ('method', dict(methods=['huffman']), r"methods must be a non-empty subset of .*'huffman'"),
      ('no_method', dict(methods=[]), 'methods must be a non-empty subset'),
  )
  def test_bad_arguments(self, kwargs, regex):
    with self.assertRaisesRegex(ValueError, regex):
      codecs.encode(np.ones(3, np.float32), **kwargs)

  def test_bad_dtype(self):
    with self.assertRaisesRegex(ValueError, 'x.dtype must be one of .*complex64'):
      codecs.encode(np.ones(3, np.complex64))


class TfEncodedSizeTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(0.0, 0.2, 0.5, 0.9, 0.99, 0.9999, 1.0)
  def test_equals_the_encoders_output(self, sparsity):
    for shape in [(784, 128), (300,), (3, 5), (1,)]:
      x = sparse_tensor(sparsity, shape, seed=len(shape))
      expected = len(codecs.encode(x, methods=codecs.METHODS))
      self.assertEqual(int(codecs.tf_encoded_size(tf.constant(x))), expected, (sparsity, shape))

  def test_rice_bisection_equals_exhaustive_search(self):
    rng = np.random.default_rng(7)
    cases = [
        np.zeros(50, np.int64),  # Dense: every gap 0.
        rng.geometric(0.01, 5000) - 1,
        rng.geometric(0.5, 300) - 1,
        np.concatenate([np.zeros(1000, np.int64), [2**30]]),  # One huge gap.
        np.concatenate([rng.integers(0, 3, 200), rng.integers(2**20, 2**21, 200)]),
        np.array([2**31 - 1], np.int64),
    ] + [rng.integers(0, 2**rng.integers(1, 31), rng.integers(1, 500)) for _ in range(30)]
    for gaps in cases:
      expected = min(codecs._rice_bits(gaps, k) for k in range(codecs._MAX_RICE_K))
      got = codecs._tf_min_rice_bits(tf.constant(gaps, tf.int64), tf.constant(gaps.size, tf.int64))
      self.assertEqual(int(got), expected, gaps[:5])

  def test_inside_tf_function_with_special_values(self):
    x = np.array([[np.nan, -0.0], [0.0, 1.0]], np.float32)
    size = tf.function(codecs.tf_encoded_size)(tf.constant(x))
    self.assertEqual(int(size), len(codecs.encode(x, methods=codecs.METHODS)))


class MaskTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(sparsity=[0.0, 0.5, 0.9, 0.999, 1.0], method=codecs.SPARSE_METHODS)
  def test_round_trip_and_tf_size(self, sparsity, method):
    mask = (sparse_tensor(sparsity, (97, 31)) != 0).astype(np.float32)
    message = codecs.encode_mask(mask, methods=[method])
    self.assertTrue(codecs.method_of(message).endswith('(mask)'))
    self.assertAllEqual(codecs.decode_mask(message), mask != 0)
    best = codecs.encode_mask(mask, methods=codecs.METHODS)
    self.assertEqual(int(codecs.tf_mask_size(tf.constant(mask))), len(best))

  def test_full_mask_is_its_header(self):
    for shape in [(5, 3), (0,), (70000,)]:
      mask = np.ones(shape, np.float32)
      message = codecs.encode_mask(mask)
      self.assertLen(message, 3 + sum(len(codecs._varint(d)) for d in shape))
      self.assertAllEqual(codecs.decode_mask(message), np.ones(shape, bool))
      self.assertEqual(int(codecs.tf_mask_size(tf.constant(mask))), len(message))
    # Inside a TFF-style graph (where == on tensors is identity) too.
    with tf.Graph().as_default():
      size = codecs.tf_mask_size(tf.ones([4], tf.bool))
      with tf.compat.v1.Session() as session:
        self.assertEqual(session.run(size), 4)

  def test_mask_costs_no_values(self):
    mask = np.zeros(800, np.float32)
    mask[::2] = 1
    self.assertLen(codecs.encode_mask(mask, methods=['bitmap']), 3 + 2 + 2 + 100)


class QuantizedSizeTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(bits=[1, 7, 8, 16], n=[20001, 100352])
  def test_equals_tffs_encoder_output(self, bits, n):
    x = tf.constant(np.random.default_rng(bits).normal(size=n).astype(np.float32))
    encoder = te.encoders.as_simple_encoder(
        te.encoders.uniform_quantization(bits), tf.TensorSpec(x.shape, x.dtype))
    encoded, _ = encoder.encode(x, encoder.initial_state())
    written = sum(t.dtype.size * t.shape.num_elements() for t in tf.nest.flatten(encoded))
    self.assertEqual(codecs.quantized_size(n, bits), written)

  def test_quantized_mean_counts_what_tffs_encoder_writes(self):
    """Each client's bytes: TFF's encoders' outputs, tensor by tensor (the oracle)."""
    threshold, bits = 100, 4
    shapes = [(101,), (100,), (20, 7), (3,)]
    value_type = tff.StructWithPythonType(
        [tff.TensorType(np.float32, s) for s in shapes], tuple)
    written = 0
    for shape in shapes:
      x = tf.zeros(shape, tf.float32)
      stage = (te.encoders.uniform_quantization(bits) if x.shape.num_elements() > threshold
               else te.encoders.identity())
      encoder = te.encoders.as_simple_encoder(stage, tf.TensorSpec(x.shape, x.dtype))
      encoded, _ = encoder.encode(x, encoder.initial_state())
      written += sum(t.dtype.size * t.shape.num_elements() for t in tf.nest.flatten(encoded))
    self.assertEqual(compression_aggregators.encoded_upload_bytes(value_type, bits, threshold),
                     written)
    process = compression_aggregators.QuantizedMeanFactory(bits, threshold).create(
        value_type, tff.TensorType(np.float32))
    values = [tuple(np.full(s, i, np.float32) for s in shapes) for i in range(3)]
    with execution.local_cpp_execution_context():
      output = process.next(process.initialize(), values, [1.0, 0.0, 2.0])
    self.assertEqual(output.measurements['bytes_uploaded'], 3 * written)
    self.assertAllClose(output.result[3], np.full(3, 4 / 3))  # Unquantized: exact mean.

  def test_sparse_delta_counts_what_the_encoders_write(self):
    """Top-k over all tensors, then each large tensor quantized at its kept positions."""
    rng = np.random.default_rng(7)
    value = [rng.normal(size=(40, 3)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    sent, size = compression_aggregators.sparse_delta(value, 0.75, bits=3, threshold=10)
    flat = np.abs(np.concatenate([v.ravel() for v in value]))
    cut = np.sort(flat)[int(round(0.75 * flat.size)) - 1]
    kept = [np.abs(v) > cut for v in value]
    self.assertEqual(sum(k.sum() for k in kept), flat.size - round(0.75 * flat.size))
    sent = [t.numpy() for t in sent]
    # The small tensor goes as it is (pruned, not quantized); the large one as
    # its mask and the quantized values at it, within one step of the input.
    self.assertAllEqual(sent[1], np.where(kept[1], value[1], 0))
    self.assertAllEqual(sent[0] != 0, kept[0])
    step = np.ptp(value[0][kept[0]]) / 7
    self.assertLessEqual(np.abs(sent[0] - np.where(kept[0], value[0], 0)).max(), step + 1e-6)
    levels, lo, hi = codecs.quantize(value[0][kept[0]], 3)
    expected = (len(codecs.encode_mask(kept[0], methods=codecs.METHODS))
                + len(codecs.encode_quantized(levels, lo, hi, 3))
                + len(codecs.encode(sent[1], methods=codecs.METHODS)))
    self.assertEqual(int(size), expected)

  @parameterized.parameters(
      (dict(prune_rate=1.0), r'prune_rate=1.0: must be in \[0, 1\)'),
      (dict(prune_rate=0.0), r'prune_rate=0.0: with quantize_bits=0 must be in \(0, 1\)'),
      (dict(prune_rate=0.5, quantize_bits=17), r'quantize_bits=17: must be 0 \(off\) or'),
      (dict(prune_rate=0.5, threshold=-1), r'threshold=-1: must be >= 0'))
  def test_sparse_delta_factory_names_a_bad_argument(self, kwargs, regex):
    with self.assertRaisesRegex(ValueError, regex):
      compression_aggregators.SparseDeltaMeanFactory(**kwargs)

  @parameterized.parameters(17, 0, 2.5, True)
  def test_bad_bits(self, bits):
    with self.assertRaisesRegex(ValueError, r'bits must be in \[1, 16\], got'):
      codecs.encode_quantized([0], 0.0, 1.0, bits)


class SparseQuantizerTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(bits=[1, 2, 5, 8, 16], n=[0, 1, 7, 1000], seed=[None, (3, 4)])
  def test_message_decodes_to_what_tf_computes(self, bits, n, seed):
    values = np.random.default_rng(n).normal(size=n).astype(np.float32)
    levels, lo, hi, dequantized = codecs.tf_quantize(tf.constant(values), bits, seed)
    message = codecs.encode_quantized(levels.numpy(), lo.numpy(), hi.numpy(), bits)
    decoded = codecs.decode_quantized(message)
    self.assertEqual(decoded.tobytes(), dequantized.numpy().tobytes())
    self.assertLen(message, codecs.quantized_values_size(n, bits))
    self.assertEqual(int(codecs.tf_quantized_values_size(tf.constant(n), bits)), len(message))
    if n:  # Within one step (stochastic) or half a step (nearest) of the input.
      step = (values.max() - values.min()) / (2**bits - 1)
      rounding = 4 * np.finfo(np.float32).eps * np.abs(values).max()  # float32 arithmetic
      self.assertLessEqual(np.abs(decoded - values).max(), step * (1 if seed else 0.5) + rounding)
    if seed is None:
      self.assertAllEqual(codecs.quantize(values, bits)[0], levels)

  def test_stochastic_rounding_is_unbiased(self):
    values = tf.fill([20000], 0.3)
    values = tf.concat([[0.0, 1.0], values], 0)
    *_, nearest = codecs.tf_quantize(values, 2)
    *_, stochastic = codecs.tf_quantize(values, 2, seed=(1, 2))
    self.assertAllClose(nearest[2:], tf.fill([20000], 1 / 3))
    self.assertNear(float(tf.reduce_mean(stochastic[2:])), 0.3, 0.005)

  def test_constant_values(self):
    levels, lo, hi, dequantized = codecs.tf_quantize(tf.fill([5], -2.0), 8)
    self.assertAllEqual(levels, np.zeros(5))
    self.assertAllEqual(dequantized, np.full(5, -2.0))
    message = codecs.encode_quantized(levels.numpy(), lo.numpy(), hi.numpy(), 8)
    self.assertAllEqual(codecs.decode_quantized(message), np.full(5, -2.0))

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, r'bits must be in \[1, 16\], got 17'):
      codecs.encode_quantized([0], 0.0, 1.0, 17)
    with self.assertRaisesRegex(ValueError, r'levels must be in \[0, 3\] for bits=2'):
      codecs.encode_quantized([4], 0.0, 1.0, 2)
