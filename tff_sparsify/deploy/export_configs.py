"""The options of an export and of a timing, each checked once, where it is made.

Pure Python (no TensorFlow), like `config.TrainConfig` and
`learning.configs`: field names are the flags of `binaries/export.py` and
`binaries/benchmark_inference.py`, so a `ConfigError` names the flag, and
the library (`export.export_model`, `inference.benchmark`,
`inference.time_in_turn`) takes these objects instead of checking its
keywords again.
"""

import dataclasses
from typing import Optional

from tff_sparsify import validation
from tff_sparsify.validation import ConfigError
from tff_sparsify.validation import option

FORMATS = ('onnx', 'tflite')
# The paper's inference batch sizes (Stripelis et al., Section 4).
DEFAULT_BATCH_SIZES = {'cifar10': 128, 'fashion_mnist': 32}


def default_batch_size(input_shape: tuple) -> int:
  """The paper's batch size: 32 for 28x28 inputs (FashionMNIST), 128 otherwise (CIFAR-10)."""
  return DEFAULT_BATCH_SIZES['fashion_mnist' if tuple(input_shape)[:2] == (28, 28)
                             else 'cifar10']
# tf2onnx 1.17 writes opsets 9 to 18.
OPSETS = (9, 18)
MAX_INT8_ACCURACY_DROP = 0.01


DEFAULT_OPSET = 13  # ONNX opset of exports (tf2onnx)

@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """What an export writes and how it is checked.

  Attributes:
    formats: among `FORMATS`; 'onnx' is always written (the checked
      reference, what `binaries/benchmark_inference` times from); 'tflite'
      adds `model.tflite`.
    opset: the ONNX opset tf2onnx targets.
    inputs_as_nchw: an image model's ONNX input becomes channels-first.
    compact: export the physically smaller model of a channel-pruned one.
    int8: also write the INT8 model of each format, calibrated on
      `calibration_examples` training examples.
    calibration_examples: how many (drawn with the run's seed).
    max_int8_accuracy_drop: how far (a fraction) below the float model's
      test accuracy an INT8 model may fall; None: not checked (random-init
      models, timed only).
    tflite_batch_size: the fixed batch of the TFLite files (XNNPACK runs
      only static shapes; `deploy/tflite.py`); None: the batch the
      inference tables time for the input shape (`default_batch_size`).
  """
  formats: tuple = option(
      ('onnx',), 'Formats to write, among onnx,tflite; onnx is always written '
      '(binaries/benchmark_inference times from it).')
  opset: int = option(DEFAULT_OPSET, 'ONNX opset.')
  inputs_as_nchw: bool = option(
      False, 'Image models: channels-first ONNX input (no input transpose in the graph; feed '
      'NCHW batches). Recorded in the ONNX metadata, which binaries/benchmark_inference reads.')
  compact: bool = option(
      False, 'Export the physically smaller model of a channel-pruned run '
      '(--sparsity_granularity=channel): pruned filters and units removed, checked against '
      'the masked model to 1e-5.')
  int8: bool = option(
      False, "Also write the INT8 model of each format (ONNX: ONNX Runtime's static QDQ; "
      "TFLite: full-integer), calibrated on training examples of the run's dataset, and check "
      'its test accuracy.')
  calibration_examples: int = option(
      256, "With --int8: training examples drawn (with the run's seed) to calibrate the INT8 "
      'models.')
  max_int8_accuracy_drop: Optional[float] = option(
      MAX_INT8_ACCURACY_DROP, "With --int8: how far (a fraction, 0.01 = 1 point) an INT8 "
      "model's test accuracy may fall below the Keras model's.")
  tflite_batch_size: Optional[int] = option(
      None, "With --formats=...,tflite: the fixed batch of the .tflite files (TFLite's XNNPACK "
      'runs only static shapes); default: the batch benchmark_inference times, 32 for 28x28 '
      'inputs, 128 otherwise.')

  def __post_init__(self):
    if isinstance(self.formats, str):  # 'onnx,tflite', as the flag takes it.
      object.__setattr__(self, 'formats', tuple(self.formats.split(',')))
    object.__setattr__(self, 'formats', tuple(self.formats))
    if not set(self.formats) <= set(FORMATS) or 'onnx' not in self.formats:
      raise ConfigError('formats', list(self.formats),
                        f'must list formats among {",".join(FORMATS)} and include onnx '
                        '(binaries/benchmark_inference times from it)')
    if not validation.is_int(self.opset) or not OPSETS[0] <= self.opset <= OPSETS[1]:
      raise ConfigError('opset', self.opset,
                        f'must be in [{OPSETS[0]}, {OPSETS[1]}], the opsets tf2onnx 1.17 writes')
    for field in ('inputs_as_nchw', 'compact', 'int8'):
      if not isinstance(getattr(self, field), bool):
        raise ConfigError(field, getattr(self, field), 'must be True or False')
    if not validation.is_int(self.calibration_examples) or self.calibration_examples < 1:
      raise ConfigError('calibration_examples', self.calibration_examples, 'must be >= 1')
    drop = self.max_int8_accuracy_drop
    if drop is not None and not (validation.is_number(drop) and 0 <= drop <= 1):
      raise ConfigError('max_int8_accuracy_drop', drop, 'must be in [0, 1] (or None: not checked)')
    if self.tflite_batch_size is not None and (not validation.is_int(self.tflite_batch_size)
                                               or self.tflite_batch_size < 1):
      raise ConfigError('tflite_batch_size', self.tflite_batch_size, 'must be >= 1')


@dataclasses.dataclass(frozen=True)
class TimingConfig:
  """How exported models are timed (the paper's method: a budget after a warm-up).

  Attributes:
    batch_size: rows per timed batch; None: the paper's for the input shape
      (`inference.default_batch_size`).
    budget_seconds: timed seconds per model, runtime and repeat.
    warmup_seconds: untimed seconds before the first repeat.
    repeats: how many times every case is timed, in turn.
    num_threads: threads per runtime; None: all cores.
  """
  batch_size: Optional[int] = option(None, "Batch size (default: the paper's).")
  budget_seconds: float = option(60.0, 'Timed seconds per model, runtime and repeat.')
  warmup_seconds: float = option(10.0, 'Untimed warm-up seconds (before the first repeat).')
  repeats: int = option(
      1, 'Times each model and runtime is timed, in turn; the median is reported.')
  num_threads: Optional[int] = option(None, 'Threads (default: all cores).')

  def __post_init__(self):
    if self.batch_size is not None and (not validation.is_int(self.batch_size)
                                        or self.batch_size < 1):
      raise ConfigError('batch_size', self.batch_size, 'must be >= 1')
    if not validation.is_number(self.budget_seconds) or not self.budget_seconds > 0:
      raise ConfigError('budget_seconds', self.budget_seconds, 'must be > 0')
    if not validation.is_number(self.warmup_seconds) or not self.warmup_seconds >= 0:
      raise ConfigError('warmup_seconds', self.warmup_seconds, 'must be >= 0')
    if not validation.is_int(self.repeats) or self.repeats < 1:
      raise ConfigError('repeats', self.repeats, 'must be >= 1')
    if self.num_threads is not None and (not validation.is_int(self.num_threads)
                                         or self.num_threads < 1):
      raise ConfigError('num_threads', self.num_threads, 'must be >= 1')
