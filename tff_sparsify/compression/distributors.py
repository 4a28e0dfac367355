"""Broadcast-side compression as a TFF `DistributionProcess`, reporting its own bytes.

`build_encoded_broadcast_process` replaces TFF's `build_broadcast_process`
(`model_distributor=` of any TFF learning process, `build_weighted_fed_avg`
included): the server's model weights go to the clients as they decode them,
and the process measures what the encoding sends (`wire.encode_tensor`, the
one encoder):

- without quantization, each trainable tensor in its shortest lossless
  non-zlib encoding (`codecs.tf_encoded_size`: the global mask is the
  non-zero pattern of the weights, so sparse models travel as positions and
  values);
- with `quantizer='sparse'`, each tensor of more than `quantize_threshold`
  elements as its non-zero pattern (a mask message) and its non-zero values
  as `quantize_bits`-bit levels between their minimum and maximum, rounded to
  the nearest (`codecs.tf_quantize`), so that every client decodes the same
  model; the clients receive the dequantized values, the server keeps its
  full-precision model.

Of the non-trainable weights, the moving statistics (BatchNormalization)
are counted; the masks (which the clients also know from the weights' zeros)
and the pruning steps are not. Measurement
`bytes_downloaded`: the bytes of one model times the clients it went to.
"""

import collections

import tensorflow as tf
import tensorflow_federated as tff

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.compression import compression_config as configs
from tff_sparsify.compression import wire


def encode_broadcast(trainable, compression: configs.CompressionConfig):
  """(the trainable tensors as the clients decode them, bytes of one model) (`wire`)."""
  received, sizes = [], []
  for t in trainable:
    value, size = wire.encode_nonzeros(
        t, wire.quantized_bits(t, compression.sparse_bits, compression.quantize_threshold))
    received.append(value)
    sizes.append(size)
  return received, tf.add_n(sizes)


def build_encoded_broadcast_process(
    model_weights_type: tff.Type,
    compression: configs.CompressionConfig = configs.CompressionConfig(),
    statistics: tuple[int, ...] = (),
) -> tff.learning.templates.DistributionProcess:
  """A `DistributionProcess` broadcasting `ModelWeights`, encoded as `compression` says.

  Args:
    model_weights_type: the (unplaced) `tff.learning.models.ModelWeights` type.
    compression: its `quantize_bits`, `quantize_threshold` and `quantizer`
      (only 'sparse' quantizes the broadcast; TFF's quantizer acts on uploads).
    statistics: indices in the non-trainable weights of the moving statistics
      (`layout.PruningLayout.statistics`), counted in their lossless encoding.

  Returns:
    A stateless `DistributionProcess` whose measurements are
    `OrderedDict(bytes_downloaded)`, summed over the clients.
  """

  @tff.tensorflow.computation(model_weights_type)
  def encode(weights):
    received, size = encode_broadcast(tuple(weights.trainable), compression)
    if statistics:
      size += wire.lossless_bytes([weights.non_trainable[i] for i in statistics])
    return tff.learning.models.ModelWeights(
        tuple(received), tuple(weights.non_trainable)), size

  @tff.federated_computation
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(model_weights_type, tff.SERVER))
  def next_fn(state, weights):
    received, size = tff.federated_map(encode, weights)
    # Each client receives one copy: summed at the clients, the bytes of all.
    total = tff.federated_sum(tff.federated_broadcast(size))
    return tff.templates.MeasuredProcessOutput(
        state, tff.federated_broadcast(received),
        tff.federated_zip(collections.OrderedDict(bytes_downloaded=total)))

  return tff.learning.templates.DistributionProcess(init_fn, next_fn)
