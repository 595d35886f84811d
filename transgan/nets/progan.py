"""ProGAN generator and discriminator: pixel norm, equalised lr, minibatch std, grown one resolution at a time."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from transgan.errors import TransganError
from transgan.nets.equalized import (
    ClassEmbedding,
    EqualConv2d,
    EqualLinear,
    Growing,
    MinibatchStd,
    class_vectors,
    downsample2x,
    pixel_norm,
    upsample2x,
    width_at,
)
from transgan.nets.generator_base import LatentGenerator, check_labels, resolution_plan
from transgan.registry import NETWORKS


class UpBlock(nn.Module):
    """Nearest x2 upsample, then two 3x3 convs, each followed by leaky ReLU and pixel norm."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(out_channels, out_channels, 3, activation="lrelu")

    def forward(self, x: Tensor) -> Tensor:
        x = pixel_norm(self.conv0(upsample2x(x, mode="nearest")))
        return pixel_norm(self.conv1(x))


class DownBlock(nn.Module):
    """Two 3x3 convs with leaky ReLU, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu")

    def forward(self, x: Tensor) -> Tensor:
        return downsample2x(self.conv1(self.conv0(x)))


# Small widths for the registry-wide tests (the defaults are the paper's, 512 wide).
TINY_D = {"channel_base": 64, "channel_max": 8, "image_size": 16, "num_classes": 3}
TINY = {**TINY_D, "latent_dim": 8}


@NETWORKS.register("progan_generator", role="sampler", family="progan", test_config=TINY)
class ProGANGenerator(Growing, LatentGenerator):
    """ProGAN generator: z (+ one-hot class, concatenated as in ProGAN's code) -> pixel norm -> dense to the
    base grid -> one UpBlock per stage; toRGB at every stage. Linear output (about [-1, 1]). Widths are the
    paper's, min(16384 / resolution, 512); built fully grown.

    At depth d with alpha < 1 the image is lerp(upsample(toRGB_{d-1}(x_{d-1})), toRGB_d(x_d), alpha); see
    `Growing` for the stage interface (`set_stage`, `grow`, `stages`, `resolution`).
    """

    def __init__(
        self,
        latent_dim: int = 512,
        num_classes: int = 0,
        image_size: int = 256,
        channels: int = 3,
        channel_base: int = 16384,
        channel_max: int = 512,
    ):
        super().__init__(latent_dim, num_classes, image_size, channels, 0, 0)
        self._init_growing(self.base, self.levels + 1)
        base = self.base
        widths = [width_at(self.stage_resolution(s), channel_base, channel_max) for s in range(self.stages)]
        self.dense = EqualLinear(latent_dim + num_classes, widths[0] * base * base, activation="lrelu")
        self.conv = EqualConv2d(widths[0], widths[0], 3, activation="lrelu")
        self.blocks = nn.ModuleList(UpBlock(widths[s - 1], widths[s]) for s in range(1, self.stages))
        self.to_rgb = nn.ModuleList(EqualConv2d(width, channels, 1) for width in widths)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(self, labels)
        x = z
        if self.num_classes:
            x = torch.cat([x, class_vectors(labels, self.num_classes, z.dtype)], dim=1)
        x = self.dense(pixel_norm(x)).view(z.shape[0], -1, self.base, self.base)
        x = pixel_norm(self.conv(pixel_norm(x)))
        previous = x
        for block in self.blocks[: self.depth]:
            previous, x = x, block(x)
        img = self.to_rgb[self.depth](x)
        if self.fading:
            old = upsample2x(self.to_rgb[self.depth - 1](previous), mode="nearest")
            img = torch.lerp(old, img, self.alpha)
        return img


@NETWORKS.register("progan_discriminator", role="discriminator", family="progan", test_config=TINY_D)
class ProGANDiscriminator(Growing, nn.Module):
    """ProGAN discriminator: fromRGB at the active stage, DownBlocks to the base grid, minibatch std
    (mbstd_channels 0 turns it off), 3x3 conv, two dense layers; built fully grown.

    During a fade the new stage's features are blended with fromRGB_{d-1}(downsample(images)) by alpha.
    Conditional: the logit adds a projection term <embed(y), h> / sqrt(dim).
    """

    def __init__(
        self,
        num_classes: int = 0,
        image_size: int = 256,
        channels: int = 3,
        channel_base: int = 16384,
        channel_max: int = 512,
        mbstd_group_size: int = 4,
        mbstd_channels: int = 1,
    ):
        super().__init__()
        base, levels = resolution_plan(image_size)
        self._init_growing(base, levels + 1)
        self.num_classes, self.image_size, self.channels = num_classes, image_size, channels
        widths = [width_at(self.stage_resolution(s), channel_base, channel_max) for s in range(self.stages)]
        self.from_rgb = nn.ModuleList(EqualConv2d(channels, width, 1, activation="lrelu") for width in widths)
        self.blocks = nn.ModuleList(DownBlock(widths[s], widths[s - 1]) for s in range(1, self.stages))
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_channels) if mbstd_channels else nn.Identity()
        self.conv = EqualConv2d(widths[0] + mbstd_channels, widths[0], 3, activation="lrelu")
        self.fc = EqualLinear(widths[0] * base * base, widths[0], activation="lrelu")
        self.out = EqualLinear(widths[0], 1)
        self.embed = ClassEmbedding(num_classes, widths[0]) if num_classes else None
        self.feature_dim = widths[0]

    def discriminator_blocks(self) -> list[nn.Module]:
        """Freeze-D blocks, input first, at full depth: one per resolution stage (its fromRGB and DownBlock),
        then the base stage (its fromRGB, minibatch std, conv, dense layers, class embedding)."""
        stages = [nn.ModuleList([self.from_rgb[s], self.blocks[s - 1]]) for s in range(self.stages - 1, 0, -1)]
        base = [self.from_rgb[0], self.mbstd, self.conv, self.fc, self.out]
        return [*stages, nn.ModuleList(base + ([self.embed] if self.embed is not None else []))]

    def features(self, images: Tensor) -> Tensor:
        """h (N, feature_dim) at the active stage; images must be `resolution` pixels square."""
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            raise TransganError(
                f"{type(self).__name__} at stage {self.depth} takes {self.resolution}x{self.resolution} images, "
                f"got {images.shape[-2]}x{images.shape[-1]}"
            )
        x = self.from_rgb[self.depth](images)
        for stage in range(self.depth, 0, -1):
            x = self.blocks[stage - 1](x)
            if stage == self.depth and self.fading:
                old = self.from_rgb[stage - 1](downsample2x(images))
                x = torch.lerp(old, x, self.alpha)
        x = self.conv(self.mbstd(x))
        return self.fc(x.flatten(1))

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(self, labels)
        h = self.features(images)
        logit = self.out(h).flatten()
        if self.embed is not None:
            logit = logit + (self.embed(labels).to(h.dtype) * h).sum(dim=1) / math.sqrt(self.feature_dim)
        return logit
