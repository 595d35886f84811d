"""Preprocessing with the reference pix2pix/CycleGAN semantics, driven by an explicit random.Random."""

from __future__ import annotations

import operator
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from transgan.errors import TransganError
from transgan.images import convert_image

PREPROCESS_MODES = ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none")
BICUBIC = Image.Resampling.BICUBIC


@dataclass(frozen=True)
class CropFlip:
    """The random part of one preprocessing call; shared by A and B of a pair so they stay aligned."""

    x: int
    y: int
    flip: bool


@dataclass(frozen=True)
class Preprocess:
    """How images are resized, cropped and flipped (the reference's --preprocess, --load_size, --crop_size)."""

    mode: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True

    def __post_init__(self):
        if self.mode not in PREPROCESS_MODES:
            raise TransganError(f"preprocess mode {self.mode!r}: unknown; use one of {', '.join(PREPROCESS_MODES)}")
        if self.load_size < 1 or self.crop_size < 1:
            raise TransganError(f"load_size={self.load_size}, crop_size={self.crop_size}: sizes must be positive")
        if self.mode in ("resize_and_crop", "scale_width_and_crop") and self.crop_size > self.load_size:
            raise TransganError(
                f"crop_size={self.crop_size} is larger than load_size={self.load_size}; "
                f"with preprocess {self.mode!r} it must be at most load_size"
            )

    def resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) after the resize step, before cropping."""
        w, h = size
        if self.mode == "resize_and_crop":
            return self.load_size, self.load_size
        if self.mode.startswith("scale_width"):
            if w == self.load_size and h >= self.crop_size:
                return w, h
            return self.load_size, int(max(self.load_size * h / w, self.crop_size))
        if self.mode == "none":
            # The reference rounds to a multiple of 4 so U-Net/ResNet down- and up-sampling line up.
            return max(4, round(w / 4) * 4), max(4, round(h / 4) * 4)
        return w, h

    def get_params(self, size: tuple[int, int], rng: random.Random) -> CropFlip:
        """Draw the crop position and flip for an image of this (width, height), in the reference's order."""
        new_w, new_h = self.resized_size(size)
        x = rng.randint(0, max(0, new_w - self.crop_size))
        y = rng.randint(0, max(0, new_h - self.crop_size))
        return CropFlip(x, y, rng.random() > 0.5)

    def apply(self, img: Image.Image, params: CropFlip) -> Image.Image:
        """Resize, crop and flip one PIL image with already drawn params."""
        new_size = self.resized_size(img.size)
        if new_size != img.size:
            img = img.resize(new_size, BICUBIC)
        if "crop" in self.mode:
            w, h, size = img.width, img.height, self.crop_size
            # Like the reference: an image no bigger than the crop in both sides is left as it is.
            if w > size or h > size:
                img = img.crop((params.x, params.y, params.x + size, params.y + size))
        if self.flip and params.flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        """Draw params from rng and apply them (for an unpaired image)."""
        return self.apply(img, self.get_params(img.size, rng))

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) of the result for an input of this size."""
        w, h = self.resized_size(size)
        if "crop" in self.mode and (w > self.crop_size or h > self.crop_size):
            return self.crop_size, self.crop_size
        return w, h


def split_key(key: tuple[int, int] | int) -> tuple[int, int]:
    """A dataset key -> (index, seed); a plain int index is its own seed."""
    if isinstance(key, (tuple, list)):
        if len(key) != 2:
            raise TypeError(f"dataset key must be an index or an (index, seed) pair, got {key!r}")
        return operator.index(key[0]), operator.index(key[1])
    index = operator.index(key)
    return index, index


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL 'L' or 'RGB' image -> float32 (C, H, W) tensor in [-1, 1] (other modes are converted first)."""
    if img.mode not in ("L", "RGB"):
        img = convert_image(img)
    array = np.array(img, dtype=np.uint8)  # a writable copy: torch warns about read-only buffers
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    # Same arithmetic as torchvision ToTensor + Normalize(0.5, 0.5), so values match the reference bit for bit.
    return torch.from_numpy(np.ascontiguousarray(array)).float().div(255).sub(0.5).div(0.5)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """(C, H, W) tensor in [-1, 1] with C = 1 or 3 -> 8-bit PIL image, rounded (the reference truncates)."""
    if tensor.dim() == 4 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 3 or tensor.shape[0] not in (1, 3):
        raise ValueError(f"expected a (C, H, W) tensor with C = 1 or 3, got shape {tuple(tensor.shape)}")
    array = ((tensor.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    # fromarray picks 'L' for (H, W) and 'RGB' for (H, W, 3) uint8 arrays.
    return Image.fromarray(array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0)))
