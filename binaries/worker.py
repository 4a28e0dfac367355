"""`python -m binaries.worker`: A TFF worker for remote coordinators, behind mutual TLS.

The binary is `tff_sparsify.binaries.worker` (installed as a package module, so
that its console script works from any directory); this file runs it from a
checkout. Flags: `python -m binaries.worker --help`.
"""

from tff_sparsify.binaries.worker import run

if __name__ == '__main__':
  run()
