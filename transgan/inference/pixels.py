"""Pixel arrays to network inputs and back, and padding to a network's size multiple (folders and video alike)."""

from __future__ import annotations

import numpy as np


def pad_to_multiple(pixels: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad bottom and right up to the network's size multiple (edge-pad where reflect cannot)."""
    height, width = pixels.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return pixels
    mode = "reflect" if pad_h < height and pad_w < width else "edge"
    return np.pad(pixels, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)


def to_network(batch: np.ndarray, mean: float, std: float) -> np.ndarray:
    """N x H x W x C uint8 -> N x C x H x W float32 scaled like the training data."""
    scaled = batch.astype(np.float32) * np.float32(1 / 255)
    return np.ascontiguousarray(((scaled - mean) / std).transpose(0, 3, 1, 2))


def from_network(output: np.ndarray, mean: float, std: float) -> np.ndarray:
    """N x C x H x W float in network range -> N x H x W x C uint8."""
    pixels = (output * std + mean) * 255 + 0.5
    return np.clip(pixels, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
