"""Upload-side compression as TFF weighted aggregation factories.

`quantized_mean_factory`: TFF's weighted mean with each client's value
uniformly quantized (`tff.aggregators.EncodedSumFactory.quantize_above_threshold`),
as in `tff.learning.compression_aggregator`; `codecs.quantized_size` is the
size of what it sends.
"""

import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.learning import configs


def quantized_mean_factory(
    quantize_bits: int, threshold: int = configs.QUANTIZATION_THRESHOLD,
) -> tff.aggregators.WeightedAggregationFactory:
  """TFF's weighted mean with the clients' values uniformly quantized.

  Each tensor with more than `threshold` elements is sent as
  `quantize_bits`-bit levels between its minimum and maximum (stochastic
  rounding). `quantize_bits` in [1, 16] (`configs.CompressionConfig`).
  """
  return tff.aggregators.MeanFactory(
      tff.aggregators.EncodedSumFactory.quantize_above_threshold(
          quantization_bits=int(quantize_bits), threshold=threshold))
