"""What the class-conditional samplers and their discriminators share: size plan, widths, labels, latent codes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transgan.errors import TransganError

MAX_WIDTH_FACTOR = 8  # widths double per resolution level up to 8x the base width, as in the DCGAN paper


def resolution_plan(image_size: int) -> tuple[int, int]:
    """(base, levels): image_size = base * 2**levels with base from 3 to 8 (28 -> 7x4, 32 -> 4x8, 64 -> 4x16)."""
    base, levels = image_size, 0
    while base % 2 == 0 and base > 7:
        base, levels = base // 2, levels + 1
    if not 3 <= base <= 8 or levels == 0:
        raise TransganError(f"image_size {image_size}: use a power of two times 3..8 pixels (e.g. 28, 32, 48, 64, 128)")
    return base, levels


def level_width(width: int, level: int) -> int:
    """The channel count `level` doublings above `width`, capped at MAX_WIDTH_FACTOR times it."""
    return width * min(2**level, MAX_WIDTH_FACTOR)


def embed(table: nn.Embedding, labels: Tensor) -> Tensor:
    """Embedding of integer labels, or of soft labels (N, num_classes) as the weighted mix of rows.

    Soft labels let `generate --interpolate` walk from one class to another with the noise fixed.
    """
    if labels.is_floating_point():
        return labels.to(table.weight.dtype) @ table.weight
    return table(labels)


def check_labels(net: nn.Module, labels: Tensor | None) -> None:
    """One clear error when a class-conditional network (num_classes > 0) is called without labels."""
    if net.num_classes and labels is None:
        raise TransganError(f"this {type(net).__name__} is class-conditional: pass labels (0..{net.num_classes - 1})")


class LatentGenerator(nn.Module):
    """Base of the samplers: checks and keeps the sizes, plans the layers, draws inputs z.

    Subclasses build their layers from `self.base` (the first grid's side) and `self.levels` (doublings up
    to image_size), see resolution_plan.
    """

    def __init__(
        self,
        latent_dim: int,
        num_classes: int,
        image_size: int,
        channels: int,
        info_categorical: int = 0,
        info_continuous: int = 0,
    ):
        super().__init__()
        if info_categorical < 0 or info_continuous < 0 or info_categorical + info_continuous >= latent_dim:
            raise TransganError(
                f"InfoGAN codes ({info_categorical} categorical + {info_continuous} continuous) must fit inside "
                f"latent_dim {latent_dim} with room for noise"
            )
        self.base, self.levels = resolution_plan(image_size)
        self.latent_dim, self.num_classes, self.image_size, self.channels = (
            latent_dim,
            num_classes,
            image_size,
            channels,
        )
        self.info_categorical, self.info_continuous = info_categorical, info_continuous

    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, truncation: float | None = None
    ) -> Tensor:
        """z for `n` samples: noise N(0, 1) (resampled above |truncation|, BigGAN's trick), codes first."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        if truncation is not None:
            if truncation <= 0:
                raise TransganError(f"--truncation {truncation}: must be positive (e.g. 0.5 .. 2)")
            # Resampling (not clamping) keeps the truncated normal's shape; 8 rounds leave ~nothing outside.
            for _ in range(8):
                outside = z.abs() > truncation
                if not outside.any():
                    break
                z[outside] = torch.randn(int(outside.sum()), generator=generator)
            z = z.clamp(-truncation, truncation)
        codes = self.info_categorical + self.info_continuous
        if self.info_categorical:
            index = torch.randint(0, self.info_categorical, (n,), generator=generator)
            z[:, : self.info_categorical] = F.one_hot(index, self.info_categorical).float()
        if self.info_continuous:
            z[:, self.info_categorical : codes] = torch.rand(n, self.info_continuous, generator=generator) * 2 - 1
        return z
