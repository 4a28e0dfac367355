"""Upload-side compression as TFF weighted aggregation factories, reporting their own bytes.

`QuantizedMeanFactory`: TFF's weighted mean with each client's value
uniformly quantized (`tff.aggregators.EncodedSumFactory.quantize_above_threshold`,
as in `tff.learning.compression_aggregator`). TFF's encoder sends each
tensor of more than `threshold` elements as `bits`-bit levels, bitpacked
(`codecs.quantized_size`), and every other tensor as it is (float32, 4 bytes
an element); the factory measures exactly that, as `bytes_uploaded` summed
over the clients. It composes with any TFF learning process
(`model_aggregator=`), `build_weighted_fed_avg` included.

`SparseDeltaMeanFactory`: the weighted mean of the clients' values (model
deltas) after each client zeroes the smallest `prune_rate` of its value by
magnitude, over all its tensors (top-k sparsification of the update), and
optionally quantizes the values it keeps with our stochastic quantizer
(`codecs.tf_quantize`, tensors above `threshold` elements). It measures
`bytes_uploaded` with the package's encodings: per tensor, the positions
kept (`codecs.tf_mask_size`) and their values (`codecs.tf_encoded_size`, or
`tf_quantized_values_size` when quantized). This acts on deltas, which is
all an aggregator sees; the paper's message pruning (arXiv 2310.14693)
drops the smallest weights of the trained *model*, which only the client
work has (`configs.CompressionConfig.client_message_prune_rate`): the two
differ, and both are offered.
"""

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.compression import codecs
from tff_sparsify.compression import compression_config as configs
from tff_sparsify.compression import wire
from tff_sparsify.core import masks as masks_lib
from tff_sparsify.validation import ConfigError


def encoded_upload_bytes(value_type: tff.Type, bits: int, threshold: int) -> int:
  """Bytes TFF's `quantize_above_threshold` encoding of one value of `value_type` takes."""
  total = 0
  for spec in tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type)):
    n = spec.shape.num_elements()
    total += codecs.quantized_size(n, bits) if n > threshold else n * spec.dtype.size
  return total


class _MeasuredMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """A weighted mean of what each client encodes, measuring the bytes it sends.

  Subclasses give the inner weighted mean factory and `_client_encode`, a
  TensorFlow computation of one client's value to (the value as the server
  decodes it, its bytes).
  """

  def __init__(self, mean: tff.aggregators.WeightedAggregationFactory):
    self._mean = mean

  def _client_encode(self, value_type) -> tff.Computation:
    raise NotImplementedError

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    mean = self._mean.create(value_type, weight_type)
    client_encode = self._client_encode(value_type)

    @tff.federated_computation
    def init_fn():
      return mean.initialize()

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      # Every participating client sends its value, whatever its weight.
      sent, size = tff.federated_map(client_encode, value)
      output = mean.next(state, sent, weight)
      measurements = tff.federated_zip(collections.OrderedDict(
          mean=output.measurements, bytes_uploaded=tff.federated_sum(size)))
      return tff.templates.MeasuredProcessOutput(output.state, output.result, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


class QuantizedMeanFactory(_MeasuredMeanFactory):
  """TFF's quantizing weighted mean, measuring the bytes its encoder sends."""

  def __init__(self, quantize_bits: int, threshold: int = configs.QUANTIZATION_THRESHOLD):
    """Initializes the factory.

    Args:
      quantize_bits: bits per level, in [1, 16] (`configs.CompressionConfig`).
      threshold: tensors with more elements than this are quantized.
    """
    self._bits = int(quantize_bits)
    self._threshold = int(threshold)
    super().__init__(tff.aggregators.MeanFactory(
        tff.aggregators.EncodedSumFactory.quantize_above_threshold(
            quantization_bits=self._bits, threshold=self._threshold)))

  def _client_encode(self, value_type) -> tff.Computation:
    per_client = encoded_upload_bytes(value_type, self._bits, self._threshold)

    @tff.tensorflow.computation(value_type)
    def client_encode(value):  # TFF's mean encodes it; its size is known from the type.
      return value, tf.constant(per_client, tf.int64)
    return client_encode


def sparse_delta(value, prune_rate: float, bits: int, threshold: int):
  """(the value a client sends, its bytes): `SparseDeltaMeanFactory`'s client step.

  `value` is a list of float32 tensors. In TensorFlow ops, so that it runs
  in a TFF computation; tested against the NumPy encoders.
  """
  value = [tf.convert_to_tensor(t, tf.float32) for t in value]
  if prune_rate > 0:
    value = masks_lib.apply_masks(value, masks_lib.magnitude_masks(value, prune_rate))
  sent, sizes = [], []
  for i, t in enumerate(value):
    # Stochastic rounding seeded by the value itself (as the client work does).
    seed = tf.stack([tf.bitcast(tf.reduce_sum(t), tf.int32), tf.constant(i)])
    t, size = wire.encode_nonzeros(t, wire.quantized_bits(t, bits, threshold), seed)
    sent.append(t)
    sizes.append(size)
  return sent, tf.add_n(sizes) if sizes else tf.constant(0, tf.int64)


class SparseDeltaMeanFactory(_MeasuredMeanFactory):
  """Weighted mean of top-k sparsified (and optionally quantized) values, with their bytes."""

  def __init__(self, prune_rate: float, quantize_bits: int = 0,
               threshold: int = configs.QUANTIZATION_THRESHOLD):
    """Initializes the factory.

    Args:
      prune_rate: fraction of each client's value, smallest by magnitude
        over all its tensors, zeroed before sending, in [0, 1).
      quantize_bits: 0 (off) or bits per kept value, in [1, 16].
      threshold: tensors with more elements than this are quantized.

    Raises:
      ConfigError: an argument out of range (the ranges of
        `configs.CompressionConfig`, which checks the same options).
    """
    # The options as `CompressionConfig` holds them: checked there, once.
    try:
      compression = configs.CompressionConfig(
          client_message_prune_rate=prune_rate, quantize_bits=quantize_bits,
          quantize_threshold=threshold, quantizer='sparse')
    except ConfigError as e:  # Named as this factory's argument.
      names = dict(client_message_prune_rate='prune_rate', quantize_threshold='threshold')
      raise ConfigError(names.get(e.field, e.field), e.value, e.reason) from None
    if not compression.enabled:
      raise ConfigError('prune_rate', prune_rate,
                        'with quantize_bits=0 must be in (0, 1): nothing would be compressed')
    self._rate = compression.client_message_prune_rate
    self._bits = compression.sparse_bits
    self._threshold = compression.quantize_threshold
    super().__init__(tff.aggregators.MeanFactory())

  def _client_encode(self, value_type) -> tff.Computation:
    rate, bits, threshold = self._rate, self._bits, self._threshold

    @tff.tensorflow.computation(value_type)
    def client_encode(value):
      sent, size = sparse_delta(tf.nest.flatten(value), rate, bits, threshold)
      return tf.nest.pack_sequence_as(value, sent), size
    return client_encode
