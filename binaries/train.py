"""`python -m binaries.train`: Federated training of the paper's models on TFF.

The binary is `tff_sparsify.binaries.train` (installed as a package module, so
that its console script works from any directory); this file runs it from a
checkout. Flags: `python -m binaries.train --help`.
"""

from tff_sparsify.binaries.train import run

if __name__ == '__main__':
  run()
