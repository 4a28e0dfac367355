"""The absl binaries: train, export, benchmark_inference, worker (flags live only here).

Run as `python -m binaries.X` from a checkout, `python -m tff_sparsify.binaries.X`,
or the console scripts `tff-sparsify-train` and `tff-sparsify-worker`.
"""
