"""tff_sparsify: federated progressive sparsification on TensorFlow Federated."""

from tff_sparsify import _compat

_compat.apply()

__version__ = '0.1.0'
