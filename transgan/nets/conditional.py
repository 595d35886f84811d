"""Conditional-BN generator and spectral-norm projection discriminator (with ACGAN and InfoGAN heads)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn
from torch.nn import init as nn_init

from transgan.nets.equalized import MinibatchStd
from transgan.nets.generator_base import LatentGenerator, check_labels, embed, level_width, resolution_plan
from transgan.nets.layers import maybe_spectral_norm
from transgan.registry import NETWORKS


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al., Miyato & Koyama)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(channels, affine=num_classes == 0)
        if num_classes:
            self.gamma = nn.Embedding(num_classes, channels)
            self.beta = nn.Embedding(num_classes, channels)
            # Start as the identity so every class begins from the same plain batch norm.
            nn_init.ones_(self.gamma.weight)
            nn_init.zeros_(self.beta.weight)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        x = self.bn(x)
        if not self.num_classes:
            return x
        gamma, beta = embed(self.gamma, labels), embed(self.beta, labels)
        return x * gamma[:, :, None, None].to(x.dtype) + beta[:, :, None, None].to(x.dtype)


class UpBlock(nn.Module):
    """CBN -> ReLU -> nearest x2 -> 3x3 conv (upsample + conv avoids transposed-conv checkerboards)."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int):
        super().__init__()
        self.norm = ConditionalBatchNorm(in_ch, num_classes)
        self.conv = nn.Conv2d(in_ch, out_ch, 3, 1, 1)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        x = torch.relu(self.norm(x, labels))
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


@NETWORKS.register("cbn_generator", role="sampler")
class CBNGenerator(LatentGenerator):
    """Generator with class-conditional batch norm (the modern default; num_classes=0 is unconditional).

    z -> linear to the base grid -> UpBlocks with class-conditional batch norm -> BN, ReLU, conv, tanh.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        num_classes: int = 0,
        image_size: int = 32,
        channels: int = 3,
        ngf: int = 64,
        info_categorical: int = 0,
        info_continuous: int = 0,
    ):
        super().__init__(latent_dim, num_classes, image_size, channels, info_categorical, info_continuous)
        widths = [level_width(ngf, level) for level in range(self.levels, -1, -1)]
        self.linear = nn.Linear(latent_dim, widths[0] * self.base * self.base)
        self.blocks = nn.ModuleList(UpBlock(a, b, num_classes) for a, b in itertools.pairwise(widths))
        self.out = nn.Sequential(nn.BatchNorm2d(widths[-1]), nn.ReLU(True), nn.Conv2d(widths[-1], channels, 3, 1, 1))
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn_init.xavier_uniform_(module.weight)
                nn_init.zeros_(module.bias)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(self, labels)
        x = self.linear(z).view(z.shape[0], -1, self.base, self.base)
        for block in self.blocks:
            x = block(x, labels)
        return torch.tanh(self.out(x))


@NETWORKS.register("projection_discriminator", role="discriminator")
class ProjectionDiscriminator(nn.Module):
    """SNGAN's spectral-norm CNN discriminator with the projection head: logit = psi(h) + <embed(y), h>.

    h is the ReLU body's sum-pooled feature (`mbstd_group_size` > 0: a minibatch-std map enters its last
    conv). Optional heads on the same h: an auxiliary classifier (ACGAN, `aux_classes`) and InfoGAN's Q
    head (categorical logits then continuous means).
    """

    def __init__(
        self,
        num_classes: int = 0,
        image_size: int = 32,
        channels: int = 3,
        ndf: int = 64,
        projection: bool = True,
        aux_classes: int = 0,
        info_categorical: int = 0,
        info_continuous: int = 0,
        mbstd_group_size: int = 0,
    ):
        super().__init__()
        _, levels = resolution_plan(image_size)
        self.num_classes, self.image_size, self.channels = num_classes if projection else 0, image_size, channels
        self.info_categorical, self.info_continuous = info_categorical, info_continuous
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 3, 1, 1), nn.LeakyReLU(0.1, True)]
        width = ndf
        for level in range(1, levels + 1):
            out = level_width(ndf, level)
            layers += [nn.Conv2d(width, width, 4, 2, 1), nn.LeakyReLU(0.1, True)]
            if mbstd_group_size and level == levels:  # the batch's spread, seen by the last conv (ProGAN's trick)
                layers.append(MinibatchStd(mbstd_group_size, 1))
            layers += [nn.Conv2d(width + (1 if mbstd_group_size and level == levels else 0), out, 3, 1, 1)]
            layers.append(nn.LeakyReLU(0.1, True))
            width = out
        self.body = nn.Sequential(*layers)
        self.feature_dim = width
        self.linear = nn.Linear(width, 1)
        self.projection = nn.Embedding(num_classes, width) if projection and num_classes else None
        self.aux = nn.Linear(width, aux_classes) if aux_classes else None
        codes = info_categorical + info_continuous
        self.q = (
            nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.1, True), nn.Linear(width, codes)) if codes else None
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn_init.xavier_uniform_(module.weight)
                nn_init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn_init.xavier_uniform_(module.weight)
        # Spectral norm on the adversarial path only; the Q head is a plain regressor on the shared features.
        for module in [*self.body, self.linear, self.projection, self.aux]:
            if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)):
                maybe_spectral_norm(module, True)

    def discriminator_blocks(self) -> list[nn.Module]:
        """Freeze-D blocks, input first: the stem conv; one block per resolution level (strided conv, then
        conv; the last level with the minibatch-std map); the heads (linear, projection, ACGAN, Q)."""
        levels = (len(self.body) - 2 - (1 if any(isinstance(m, MinibatchStd) for m in self.body) else 0)) // 4
        starts = [2 + 4 * level for level in range(levels)]
        blocks = [self.body[start:end] for start, end in zip([0, *starts], [*starts, len(self.body)])]
        heads = [module for module in (self.linear, self.projection, self.aux, self.q) if module is not None]
        return [*blocks, nn.ModuleList(heads)]

    def features(self, images: Tensor) -> Tensor:
        return self.body(images).sum(dim=(2, 3))

    def score(self, h: Tensor, labels: Tensor | None = None) -> Tensor:
        logit = self.linear(h).flatten()
        if self.projection is not None:
            check_labels(self, labels)
            logit = logit + (embed(self.projection, labels).to(h.dtype) * h).sum(1)
        return logit

    def classify(self, h: Tensor) -> Tensor:
        """ACGAN class logits (N, aux_classes)."""
        return self.aux(h)

    def codes(self, h: Tensor) -> Tensor:
        """InfoGAN Q head: categorical logits then continuous means, (N, info_categorical + info_continuous)."""
        return self.q(h)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.score(self.features(images), labels)
