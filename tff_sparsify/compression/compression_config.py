"""What is done to the messages: message pruning (arXiv 2310.14693) and quantization.

Pure Python, no TensorFlow: checked when made, before TensorFlow loads.
"""

import dataclasses

from tff_sparsify import validation

QUANTIZERS = ('tff', 'sparse')
MESSAGE_PRUNE_TARGETS = ('model', 'delta')
QUANTIZATION_BITS = range(1, 17)  # What tff.aggregators' uniform quantization accepts.
QUANTIZATION_THRESHOLD = 20000  # TFF's default: larger tensors are quantized.


@dataclasses.dataclass(frozen=True)
class CompressionConfig:
  """What is done to the messages (no persistent mask).

  Attributes:
    client_message_prune_rate: fraction of the uploaded weights, smallest by
      magnitude over all trainable tensors, zeroed before sending, in [0, 1).
    server_message_prune_rate: the same for the model the server broadcasts.
    quantize_bits: 0 (off) or the bits per value, in [1, 16], of the
      quantization of tensors with more than `quantize_threshold` elements.
    quantize_threshold: see `quantize_bits` (TFF's default, 20000).
    quantizer: 'tff' (TFF's quantizing aggregator: the uploaded deltas,
      every element) or 'sparse' (ours: the non-zero values only, of the
      uploads and of the broadcast).
    message_prune_target: what `client_message_prune_rate` prunes: 'model'
      (the paper's, 2310.14693: the smallest weights of the trained model,
      in the client work) or 'delta' (the smallest entries of the update,
      top-k, in the aggregator: `compression.aggregators.SparseDeltaMeanFactory`,
      which then also quantizes the upload with the sparse quantizer and
      counts its bytes).
  """
  client_message_prune_rate: float = 0.0
  server_message_prune_rate: float = 0.0
  quantize_bits: int = 0
  quantize_threshold: int = QUANTIZATION_THRESHOLD
  quantizer: str = 'tff'
  message_prune_target: str = 'model'

  def __post_init__(self):
    validation.check_fraction('client_message_prune_rate', self.client_message_prune_rate)
    validation.check_fraction('server_message_prune_rate', self.server_message_prune_rate)
    if not validation.is_int(self.quantize_bits) or (
        self.quantize_bits != 0 and self.quantize_bits not in QUANTIZATION_BITS):
      raise validation.ConfigError(
          'quantize_bits', self.quantize_bits,
          "must be 0 (off) or in [1, 16], what TFF's uniform quantization supports")
    if not validation.is_int(self.quantize_threshold) or self.quantize_threshold < 0:
      raise validation.ConfigError('quantize_threshold', self.quantize_threshold,
                                   'must be >= 0')
    validation.check_choice('quantizer', self.quantizer, QUANTIZERS)
    validation.check_choice('message_prune_target', self.message_prune_target,
                            MESSAGE_PRUNE_TARGETS)
    if self.message_prune_target == 'delta':
      if not self.client_message_prune_rate:
        raise validation.ConfigError('message_prune_target', 'delta',
                                     'needs client_message_prune_rate > 0')
      if self.tff_bits:
        raise validation.ConfigError(
            'message_prune_target', 'delta',
            'quantizes what it keeps with quantizer=sparse; with quantizer=tff '
            'TFF\'s quantizing mean would be a second upload aggregator')

  @property
  def enabled(self) -> bool:
    return bool(self.client_message_prune_rate or self.server_message_prune_rate
                or self.quantize_bits)

  @property
  def sparse_bits(self) -> int:
    """Bits of our quantizer, 0 when it is off."""
    return self.quantize_bits if self.quantizer == 'sparse' else 0

  @property
  def tff_bits(self) -> int:
    """Bits of TFF's quantizing aggregator, 0 when it is off."""
    return self.quantize_bits if self.quantizer == 'tff' else 0

  @property
  def delta_aggregator(self) -> bool:
    """The upload is pruned, quantized and counted by `SparseDeltaMeanFactory`."""
    return self.message_prune_target == 'delta'

  @property
  def aggregator_encodes_upload(self) -> bool:
    """An aggregator (TFF's quantizing mean or ours over deltas) encodes and counts the upload."""
    return bool(self.tff_bits) or self.delta_aggregator
