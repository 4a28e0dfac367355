"""One module per algorithm: its registry entry and its rules (`base.Rules`).

Pure Python at import (TensorFlow loads when a process is built). The order
of `learning.registry.MODULES` is the order of `--algorithm`'s values.
"""
