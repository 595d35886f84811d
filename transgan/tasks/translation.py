"""What pix2pix and cyclegan share: data options, network building and display helpers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transgan.config import option
from transgan.errors import TransganError


@dataclass(frozen=True)
class ImageOptions:
    """Preprocessing and channel options of translation tasks (the reference's defaults)."""

    direction: str = option("AtoB", "AtoB or BtoA")
    input_nc: int = option(3, "channels of the input images (1 or 3)")
    output_nc: int = option(3, "channels of the output images (1 or 3)")
    preprocess: str = option("resize_and_crop", "resize_and_crop, crop, scale_width, scale_width_and_crop or none")
    load_size: int = option(286, "images are first scaled to this size")
    crop_size: int = option(256, "then cropped to this size")
    flip: bool = option(True, "random horizontal flips")


def check_image_options(config: ImageOptions) -> None:
    if config.direction not in ("AtoB", "BtoA"):
        raise TransganError(f"--direction {config.direction}: use AtoB or BtoA")
    for name in ("input_nc", "output_nc"):
        if getattr(config, name) not in (1, 3):
            raise TransganError(f"--{name.replace('_', '-')} {getattr(config, name)}: use 1 or 3")


def preprocess_of(config: ImageOptions):
    from transgan.data.transforms import Preprocess

    return Preprocess(mode=config.preprocess, load_size=config.load_size, crop_size=config.crop_size, flip=config.flip)


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """1-channel images repeated to 3 so they sit in one grid with colour ones."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def required_path(value: str, flag: str) -> str:
    if not value:
        raise TransganError(f"{flag} is required: the folder of training images")
    return value


def per_sample(config: object) -> bool:
    """True when the translation networks treat every image of a batch on its own (instance norm or none),
    so one call on a concatenated batch equals separate calls: fewer, larger convolutions, same result.
    Batch norm mixes the images (and its running statistics would change), so it keeps separate calls."""
    return getattr(config, "norm", "batch") != "batch"


def discriminate_pair(
    D: torch.nn.Module, config: object, first: torch.Tensor, second: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """D's predictions for two batches: one call on [first; second] when that gives the same values (a
    per-sample norm and no spectral norm, whose power iteration steps once per call), else two calls."""
    if per_sample(config) and not getattr(config, "spectral_norm", False):
        pred_first, pred_second = D(torch.cat([first, second])).tensor_split(2)
        return pred_first, pred_second
    return D(first), D(second)


def check_input_size(images: torch.Tensor, generator: torch.nn.Module, arch: str) -> None:
    """Translators need H and W divisible by their size multiple (256 for unet_256); say so, not crash."""
    multiple = getattr(generator, "size_multiple", 1)
    height, width = images.shape[-2:]
    if height % multiple or width % multiple:
        raise TransganError(
            f"{arch} needs image sizes divisible by {multiple}, got {height}x{width}; "
            f"set --crop-size to a multiple of {multiple} or pick another --arch"
        )
