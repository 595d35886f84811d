"""The one definition of an image: which files in a folder are images and how any of them decodes to 'L' or 'RGB'."""

from __future__ import annotations

import errno
import io
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from transgan.errors import TransganError

# .png and .jpg first: error messages list them in this order.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

# Modes whose natural channel count is 1 (everything else decodes to RGB).
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N", "I;16S"})
ALPHA_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})
# What Pillow raises for truncated or corrupt data (it is not consistent about it).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, struct.error, zlib.error)


class UnreadableImage(TransganError):
    """A file listed as an image that does not decode (truncated, corrupt, not an image, missing, no permission)."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read image {path} ({reason}); replace or delete the file")
        self.path = path
        self.reason = reason


class BadImageWarning(UserWarning):
    """An image-named entry that was left out: an unreadable file a dataset skipped, or a broken link."""


# ---------------------------------------------------------------------------------------------- listing
def is_image_file(name: str) -> bool:
    """True when the file name has one of IMAGE_EXTENSIONS (any case)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class ImageListing:
    """What a folder holds: its images in a stable order, and the image-named entries that cannot be opened."""

    folder: Path
    files: list[Path]  # folder / relative path, sorted by the relative path as text
    problems: list[tuple[Path, str]]  # (path, reason): dangling or looping links, folders that cannot be listed


def check_folder(folder: str | Path) -> Path:
    """folder as a Path when it is an existing directory, else one clear error."""
    folder = Path(folder)
    if not folder.exists():
        raise TransganError(f"folder {folder} does not exist; check the path")
    if not folder.is_dir():
        raise TransganError(f"{folder}: is a file, expected a folder of images")
    return folder


def scan_images(folder: str | Path) -> ImageListing:
    """Every image under folder, recursively, with what could not be opened; an empty result is not an error.

    Names starting with '.' are skipped (hidden files and folders, macOS '._x.png' forks). Symlinked folders
    are followed, since data sets are often assembled from them; a link back to a folder being walked is not
    followed again. A dangling or looping link named like an image is a problem, reported rather than dropped.
    """
    folder = check_folder(folder)
    files: list[tuple[str, Path]] = []
    problems: list[tuple[Path, str]] = []
    _walk(folder, "", {_identity(folder)}, files, problems)
    files.sort(key=lambda item: item[0])  # by relative path as text, as the reference sorts its file list
    problems.sort(key=lambda item: item[0].as_posix())
    return ImageListing(folder, [path for _, path in files], problems)


def _identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _walk(
    folder: Path, prefix: str, walking: set[tuple[int, int]], files: list[tuple[str, Path]], problems: list
) -> None:
    try:
        with os.scandir(folder) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        problems.append((folder, f"cannot list the folder ({error.strerror or error})"))
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path, relative = folder / entry.name, prefix + entry.name
        if _is_dir(entry):
            identity = _identity(path)
            if identity in walking:
                continue  # a link back to a folder being walked: its images are listed once already
            _walk(path, relative + "/", walking | {identity}, files, problems)
        elif is_image_file(entry.name):
            if _is_file(entry):
                files.append((relative, path))
            elif entry.is_symlink():
                problems.append((path, _broken_link_reason(path)))


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()  # follows symlinks
    except OSError:
        return False


def _broken_link_reason(path: Path) -> str:
    target = os.readlink(path)
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"symbolic link loop through {target}"
        return f"broken symbolic link: {target} does not exist"
    return f"symbolic link to {target}, which is not a file"


def no_images_error(listing: ImageListing) -> TransganError:
    """The one error for a folder without a readable image, naming the first problem if there is one."""
    message = f"{listing.folder}/: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})"
    if listing.problems:
        path, reason = listing.problems[0]
        message += f"; {len(listing.problems)} could not be opened, e.g. {path}: {reason}"
    return TransganError(message)


def list_images(folder: str | Path) -> list[Path]:
    """All image files under folder (see scan_images); problems are warned about, no image at all is an error."""
    listing = scan_images(folder)
    for path, reason in listing.problems:
        warnings.warn(f"skipping {path}: {reason}", BadImageWarning, stacklevel=2)
    if not listing.files:
        raise no_images_error(listing)
    return listing.files


# ---------------------------------------------------------------------------------------------- decoding
def natural_channels(mode: str) -> int:
    """1 for grayscale-like PIL modes, 3 for everything else (palette, CMYK, RGB, ...)."""
    return 1 if mode in GRAY_MODES else 3


def check_channels(channels: int) -> int:
    """channels itself when it is 1 or 3, else a clear error."""
    if channels not in (1, 3):
        raise TransganError(f"channels={channels}: must be 1 (grayscale) or 3 (RGB)")
    return channels


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float image to 8 bits (PIL's own convert clips instead of scaling)."""
    values = np.asarray(img).astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode.startswith("I;16"):
        values = values * (255.0 / 65535.0)
    elif img.mode == "I" and low >= 0 and high > 255 and high <= 65535:
        values = values * (255.0 / 65535.0)  # 16-bit data stored as 32-bit (Pillow opens 16-bit PNGs so)
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


def convert_image(img: Image.Image, channels: int | None = None) -> Image.Image:
    """Convert any PIL mode to 'L' (channels=1) or 'RGB' (channels=3); None keeps the image's natural count.

    16/32-bit and float images are scaled to 8 bits, not clipped; transparency (alpha channel, palette or
    colour-key transparency) is composited over white; palette, CMYK, YCbCr and other modes convert to RGB.
    """
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
        with Image.open(source) as img:  # an animated GIF, PNG or WebP opens at its first frame
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
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise UnreadableImage(name, reason or type(error).__name__) from error


def load_image(path: str | Path, channels: int | None = 3) -> Image.Image:
    """Decode an image file fully, apply its EXIF orientation and convert it to 'L' or 'RGB' (see convert_image).

    Raises UnreadableImage, naming the file, for anything that does not decode.
    """
    return _decode(path, str(path), channels)


def decode_image(data: bytes, name: str, channels: int | None = 3) -> Image.Image:
    """load_image for bytes already in memory (zip members); name is used in error messages."""
    return _decode(io.BytesIO(data), name, channels)


def read_pixels(path: str | Path, channels: int = 3) -> np.ndarray:
    """load_image as a writable uint8 array of shape (H, W, channels)."""
    pixels = np.array(load_image(path, channels), dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def peek_channels(source: str | Path | io.BytesIO) -> int | None:
    """Natural channel count from the header only (cheap); None when the header does not parse."""
    try:
        with Image.open(source) as img:
            return natural_channels(img.mode)
    except DECODE_ERRORS:
        return None
