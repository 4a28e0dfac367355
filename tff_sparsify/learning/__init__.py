"""TFF learning processes: client work, aggregators, finalizers, one builder per algorithm, the registry.

Importing the package imports no TensorFlow (`configs` and `registry` are pure Python).
"""
