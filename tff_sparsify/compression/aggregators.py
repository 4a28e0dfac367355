"""Upload-side compression as TFF weighted aggregation factories, reporting their own bytes.

`QuantizedMeanFactory`: TFF's weighted mean with each client's value
uniformly quantized (`tff.aggregators.EncodedSumFactory.quantize_above_threshold`,
as in `tff.learning.compression_aggregator`). TFF's encoder sends each
tensor of more than `threshold` elements as `bits`-bit levels, bitpacked
(`codecs.quantized_size`), and every other tensor as it is (float32, 4 bytes
an element); the factory measures exactly that, as `bytes_uploaded` summed
over the clients. It composes with any TFF learning process
(`model_aggregator=`), `build_weighted_fed_avg` included.
"""

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.compression import codecs
from tff_sparsify.learning import configs


def encoded_upload_bytes(value_type: tff.Type, bits: int, threshold: int) -> int:
  """Bytes TFF's `quantize_above_threshold` encoding of one value of `value_type` takes."""
  total = 0
  for spec in tf.nest.flatten(tff.types.type_to_tf_tensor_specs(value_type)):
    n = spec.shape.num_elements()
    total += codecs.quantized_size(n, bits) if n > threshold else n * spec.dtype.size
  return total


class QuantizedMeanFactory(tff.aggregators.WeightedAggregationFactory):
  """TFF's quantizing weighted mean, measuring the bytes its encoder sends."""

  def __init__(self, quantize_bits: int, threshold: int = configs.QUANTIZATION_THRESHOLD):
    """Initializes the factory.

    Args:
      quantize_bits: bits per level, in [1, 16] (`configs.CompressionConfig`).
      threshold: tensors with more elements than this are quantized.
    """
    self._bits = int(quantize_bits)
    self._threshold = int(threshold)
    self._mean = tff.aggregators.MeanFactory(
        tff.aggregators.EncodedSumFactory.quantize_above_threshold(
            quantization_bits=self._bits, threshold=self._threshold))

  def create(self, value_type, weight_type) -> tff.templates.AggregationProcess:
    mean = self._mean.create(value_type, weight_type)
    per_client = encoded_upload_bytes(value_type, self._bits, self._threshold)

    @tff.tensorflow.computation(weight_type)
    def client_bytes(weight):
      del weight  # Every participating client sends its value, weighted or not.
      return tf.constant(per_client, tf.int64)

    @tff.federated_computation
    def init_fn():
      return mean.initialize()

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(value_type, tff.CLIENTS),
        tff.FederatedType(weight_type, tff.CLIENTS))
    def next_fn(state, value, weight):
      output = mean.next(state, value, weight)
      measurements = tff.federated_zip(collections.OrderedDict(
          mean=output.measurements,
          bytes_uploaded=tff.federated_sum(tff.federated_map(client_bytes, weight))))
      return tff.templates.MeasuredProcessOutput(output.state, output.result, measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)
