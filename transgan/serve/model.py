"""The served model: request images and parameters in, engine batches, encoded images out; limits checked here."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from transgan.errors import TransganError
from transgan.images import UnreadableImage, decode_image
from transgan.inference.engines import Engine
from transgan.inference.pipeline import from_network, pad_to_multiple, to_network

# name -> (PIL format, media type, save options). PNG level 3: twice as fast as 6 for ~5% larger files.
FORMATS = {
    "png": ("PNG", "image/png", {"compress_level": 3}),
    "jpeg": ("JPEG", "image/jpeg", {"quality": 92}),
    "webp": ("WEBP", "image/webp", {"quality": 90}),
}
FORMAT_ALIASES = {"jpg": "jpeg"}


class RequestError(Exception):
    """A bad request: answered with `status` and the message as JSON, never a traceback."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_body_bytes: int = 20 * 2**20
    max_side: int = 2048  # width and height of an uploaded image, in pixels
    max_samples: int = 64  # images per /generate request


@dataclass
class TranslateItem:
    """One decoded upload, padded to the network's size multiple; `size` is (H, W) before padding."""

    pixels: np.ndarray
    size: tuple[int, int]


class ServedModel:
    """One engine and what a request needs from it: decoding with limits, batch functions, encoding."""

    def __init__(self, engine: Engine, name: str, limits: Limits | None = None):
        self.engine = engine
        self.name = name
        self.limits = limits or Limits()
        self.info = engine.info
        self.kind = self.info.get("kind")
        normalization = self.info.get("normalization") or {"mean": 0.5, "std": 0.5}
        self.mean, self.std = float(normalization["mean"]), float(normalization["std"])
        self._latent = _latent_sampler(engine) if self.kind == "sampler" else None
        self.multiple = int(self.info.get("size_multiple") or 1)
        # Uploads are padded up to the size multiple, so the smallest one the engine takes is a bit smaller.
        self.min_side = _smallest_side(engine, self.multiple) - self.multiple + 1 if self.kind == "translator" else 0

    def describe(self) -> dict[str, Any]:
        """The model file's metadata (no server paths) and the engine."""
        meta = {key: value for key, value in self.info.items() if key != "path"}
        return {"name": self.name, "engine": self.engine.describe(), **meta}

    # ------------------------------------------------------------------ translation
    def decode(self, data: bytes) -> TranslateItem:
        """An uploaded image as a padded array; 415 for what is not an image, 422 for sizes over the limit."""
        if not data:
            raise RequestError(422, "the request holds no image: send the image's bytes or a multipart upload")
        try:
            with Image.open(io.BytesIO(data)) as header:  # reads the header only: size before any pixel
                width, height = header.size
        except Image.DecompressionBombError as error:
            raise RequestError(422, f"image too large ({error})") from error
        except Exception as error:  # Pillow raises many types for what is not an image
            raise RequestError(415, "the body is not an image this server can read (PNG, JPEG, WebP, ...)") from error
        side = self.limits.max_side
        if width > side or height > side:
            raise RequestError(422, f"image {width}x{height} is larger than this server's limit of {side}x{side}")
        if min(width, height) < self.min_side:
            raise RequestError(
                422, f"image {width}x{height} is too small: this model takes {self.min_side} pixels or more a side"
            )
        channels = int(self.info.get("input_nc", 3))
        try:
            image = decode_image(data, "the uploaded image", channels)
        except UnreadableImage as error:
            raise RequestError(415, f"the image cannot be decoded ({error.reason})") from error
        pixels = np.asarray(image)
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        return TranslateItem(pad_to_multiple(pixels, self.multiple), pixels.shape[:2])

    @staticmethod
    def translate_key(item: TranslateItem) -> Hashable:
        """Uploads batch together only when their padded sizes match: no extra padding, no wasted work."""
        return ("translate", *item.pixels.shape)

    def run_translate(self, items: list[TranslateItem]) -> list[np.ndarray]:
        """One engine call for same-size uploads; each output cropped back to its input's size."""
        batch = to_network(np.stack([item.pixels for item in items]), self.mean, self.std)
        output = from_network(self.engine.run(batch), self.mean, self.std)
        return [image[: item.size[0], : item.size[1]] for image, item in zip(output, items)]

    # ------------------------------------------------------------------ generation
    def parse_generate(self, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None, int]:
        """(noise, labels, n) for /generate's class, seed, n and truncation; 422 for bad values."""
        unknown = set(params) - {"class", "seed", "n", "truncation", "format", "nrow"}
        if unknown:
            names = ", ".join(sorted(unknown))
            raise RequestError(422, f"unknown parameter(s) {names}: use class, seed, n, truncation, format, nrow")
        n = _integer(params, "n", 1, 1, self.limits.max_samples)
        seed = _integer(params, "seed", 0, 0, 2**63 - 1)
        truncation = _number(params, "truncation")
        if truncation is not None and truncation <= 0:
            raise RequestError(422, f"truncation {truncation}: must be positive (e.g. 0.5 .. 2), or left out")
        names = list(self.info.get("class_names") or [])
        conditional = int(self.info.get("num_classes") or 0) > 0
        label = params.get("class")
        if conditional and label in (None, ""):
            raise RequestError(422, f"this model is class-conditional: pass class (one of {', '.join(names)})")
        if not conditional and label not in (None, ""):
            raise RequestError(422, "this model is unconditional: leave out class")
        labels = None
        if conditional:
            from transgan.inference.sampling import class_index

            try:
                labels = np.full(n, class_index(names, label), dtype=np.int64)
            except TransganError as error:
                raise RequestError(422, str(error)) from error
        noise = self._latent(n, seed, truncation)
        return noise, labels, n

    def run_generate(self, items: list[tuple[np.ndarray, np.ndarray | None]]) -> list[np.ndarray]:
        """One engine call for every queued /generate request; outputs N x H x W x C uint8 per request."""
        noise = np.concatenate([z for z, _ in items])
        labels = None if items[0][1] is None else np.concatenate([y for _, y in items])
        images = from_network(self.engine.run(noise, labels), self.mean, self.std)
        sizes = np.cumsum([len(z) for z, _ in items])[:-1]
        return np.split(images, sizes)

    # ------------------------------------------------------------------ encoding
    def encode(self, pixels: np.ndarray, image_format: str) -> tuple[bytes, str]:
        """(bytes, media type) of an H x W x C uint8 image."""
        pil_format, media_type, options = FORMATS[image_format]
        image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        buffer = io.BytesIO()
        image.save(buffer, format=pil_format, **options)
        return buffer.getvalue(), media_type


def grid(images: np.ndarray, columns: int, padding: int = 2) -> np.ndarray:
    """N x H x W x C images tiled in rows of `columns` on white, like `transgan generate`'s grid files."""
    count, height, width, channels = images.shape
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    canvas = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels), 255, np.uint8
    )
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        canvas[top : top + height, left : left + width] = image
    return canvas


def pick_format(requested: str | None, accept: str | None) -> str:
    """The output format: the `format` parameter, else the first image type in Accept we can write, else PNG."""
    if requested:
        name = FORMAT_ALIASES.get(requested.lower(), requested.lower())
        if name not in FORMATS:
            raise RequestError(422, f"format '{requested}': use one of {', '.join(FORMATS)}")
        return name
    if not accept:
        return "png"
    by_type = {media_type: name for name, (_, media_type, _) in FORMATS.items()}
    wildcard = False
    for part in accept.split(","):
        media_type = part.split(";")[0].strip().lower()
        if media_type in by_type:
            return by_type[media_type]
        wildcard = wildcard or media_type in ("*/*", "image/*")
    if wildcard:
        return "png"
    raise RequestError(406, f"Accept '{accept}': this server answers with {', '.join(by_type)}")


def _integer(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise RequestError(422, f"{name} '{value}': must be a whole number") from None
    if not low <= number <= high:
        raise RequestError(422, f"{name} {number}: must be between {low} and {high}")
    return number


def _number(params: dict[str, Any], name: str) -> float | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        number = float(str(value))
    except ValueError:
        raise RequestError(422, f"{name} '{value}': must be a number") from None
    if not np.isfinite(number):
        raise RequestError(422, f"{name} {value}: must be a finite number")
    return number


def _latent_sampler(engine: Engine):
    """noise(n, seed, truncation) drawn exactly as `transgan generate` draws it (the network's sample_latent;
    StyleGAN2's seed convention: sample i from numpy's RandomState(seed + i)).

    ONNX engines hold no network: one is built from the file's config, for its sample_latent only.
    """
    import torch

    net = getattr(engine, "net", None)
    if net is None or not hasattr(net, "sample_latent"):
        from transgan.nets import build_network

        net = build_network(engine.info["arch"], **engine.info["config"])

    def noise(n: int, seed: int, truncation: float | None) -> np.ndarray:
        if hasattr(net, "latents_for_seeds"):  # StyleGAN2: the official generate.py's z of seeds S, S+1, ...
            return net.latents_for_seeds([seed + i for i in range(n)], net.latent_dim).numpy().astype(np.float32)
        return net.sample_latent(n, torch.Generator().manual_seed(seed), truncation).numpy().astype(np.float32)

    return noise


def _smallest_side(engine: Engine, multiple: int, largest: int = 256) -> int:
    """The smallest square side (a multiple of the network's) that the engine runs: normalisation layers fail
    on a 1x1 feature map, so a tiny upload would otherwise end in an engine error instead of a clear 422."""
    side = multiple
    channels = int(engine.info.get("input_nc", 3))
    while side < largest:
        try:
            with _native_stderr_silenced():  # ONNX Runtime logs the expected failures itself, from C++
                engine.run(np.zeros((1, channels, side, side), np.float32))
            return side
        except Exception:  # the engine's own error types (torch ValueError, ONNX Runtime failures)
            side *= 2
    return side


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null for a moment (at start-up, before any request is served)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
