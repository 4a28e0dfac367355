"""tff_sparsify: federated progressive sparsification on TensorFlow Federated.

Importing the package imports no TensorFlow: `config`, `validation`,
`learning.configs`, `learning.registry`, `simulation.run_record`, `files` and
`signals` are pure Python, so binaries check their flags before the 15 s of
TensorFlow/TFF imports. Every module that uses TensorFlow imports `_compat`
first, which applies the TF 2.14 fix.
"""

__version__ = '0.1.0'
