"""`python -m binaries.export`: Exports a training run's final model to SavedModel and ONNX, with checks.

The binary is `tff_sparsify.binaries.export` (installed as a package module, so
that its console script works from any directory); this file runs it from a
checkout. Flags: `python -m binaries.export --help`.
"""

from tff_sparsify.binaries.export import run

if __name__ == '__main__':
  run()
