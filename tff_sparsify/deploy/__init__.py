"""Shipping a trained model: export (SavedModel, ONNX) and the inference runtimes that time it."""
