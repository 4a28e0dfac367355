"""`python -m binaries.benchmark_inference`: Times ONNX models on DeepSparse, ONNX Runtime and TensorFlow, side by side.

The binary is `tff_sparsify.binaries.benchmark_inference` (installed as a package module, so
that its console script works from any directory); this file runs it from a
checkout. Flags: `python -m binaries.benchmark_inference --help`.
"""

from tff_sparsify.binaries.benchmark_inference import run

if __name__ == '__main__':
  run()
