"""Thin launchers of the binaries in `tff_sparsify.binaries`, for `python -m binaries.X` in a checkout."""
