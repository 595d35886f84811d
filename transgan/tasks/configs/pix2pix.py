"""Pix2Pix's options (torch-free: `transgan train pix2pix --help` reads them without building anything)."""

from __future__ import annotations

from dataclasses import dataclass

from transgan.config import option
from transgan.tasks.configs.shared import TranslationConfig


@dataclass(frozen=True)
class Pix2PixConfig(TranslationConfig):
    """Pix2Pix options; the defaults are the reference's."""

    data: str = option("", "folder with A/ and B/ sub-folders (same file names) or of aligned A|B images")
    arch: str = option("unet_256", "generator network")
    norm: str = option("batch", "batch, instance or none")
    dropout: bool = option(True, "dropout in the generator")
    gan_loss: str = option("vanilla", "adversarial loss: vanilla, lsgan, hinge, nonsaturating, wasserstein ...")
    lambda_l1: float = option(100.0, "weight of the L1 loss")
