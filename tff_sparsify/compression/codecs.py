"""Encodings of model tensors for the wire, and their real sizes in bytes.

Each tensor is encoded by every method asked for and the shortest result is
kept. Lossless methods (decode(encode(x)) == x bit for bit, NaN payloads and
-0.0 included; a "zero" is an element whose bytes are all zero):

- `dense`: the raw elements;
- `bitmap`: one bit per element saying non-zero, then the non-zero elements;
- `indices`: the positions of the non-zeros as unsigned integers of the
  smallest width (1, 2 or 4 bytes) that holds them, then the elements;
- `golomb`: the gaps between non-zero positions, Golomb-Rice coded with the
  best power-of-two parameter, then the elements. For positions drawn at
  random with density d this comes within a few percent of the entropy
  n * H(d) bits, where a bitmap always takes n bits;
- each of them followed by zlib (`*_zlib`), which catches the structure of
  magnitude masks (e.g. whole input pixels pruned).

`float16=True` stores float values as float16 (lossy, and the header says
so). Masks (`encode_mask`) are positions only; a mask with every element
set is the header alone. A message starts with a small header (method, dtype, shape, non-zero
count, as LEB128 varints), so it is self-describing.

Lossy, `quantizer='sparse'` (`tf_quantize`, `encode_quantized`): the
non-zero values only, as `bits`-bit uniform levels between their minimum
and maximum; the positions travel as a mask message where the receiver does
not know them already. TFF's quantizer (below) sends every element.

Uploads quantized by TFF (`tff.aggregators.EncodedSumFactory.
quantize_above_threshold`, see `compression.aggregators.QuantizedMeanFactory`) are
counted as TFF's encoder writes them (`quantized_size`): it quantizes every
element of a tensor with more than `QUANTIZATION_THRESHOLD` elements, zeros
included, so sparsity no longer shortens such a tensor, and sends the other
tensors as they are (4 bytes an element).
"""

import math
import zlib
from typing import Iterable, Sequence

import numpy as np
import tensorflow as tf

from tff_sparsify import _compat  # pylint: disable=unused-import  (TF 2.14 fix)
from tff_sparsify.compression import compression_config as configs

METHODS = ('dense', 'bitmap', 'indices', 'golomb')
LOSSLESS = METHODS + tuple(f'{m}_zlib' for m in METHODS)
_DTYPES = (np.float32, np.float64, np.float16, np.int8, np.int16, np.int32,
           np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
_MAX_RICE_K = 32  # Gaps of tensors below 2**32 elements.
_ZLIB_FLAG = 0x10
_FLOAT16_FLAG = 0x20
_MASK_FLAG = 0x40
SPARSE_METHODS = METHODS[1:]
QUANTIZATION_THRESHOLD = configs.QUANTIZATION_THRESHOLD
_BITPACK_WORD_BITS = 28  # tensor_encoding's BitpackingEncodingStage.


def quantized_size(num_elements: int, bits: int) -> int:
  """Bytes of TFF's uniform quantization of a tensor of `num_elements`.

  `tensor_encoding.encoders.uniform_quantization(bits)` writes the minimum
  and maximum (2 float32) and every element's `bits`-bit level, bitpacked 28
  bits per int32 word.
  """
  return 8 + 4 * math.ceil(num_elements * bits / _BITPACK_WORD_BITS)


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
  value, shift = 0, 0
  while True:
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    shift += 7
    if not byte & 0x80:
      return value, pos


def _nonzero(x: np.ndarray) -> np.ndarray:
  """Positions whose bytes are not all zero (so -0.0 and NaN count)."""
  flat = np.ascontiguousarray(x).reshape(-1)
  raw = flat.view(np.uint8).reshape(flat.size, flat.itemsize)
  return np.flatnonzero(raw.any(axis=1))


def _index_width(n: int) -> np.dtype:
  for dtype in (np.uint8, np.uint16, np.uint32):
    if n - 1 <= np.iinfo(dtype).max:
      return np.dtype(dtype)
  return np.dtype(np.uint64)


def _rice_bits(gaps: np.ndarray, k: int) -> int:
  return int(np.sum(gaps >> k)) + gaps.size * (1 + k)


def _rice_encode(gaps: np.ndarray) -> bytes:
  """Golomb-Rice code of non-negative gaps: [k][bits], unary quotient then k bits."""
  if gaps.size == 0:
    return bytes([0])
  k = min(range(_MAX_RICE_K), key=lambda k: _rice_bits(gaps, k))
  quotients = gaps >> k
  lengths = quotients + 1 + k
  starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  bits = np.zeros(int(lengths.sum()), np.uint8)
  # Unary part: q ones, then the zero already in place.
  ones = np.repeat(starts, quotients) + (
      np.arange(int(quotients.sum())) - np.repeat(np.cumsum(quotients) - quotients, quotients))
  bits[ones] = 1
  for j in range(k):  # Remainder, most significant bit first.
    bits[starts + quotients + 1 + j] = (gaps >> (k - 1 - j)) & 1
  return bytes([k]) + np.packbits(bits).tobytes()


def _rice_decode(data: bytes, count: int) -> np.ndarray:
  k = data[0]
  bits = np.unpackbits(np.frombuffer(data, np.uint8, offset=1))
  zeros = np.flatnonzero(bits == 0)
  gaps = np.empty(count, np.int64)
  pos = 0
  for i in range(count):
    end = zeros[np.searchsorted(zeros, pos)]  # The zero closing the unary part.
    quotient = end - pos
    remainder = 0
    for bit in bits[end + 1:end + 1 + k]:
      remainder = (remainder << 1) | int(bit)
    gaps[i] = (quotient << k) | remainder
    pos = end + 1 + k
  return gaps


def _payload(method: str, flat: np.ndarray, positions: np.ndarray, mask: bool) -> bytes:
  if method == 'dense':
    return flat.tobytes()
  values = b'' if mask else flat[positions].tobytes()
  if method == 'bitmap':
    present = np.zeros(flat.size, np.uint8)
    present[positions] = 1
    return np.packbits(present).tobytes() + values
  if method == 'indices':
    return positions.astype(_index_width(flat.size)).tobytes() + values
  gaps = np.diff(positions, prepend=-1) - 1
  return _rice_encode(gaps.astype(np.int64)) + values


def encode(x, *, methods: Sequence[str] = LOSSLESS, float16: bool = False) -> bytes:
  """Encodes one tensor with the shortest of `methods`.

  Args:
    x: a NumPy array (or anything `np.asarray` takes) of a dtype in `_DTYPES`.
    methods: names from `LOSSLESS`.
    float16: store float values as float16 (lossy).

  Returns:
    The message: header then payload.
  """
  return _encode(x, methods, float16, mask=False)


def encode_mask(mask, *, methods: Sequence[str] = LOSSLESS) -> bytes:
  """Encodes which entries of `mask` are non-zero (positions only, no values)."""
  methods = [m for m in methods if not m.startswith('dense')]
  return _encode(np.asarray(mask) != 0, methods, False, mask=True)


def decode_mask(message: bytes) -> np.ndarray:
  """Inverse of `encode_mask`: a bool array."""
  return decode(message)


def _encode(x, methods, float16, mask) -> bytes:
  x = np.asarray(x)
  if mask:
    x = x.astype(np.uint8)
  unknown = [m for m in methods if m not in LOSSLESS]
  if unknown or not methods:
    raise ValueError(f'methods must be a non-empty subset of {LOSSLESS}, got {list(methods)}')
  if x.dtype.type not in _DTYPES:
    raise ValueError(f'x.dtype must be one of {[np.dtype(d).name for d in _DTYPES]}, got {x.dtype}')
  flags = _MASK_FLAG if mask else 0
  if float16 and x.dtype.kind == 'f' and x.dtype != np.float16:
    x = x.astype(np.float16)
    flags |= _FLOAT16_FLAG
  flat = np.ascontiguousarray(x).reshape(-1)
  positions = _nonzero(flat)
  header_tail = bytes([_DTYPES.index(x.dtype.type), x.ndim]) + b''.join(
      _varint(d) for d in x.shape)
  if mask and positions.size == flat.size:  # Every element set: the header says so.
    return bytes([METHODS.index('dense') | flags]) + header_tail
  best = None
  for name in methods:
    method, _, compressed = name.partition('_')
    payload = _payload(method, flat, positions, mask)
    if method != 'dense':
      payload = _varint(positions.size) + payload
    if compressed:
      payload = zlib.compress(payload, 9)
    first = METHODS.index(method) | flags | (_ZLIB_FLAG if compressed else 0)
    message = bytes([first]) + header_tail + payload
    if best is None or len(message) < len(best):
      best = message
  return best


def decode(message: bytes) -> np.ndarray:
  """Inverse of `encode` (float16 messages decode to float16)."""
  first, dtype_code, ndim = message[0], message[1], message[2]
  method = METHODS[first & 0x0F]
  dtype = np.dtype(_DTYPES[dtype_code])
  pos = 3
  shape = []
  for _ in range(ndim):
    dim, pos = _read_varint(message, pos)
    shape.append(dim)
  payload = message[pos:]
  if first & _ZLIB_FLAG:
    payload = zlib.decompress(payload)
  n = int(np.prod(shape, dtype=np.int64))
  if method == 'dense' and first & _MASK_FLAG:
    return np.ones(shape, bool)
  if method == 'dense':
    return np.frombuffer(payload, dtype, count=n).reshape(shape).copy()
  count, pos = _read_varint(payload, 0)
  mask = bool(first & _MASK_FLAG)
  values_size = 0 if mask else count * dtype.itemsize
  positions_part, values = payload[pos:len(payload) - values_size], payload[len(payload) - values_size:]
  if method == 'bitmap':
    present = np.unpackbits(np.frombuffer(positions_part, np.uint8), count=n)
    positions = np.flatnonzero(present)
  elif method == 'indices':
    positions = np.frombuffer(positions_part, _index_width(n), count=count).astype(np.int64)
  else:
    positions = np.cumsum(_rice_decode(positions_part, count) + 1) - 1
  if mask:
    flat = np.zeros(n, bool)
    flat[positions] = True
    return flat.reshape(shape)
  flat = np.zeros(n, dtype)
  flat[positions] = np.frombuffer(values, dtype, count=count)
  return flat.reshape(shape)


def method_of(message: bytes) -> str:
  first = message[0]
  name = METHODS[first & 0x0F] + ('_zlib' if first & _ZLIB_FLAG else '')
  return name + (' (float16)' if first & _FLOAT16_FLAG else '') + (
      ' (mask)' if first & _MASK_FLAG else '')


def _tf_varint_bytes(value):
  value = tf.cast(value, tf.int64)
  groups = tf.constant(1, tf.int64)
  for shift in range(7, 63, 7):
    groups += tf.cast(value >= (1 << shift), tf.int64)
  return groups


def _tf_min_rice_bits(gaps, nnz):
  """min over k in [0, _MAX_RICE_K) of the Rice code length, by bisection.

  The length f(k) = sum(g >> k) + nnz * (1 + k) is convex in k: f(k+1) -
  f(k) = nnz - sum(ceil((g >> k) / 2)), and g >> k, hence its halved
  ceiling, does not grow with k. So bisecting on the sign of that
  difference finds the minimum the encoder's exhaustive search finds, with
  5 passes over the gaps instead of 32 (this runs for every client's tensors
  every round).
  """
  lo = tf.constant(0, tf.int64)
  hi = tf.constant(_MAX_RICE_K - 1, tf.int64)
  for _ in range((_MAX_RICE_K - 1).bit_length()):
    mid = (lo + hi) // 2
    shifted = tf.bitwise.right_shift(gaps, mid)
    rising = nnz >= tf.reduce_sum(shifted - tf.bitwise.right_shift(shifted, 1))
    lo, hi = tf.where(rising, lo, mid + 1), tf.where(rising, mid, hi)
  return tf.reduce_sum(tf.bitwise.right_shift(gaps, lo)) + nnz * (1 + lo)


def _tf_size(x: tf.Tensor, mask: bool) -> tf.Tensor:
  flat = tf.reshape(x, [-1])
  n = tf.size(flat, out_type=tf.int64)
  if mask:
    present = flat if flat.dtype == tf.bool else tf.not_equal(flat, 0)
  else:
    if x.dtype != tf.float32:
      raise ValueError(f'x.dtype must be float32, got {x.dtype.name}')
    present = tf.not_equal(tf.bitcast(flat, tf.int32), 0)
  nnz = tf.math.count_nonzero(present, dtype=tf.int64)
  # From the dynamic shape: `x` may be a boolean_mask result of unknown length.
  header = 3 + tf.reduce_sum(_tf_varint_bytes(tf.shape(x, out_type=tf.int64)))
  values = tf.zeros([], tf.int64) if mask else 4 * nnz
  sparse_header = _tf_varint_bytes(nnz)
  bitmap = sparse_header + (n + 7) // 8 + values
  width = tf.where(n - 1 <= 255, 1, tf.where(n - 1 <= 65535, 2, tf.where(n - 1 <= 2**32 - 1, 4, 8)))
  indices = sparse_header + tf.cast(width, tf.int64) * nnz + values
  positions = tf.where(present)[:, 0]
  gaps = positions - tf.concat([[-1], positions[:-1]], 0) - 1
  rice_bits = tf.where(nnz > 0, _tf_min_rice_bits(gaps, nnz), 0)
  golomb = sparse_header + 1 + (rice_bits + 7) // 8 + values
  if mask:  # A full mask is its header alone.
    # tf.equal: in the graphs TFF traces, == on tensors is object identity.
    candidates = [tf.where(tf.equal(nnz, n), tf.constant(0, tf.int64), bitmap), indices, golomb]
  else:
    candidates = [bitmap, indices, golomb, 4 * n]
  return header + tf.reduce_min(tf.stack(candidates))


def tf_encoded_size(x: tf.Tensor) -> tf.Tensor:
  """Bytes of `encode(x, methods=METHODS)`, in TensorFlow ops (int64 scalar).

  The same arithmetic as the encoder for its non-zlib methods, so it can run
  inside TFF computations (where the NumPy encoder cannot); zlib output
  cannot be predicted without running zlib. float32 tensors only.
  """
  return _tf_size(x, mask=False)


def tf_mask_size(mask: tf.Tensor) -> tf.Tensor:
  """Bytes of `encode_mask(mask, methods=METHODS)`, in TensorFlow ops."""
  return _tf_size(mask, mask=True)


def encoded_size(tensors: Iterable, **kwargs) -> int:
  """Total bytes of the encodings of `tensors`."""
  return sum(len(encode(t, **kwargs)) for t in tensors)


def bound_bytes(n, nnz):
  """4 * nnz + n * H(nnz / n) / 8: float32 values plus positions at the entropy.

  NumPy arrays of counts work element-wise; n = 0 gives 0.
  """
  n = np.asarray(n, np.float64)
  nnz = np.asarray(nnz, np.float64)
  d = np.divide(nnz, n, out=np.zeros_like(nnz * n), where=n > 0)
  with np.errstate(divide='ignore', invalid='ignore'):
    entropy = np.nan_to_num(-(d * np.log2(d) + (1 - d) * np.log2(1 - d)))
  return 4.0 * nnz + n * entropy / 8.0


def entropy_bound_bytes(tensors: Iterable) -> float:
  """`bound_bytes` of all tensors together (d = their fraction non-zero)."""
  tensors = [np.asarray(t) for t in tensors]
  return float(bound_bytes(sum(t.size for t in tensors),
                           sum(_nonzero(t).size for t in tensors)))


# Our quantizer ('sparse'): the non-zero values of a tensor as `bits`-bit
# levels between their minimum and maximum. Message: varint(count), bits,
# minimum and maximum as float32, then the levels packed `bits` bits each,
# most significant first.


def quantized_values_size(count: int, bits: int) -> int:
  """Bytes of `encode_quantized` of `count` values at `bits` bits."""
  return len(_varint(count)) + 1 + 8 + math.ceil(count * bits / 8)


def tf_quantized_values_size(count: tf.Tensor, bits: int) -> tf.Tensor:
  """`quantized_values_size` in TensorFlow ops (int64 scalar)."""
  count = tf.cast(count, tf.int64)
  return _tf_varint_bytes(count) + 9 + (count * bits + 7) // 8


def tf_quantize(values: tf.Tensor, bits: int, seed=None):
  """Uniform `bits`-bit quantization of a float32 vector.

  Levels are (v - min) / scale rounded, scale = (max - min) / (2**bits - 1):
  to the nearest (ties to even) without `seed`; stochastically (unbiased,
  as TFF's quantizer) with a `tf.random.stateless_uniform` seed (shape [2]).

  Returns:
    (levels as int32, minimum, maximum, dequantized values), the last
    computed as `decode_quantized` computes them, bit for bit.
  """
  values = tf.convert_to_tensor(values, tf.float32)
  nonempty = tf.size(values) > 0
  lo = tf.where(nonempty, tf.reduce_min(values), 0.0)
  hi = tf.where(nonempty, tf.reduce_max(values), 0.0)
  top = float(2**bits - 1)
  scale = (hi - lo) / top
  scaled = (values - lo) / tf.where(scale > 0, scale, 1.0)
  if seed is None:
    rounded = tf.round(scaled)
  else:
    rounded = tf.floor(scaled + tf.random.stateless_uniform(tf.shape(values), seed))
  levels = tf.cast(tf.clip_by_value(rounded, 0.0, top), tf.int32)
  return levels, lo, hi, lo + tf.cast(levels, tf.float32) * scale


def tf_quantize_at(t: tf.Tensor, positions: tf.Tensor, bits: int, seed=None) -> tf.Tensor:
  """`t` with its values at `positions` (bool) replaced by their `tf_quantize`d values."""
  _, _, _, dequantized = tf_quantize(tf.boolean_mask(t, positions), bits, seed)
  return tf.tensor_scatter_nd_update(t, tf.where(positions), dequantized)


def quantize(values, bits: int):
  """NumPy `tf_quantize` without a seed: (levels, minimum, maximum)."""
  values = np.asarray(values, np.float32).reshape(-1)
  if values.size == 0:
    return np.zeros(0, np.int32), np.float32(0), np.float32(0)
  lo, hi = values.min(), values.max()
  top = np.float32(2**bits - 1)
  scale = (hi - lo) / top
  scaled = (values - lo) / (scale if scale > 0 else np.float32(1))
  return np.clip(np.round(scaled), 0, top).astype(np.int32), lo, hi


def encode_quantized(levels, lo, hi, bits: int) -> bytes:
  """The message of quantized values (`tf_quantize`'s levels, min and max)."""
  if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or (
      bits not in configs.QUANTIZATION_BITS):
    raise ValueError(f'bits must be in [1, 16], got {bits!r}')
  levels = np.asarray(levels, np.int64).reshape(-1)
  if levels.size and (levels.min() < 0 or levels.max() >= 2**bits):
    raise ValueError(f'levels must be in [0, {2**bits - 1}] for bits={bits}')
  shifts = np.arange(bits - 1, -1, -1)
  packed = np.packbits(((levels[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1))
  return (_varint(levels.size) + bytes([bits]) +
          np.array([lo, hi], np.float32).tobytes() + packed.tobytes())


def decode_quantized(message: bytes) -> np.ndarray:
  """Inverse of `encode_quantized`: the dequantized float32 values."""
  count, pos = _read_varint(message, 0)
  bits = message[pos]
  lo, hi = np.frombuffer(message, np.float32, count=2, offset=pos + 1)
  fields = np.unpackbits(np.frombuffer(message, np.uint8, offset=pos + 9),
                         count=count * bits).reshape(count, bits).astype(np.int64)
  levels = fields @ (1 << np.arange(bits - 1, -1, -1))
  scale = (hi - lo) / np.float32(2**bits - 1)
  return lo + levels.astype(np.float32) * scale
