"""DCGAN generators and discriminators (unconditional and class-conditional)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from transgan.nets.equalized import MinibatchStd
from transgan.nets.generator_base import (
    LatentGenerator,
    check_labels,
    embed,
    level_width,
    resolution_plan,
)
from transgan.nets.layers import init_then_spectral_norm, init_weights, norm_layer
from transgan.registry import NETWORKS


@NETWORKS.register("dcgan_generator", role="sampler")
class DCGANGenerator(LatentGenerator):
    """DCGAN generator: z (+ label embedding when num_classes > 0: the classic cDCGAN) -> transposed convs
    doubling the size -> tanh."""

    def __init__(
        self,
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
    ):
        super().__init__(latent_dim, num_classes, image_size, channels, info_categorical, info_continuous)
        self.embedding = nn.Embedding(num_classes, embed_dim) if num_classes else None
        Norm = norm_layer(norm)
        bias = norm != "batch"
        width = level_width(ngf, self.levels - 1)
        in_dim = latent_dim + (embed_dim if num_classes else 0)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, width, self.base, 1, 0, bias=bias),
            Norm(width),
            nn.ReLU(True),
        ]
        for level in range(self.levels - 1, 0, -1):
            out = level_width(ngf, level - 1)
            layers += [nn.ConvTranspose2d(width, out, 4, 2, 1, bias=bias), Norm(out), nn.ReLU(True)]
            width = out
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        init_weights(self, "normal", init_gain)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(self, labels)
        if self.embedding is not None:
            z = torch.cat([z, embed(self.embedding, labels)], 1)
        return self.main(z[:, :, None, None])


@NETWORKS.register("dcgan_discriminator", role="discriminator")
class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: strided convs halving the size down to the base grid -> one logit; a label map is an
    extra input channel. norm='none' gives the WGAN-GP critic (batch norm breaks the per-sample penalty);
    `mbstd_group_size` > 0 adds a minibatch-std map before the last conv."""

    def __init__(
        self,
        num_classes: int = 0,
        image_size: int = 64,
        channels: int = 3,
        ndf: int = 64,
        norm: str = "batch",
        spectral_norm: bool = False,
        init_gain: float = 0.02,
        mbstd_group_size: int = 0,
    ):
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
            out = level_width(ndf, level)
            layers += [nn.Conv2d(width, out, 4, 2, 1, bias=bias), Norm(out), nn.LeakyReLU(0.2, True)]
            width = out
        if mbstd_group_size:  # one feature map of the batch's spread, seen by the last conv (ProGAN's trick)
            layers.append(MinibatchStd(mbstd_group_size, 1))
        layers.append(nn.Conv2d(width + (1 if mbstd_group_size else 0), 1, base, 1, 0))
        self.main = nn.Sequential(*layers)
        self.levels = levels
        init_then_spectral_norm(self, "normal", init_gain, spectral_norm)

    def discriminator_blocks(self) -> list[nn.Module]:
        """Freeze-D blocks, input first: the first strided conv (with the class label map, an input); each
        further strided conv with its norm; the output conv (with the minibatch-std map)."""
        ends = [2 + 3 * level for level in range(self.levels)]
        blocks = [self.main[start:end] for start, end in zip([0, *ends], [*ends, len(self.main)])]
        if self.label_map is not None:
            blocks[0] = nn.ModuleList([self.label_map, blocks[0]])
        return blocks

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(self, labels)
        if self.label_map is not None:
            plane = embed(self.label_map, labels).view(-1, 1, self.image_size, self.image_size)
            images = torch.cat([images, plane.to(images.dtype)], 1)
        return self.main(images).flatten()
