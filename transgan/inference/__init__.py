"""Inference engines (torch, ONNX Runtime) behind one interface, and the batch folder pipeline."""
