"""The one encoder of the wire: a tensor as the receiver decodes it, and its bytes.

Every tensor this package sends (the broadcast model, a client's trained
weights or quantized delta, a top-k update, a client's mask, PruneFL's
squared gradients, moving statistics) is encoded by `encode_tensor`, which
returns what the receiver decodes and the bytes of what travelled (the
encodings of `codecs`). The component that sends a tensor calls it and
reports those bytes, once: the distributor (`distributors`: the broadcast,
`bytes_downloaded`), the client work (`learning.client_work`: what the
client encodes, `bytes_uploaded`) or the aggregator (`aggregators`: a
top-k update, or TFF's quantized upload, which TFF encodes and whose size
`aggregators.encoded_upload_bytes` computes from the type). The process-level
test `tests/test_wire.py` checks over a grid of option combinations that the
bytes reported add up to an independent NumPy count: no byte twice, none
missed.

A tensor goes as:
- its values at `sent` (all of them if None), losslessly in the shortest
  encoding (`codecs.tf_encoded_size`, whose own header carries any zeros'
  positions), or, with `bits`, as `bits`-bit levels between their minimum
  and maximum (`codecs.tf_quantize_at`: stochastic rounding where a `seed`
  is given, nearest otherwise);
- preceded, with `send_positions`, by `sent` itself as a mask message
  inside `within` (the positions the receiver knows may hold values; None:
  all), where the receiver cannot know `sent`.
"""

import math
from typing import Optional

import tensorflow as tf

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.compression import codecs


def quantized_bits(t: tf.Tensor, bits: int, threshold: int) -> int:
  """`bits` if `t` is quantized (more than `threshold` elements), else 0 (lossless)."""
  return bits if bits and t.shape.num_elements() > threshold else 0


def encode_tensor(values: tf.Tensor, *, sent: Optional[tf.Tensor] = None,
                  send_positions: bool = False, within: Optional[tf.Tensor] = None,
                  bits: int = 0, seed=None, count_values: bool = True):
  """(`values` as the receiver decodes them, the bytes sent: int64 tensor).

  Args:
    values: the tensor.
    sent: bool tensor, the positions whose values go; None: all.
    send_positions: `sent` travels too, as a mask message inside `within`.
    within: bool tensor, the positions the receiver knows may hold values.
    bits: 0 (lossless) or the quantization's bits per value.
    seed: the stochastic rounding's seed (shape [2] int32); None: nearest.
    count_values: False where another component encodes and counts the
      values (TFF's quantizing aggregator): only the positions are counted.
  """
  sizes = []
  if send_positions:
    sizes.append(codecs.tf_mask_size(sent if within is None else tf.boolean_mask(sent, within)))
  if bits:
    at = tf.ones_like(values, tf.bool) if sent is None else sent
    values = codecs.tf_quantize_at(values, at, bits, seed)
    sizes.append(codecs.tf_quantized_values_size(tf.math.count_nonzero(at, dtype=tf.int64),
                                                 bits))
  elif count_values:
    sizes.append(codecs.tf_encoded_size(values if sent is None else tf.boolean_mask(values, sent)))
  return values, (tf.add_n(sizes) if sizes else tf.constant(0, tf.int64))


def encode_nonzeros(t: tf.Tensor, bits: int, seed=None):
  """`t` with its non-zero positions as a mask message, then their `bits`-bit levels;
  lossless (positions in the encoding's own header) where `bits` is 0."""
  if not bits:
    return encode_tensor(t)
  return encode_tensor(t, sent=tf.not_equal(t, 0), send_positions=True, bits=bits, seed=seed)


def lossless_bytes(tensors) -> tf.Tensor:
  """The bytes of `tensors`, each sent whole and lossless (int64 tensor; 0 for none)."""
  sizes = [encode_tensor(t)[1] for t in tensors]
  return tf.add_n(sizes) if sizes else tf.constant(0, tf.int64)


# TFF's secure sum of floats (`tff.aggregators.SecureSumFactory`, through
# `secure_quantized_sum`): each value clipped to its bounds and rounded to a
# 32-bit integer.
SECURE_SUM_VALUE_BITS = 32


def secure_sum_bits(clients: int) -> int:
  """Bits per value of a secure-sum message among `clients`.

  In the secure aggregation protocol (Bonawitz et al. 2017) each client
  sends its integers masked in a ring that holds the sum of all the
  clients' values: 32 bits, plus ceil(log2 clients) for the sum. The key
  agreement and the secret shares of the protocol are not counted.
  """
  return SECURE_SUM_VALUE_BITS + max(0, math.ceil(math.log2(clients)))


def secure_sum_bytes(num_values, clients: int):
  """Bytes of one client's secure-sum message of `num_values` values (an int or int64 tensor)."""
  return (num_values * secure_sum_bits(clients) + 7) // 8
