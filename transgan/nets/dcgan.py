"""DCGAN generators and discriminators (unconditional and class-conditional)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transgan.errors import TransganError
from transgan.nets.layers import init_weights, maybe_spectral_norm, norm_layer
from transgan.registry import NETWORKS

MAX_WIDTH_FACTOR = 8  # widths double per resolution level up to ngf * 8, as in the DCGAN paper


def resolution_plan(image_size: int) -> tuple[int, int]:
    """(base, levels): image_size = base * 2**levels with base from 3 to 8 (28 -> 7x4, 32 -> 4x8, 64 -> 4x16)."""
    base, levels = image_size, 0
    while base % 2 == 0 and base > 7:
        base, levels = base // 2, levels + 1
    if not 3 <= base <= 8 or levels == 0:
        raise TransganError(f"image_size {image_size}: use a power of two times 3..8 pixels (e.g. 28, 32, 48, 64, 128)")
    return base, levels


def embed(table: nn.Embedding, labels: Tensor) -> Tensor:
    """Embedding of integer labels, or of soft labels (N, num_classes) as the weighted mix of rows.

    Soft labels let `generate --interpolate` walk from one class to another with the noise fixed.
    """
    if labels.is_floating_point():
        return labels.to(table.weight.dtype) @ table.weight
    return table(labels)


def check_labels(net: nn.Module, labels: Tensor | None) -> None:
    if net.num_classes and labels is None:
        raise TransganError(f"this {type(net).__name__} is class-conditional: pass labels (0..{net.num_classes - 1})")


class LatentSampler:
    """Mixin of generators: draw inputs z, with InfoGAN codes in the first slots and optional truncation."""

    latent_dim: int
    info_categorical: int
    info_continuous: int

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


def check_codes(latent_dim: int, info_categorical: int, info_continuous: int) -> None:
    if info_categorical < 0 or info_continuous < 0 or info_categorical + info_continuous >= latent_dim:
        raise TransganError(
            f"InfoGAN codes ({info_categorical} categorical + {info_continuous} continuous) must fit inside "
            f"latent_dim {latent_dim} with room for noise"
        )


class DCGANGenerator(LatentSampler, nn.Module):
    """z (+ label embedding, concatenated: the classic cDCGAN) -> transposed convs doubling the size -> tanh."""

    def __init__(
        self,
        latent_dim: int,
        num_classes: int,
        image_size: int,
        channels: int,
        ngf: int,
        embed_dim: int,
        norm: str,
        info_categorical: int,
        info_continuous: int,
    ):
        super().__init__()
        check_codes(latent_dim, info_categorical, info_continuous)
        base, levels = resolution_plan(image_size)
        self.latent_dim, self.num_classes, self.image_size, self.channels = (
            latent_dim,
            num_classes,
            image_size,
            channels,
        )
        self.info_categorical, self.info_continuous = info_categorical, info_continuous
        self.embedding = nn.Embedding(num_classes, embed_dim) if num_classes else None
        Norm = norm_layer(norm)
        bias = norm != "batch"
        width = ngf * min(2 ** (levels - 1), MAX_WIDTH_FACTOR)
        in_dim = latent_dim + (embed_dim if num_classes else 0)
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_dim, width, base, 1, 0, bias=bias), Norm(width), nn.ReLU(True)]
        for level in range(levels - 1, 0, -1):
            out = ngf * min(2 ** (level - 1), MAX_WIDTH_FACTOR)
            layers += [nn.ConvTranspose2d(width, out, 4, 2, 1, bias=bias), Norm(out), nn.ReLU(True)]
            width = out
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(self, labels)
        if self.embedding is not None:
            z = torch.cat([z, embed(self.embedding, labels)], 1)
        return self.main(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """Strided convs halving the size down to the base grid -> one logit; a label map is an extra input channel."""

    def __init__(self, num_classes: int, image_size: int, channels: int, ndf: int, norm: str):
        super().__init__()
        base, levels = resolution_plan(image_size)
        self.num_classes, self.image_size, self.channels = num_classes, image_size, channels
        # The classic cDCGAN label map: a learned image_size x image_size plane per class.
        self.label_map = nn.Embedding(num_classes, image_size * image_size) if num_classes else None
        Norm = norm_layer(norm)
        bias = norm != "batch"
        width = ndf
        # No norm on the first layer (DCGAN paper): normalising raw pixels hurts.
        layers: list[nn.Module] = [
            nn.Conv2d(channels + (1 if num_classes else 0), width, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
        ]
        for level in range(1, levels):
            out = ndf * min(2**level, MAX_WIDTH_FACTOR)
            layers += [nn.Conv2d(width, out, 4, 2, 1, bias=bias), Norm(out), nn.LeakyReLU(0.2, True)]
            width = out
        layers.append(nn.Conv2d(width, 1, base, 1, 0))
        self.main = nn.Sequential(*layers)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(self, labels)
        if self.label_map is not None:
            plane = embed(self.label_map, labels).view(-1, 1, self.image_size, self.image_size)
            images = torch.cat([images, plane.to(images.dtype)], 1)
        return self.main(images).flatten()


@NETWORKS.register("dcgan_generator", role="sampler")
def dcgan_generator(
    latent_dim: int = 100,
    num_classes: int = 0,
    image_size: int = 64,
    channels: int = 3,
    ngf: int = 64,
    embed_dim: int = 50,
    norm: str = "batch",
    info_categorical: int = 0,
    info_continuous: int = 0,
    init_gain: float = 0.02,
) -> DCGANGenerator:
    """DCGAN generator; num_classes > 0 concatenates a label embedding to z (cDCGAN)."""
    net = DCGANGenerator(
        latent_dim, num_classes, image_size, channels, ngf, embed_dim, norm, info_categorical, info_continuous
    )
    return init_weights(net, "normal", init_gain)


@NETWORKS.register("dcgan_discriminator", role="discriminator")
def dcgan_discriminator(
    num_classes: int = 0,
    image_size: int = 64,
    channels: int = 3,
    ndf: int = 64,
    norm: str = "batch",
    spectral_norm: bool = False,
    init_gain: float = 0.02,
) -> DCGANDiscriminator:
    """DCGAN discriminator; norm='none' gives the WGAN-GP critic (batch norm breaks the per-sample penalty)."""
    net = DCGANDiscriminator(num_classes, image_size, channels, ndf, norm)
    init_weights(net, "normal", init_gain)
    # Spectral norm after init, so its power-iteration vectors match the initial weights.
    for module in net.main:
        if isinstance(module, nn.Conv2d):
            maybe_spectral_norm(module, spectral_norm)
    return net
