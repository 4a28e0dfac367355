"""`python -m binaries.data`: writes federated data for `--client_data`.

The binary is `tff_sparsify.binaries.data` (installed as a package module, so
that its console script works from any directory); this file runs it from a
checkout. Flags: `python -m binaries.data --help`.
"""

from tff_sparsify.binaries.data import run

if __name__ == '__main__':
  run()
