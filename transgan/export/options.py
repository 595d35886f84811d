"""Export options checked once, shared by every command that takes them (no onnx import: the CLI checks first)."""

from __future__ import annotations

import math

from transgan.errors import TransganError

DEFAULT_MIN_PSNR = 35.0


def check_min_psnr(value: float | None) -> float:
    """The int8 PSNR bound in dB: None -> DEFAULT_MIN_PSNR; zero, negative or not a number -> one error line."""
    if value is None:
        return DEFAULT_MIN_PSNR
    if not math.isfinite(value) or value <= 0:
        raise TransganError(f"--min-psnr {value:g}: give a positive number of dB, like {DEFAULT_MIN_PSNR:g}")
    return float(value)
