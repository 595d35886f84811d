"""Finding image files and decoding any PIL-readable image to 8-bit 'L' or 'RGB', skipping unreadable ones."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps

from transgan.errors import TransganError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Modes whose natural channel count is 1 (everything else decodes to RGB).
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S"})
ALPHA_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})
# What Pillow raises for truncated or corrupt data (it is not consistent about it).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, struct.error, zlib.error)

T = TypeVar("T")


class UnreadableImage(TransganError):
    """A file that exists but does not decode as an image (truncated, corrupt, not an image)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: unreadable image ({reason}); replace or delete the file")
        self.path = path
        self.reason = reason


class BadImageWarning(UserWarning):
    """Emitted once per unreadable file that a dataset skipped."""


def is_image_file(name: str) -> bool:
    """True when the file name has one of IMAGE_EXTENSIONS (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str | Path) -> list[Path]:
    """All image files under folder (recursive, hidden files skipped), sorted by path like the reference does."""
    folder = Path(folder)
    if not folder.exists():
        raise TransganError(f"{folder}: folder not found; check the path")
    if not folder.is_dir():
        raise TransganError(f"{folder}: is a file, expected a folder of images")
    found = []
    # os.walk with followlinks: datasets are often assembled from symlinked folders.
    for parent, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        # Hidden files include macOS '._x.png' resource forks, which are not images.
        found += [Path(parent) / f for f in files if is_image_file(f) and not f.startswith(".")]
    if not found:
        looked = ", ".join(IMAGE_EXTENSIONS)
        raise TransganError(f"{folder}/: no images found (looked for {looked})")
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def natural_channels(mode: str) -> int:
    """1 for grayscale-like PIL modes, 3 for everything else (palette, CMYK, RGB, ...)."""
    return 1 if mode in GRAY_MODES else 3


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float image to 8 bits (PIL's own convert clips instead of scaling)."""
    values = np.asarray(img).astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode.startswith("I;16"):
        values = values * (255.0 / 65535.0)
    elif img.mode == "I" and low >= 0 and high > 255 and high <= 65535:
        values = values * (255.0 / 65535.0)  # 16-bit data stored as 32-bit (older PNG/TIFF readers do this)
    elif img.mode == "F" and low >= 0 and high <= 1:
        values = values * 255.0  # float images are usually in [0, 1]
    elif (low < 0 or high > 255) and high > low:
        values = (values - low) / (high - low) * 255.0  # unknown range: stretch rather than clip
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))  # 2-D uint8 -> "L"


def _over_white(img: Image.Image) -> Image.Image:
    """Composite an image with transparency over white: transparent pixels must not turn black."""
    if img.mode == "La":
        img = img.convert("LA")
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def check_channels(channels: int) -> int:
    """channels itself when it is 1 or 3, else a clear error."""
    if channels not in (1, 3):
        raise TransganError(f"channels={channels}: must be 1 (grayscale) or 3 (RGB)")
    return channels


def convert_image(img: Image.Image, channels: int | None = None) -> Image.Image:
    """Convert any PIL mode to 'L' (channels=1) or 'RGB' (channels=3); None keeps the image's natural count."""
    if channels is not None:
        check_channels(channels)
    natural = natural_channels(img.mode)
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        img = _high_depth_to_l(img)
    elif mode == "1":
        img = img.convert("L")
    elif mode in ALPHA_MODES or (mode in ("L", "RGB", "P") and "transparency" in img.info):
        img = _over_white(img)
    elif mode not in ("L", "RGB"):
        img = img.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX
    target = "L" if (channels or natural) == 1 else "RGB"
    return img if img.mode == target else img.convert(target)


def _decode(source: str | Path | io.BytesIO, name: str, channels: int | None) -> Image.Image:
    try:
        with Image.open(source) as img:
            img.load()  # Image.open only reads the header; decode everything now so truncation shows here
            try:
                img = ImageOps.exif_transpose(img)
            except DECODE_ERRORS + (KeyError,):
                img = img.copy()  # a malformed EXIF block should not cost the pixels
        # Inside the try: a mode Pillow cannot convert makes the file as unusable as a corrupt one.
        return convert_image(img, channels)
    except Image.DecompressionBombError as error:
        raise UnreadableImage(name, str(error)) from error
    except DECODE_ERRORS as error:
        raise UnreadableImage(name, str(error) or type(error).__name__) from error


def load_image(path: str | Path, channels: int | None = 3) -> Image.Image:
    """Decode an image file fully, apply its EXIF orientation and convert it to 'L' or 'RGB'.

    Raises UnreadableImage for truncated or corrupt files.
    """
    return _decode(path, str(path), channels)


def decode_image(data: bytes, name: str, channels: int | None = 3) -> Image.Image:
    """load_image for bytes already in memory (zip members); name is used in error messages."""
    return _decode(io.BytesIO(data), name, channels)


def peek_channels(source: str | Path | io.BytesIO) -> int | None:
    """Natural channel count from the header only (cheap); None when the header does not parse."""
    try:
        with Image.open(source) as img:
            return natural_channels(img.mode)
    except DECODE_ERRORS:
        return None


class SkipBadImages:
    """Stand in for unreadable samples so training goes on: warn once per file, use the next readable index.

    The replacement depends only on the index and on which files are unreadable, so it is deterministic.
    Each worker process keeps its own record, so a file may be reported once per worker.
    """

    def __init__(self, count: int, what: str):
        self.count = count
        self.what = what
        self.bad_indices: set[int] = set()
        self.warned: set[str] = set()

    def __call__(self, index: int, read: Callable[[int], T]) -> T:
        """read(index), or read of the next index that decodes when index's file is unreadable."""
        for step in range(self.count):
            candidate = (index + step) % self.count
            if candidate in self.bad_indices:
                continue
            try:
                return read(candidate)
            except UnreadableImage as error:
                self.bad_indices.add(candidate)
                if error.path not in self.warned:
                    self.warned.add(error.path)
                    warnings.warn(f"skipping unreadable image {error.path}: {error.reason}", BadImageWarning, 2)
        raise TransganError(f"{self.what}: none of its {self.count} images could be read; check the files")
