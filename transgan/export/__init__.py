"""ONNX export: graph export, fp16 conversion that keeps precision-sensitive ops in fp32, parity checks."""
