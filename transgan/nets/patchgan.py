"""PatchGAN and PixelGAN discriminators, laid out like the reference so its state dicts load directly."""

from __future__ import annotations

import torch
from torch import nn

from transgan.nets.equalized import MinibatchStd
from transgan.nets.layers import init_then_spectral_norm, norm_layer, use_bias
from transgan.registry import NETWORKS


@NETWORKS.register("n_layers", role="discriminator", family="patchgan")
class NLayerDiscriminator(nn.Module):
    """PatchGAN: classifies overlapping patches as real or fake; `n_layers` stride-2 convs, then two stride-1 convs.

    With n_layers=3 each output value sees a 70x70 patch of the input. input_nc is 6 for pix2pix's
    conditional D (the image pair). `mbstd_group_size` > 0 adds a minibatch-std map before the last conv
    (it needs batches of 2 or more to carry information).
    """

    def __init__(
        self,
        input_nc: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "batch",
        spectral_norm: bool = False,
        init: str = "normal",
        init_gain: float = 0.02,
        mbstd_group_size: int = 0,
    ):
        super().__init__()
        bias = use_bias(norm)
        make_norm = norm_layer(norm)
        # The first conv has a bias and no norm, as in the reference.
        sequence: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            previous, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last widening conv keeps the resolution
            sequence += [
                nn.Conv2d(ndf * previous, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=bias),
                make_norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        if mbstd_group_size:  # one feature map of the batch's spread, seen by the last conv (ProGAN's trick)
            sequence.append(MinibatchStd(mbstd_group_size, 1))
        sequence.append(nn.Conv2d(ndf * mult + (1 if mbstd_group_size else 0), 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*sequence)
        self.n_layers = n_layers
        init_then_spectral_norm(self, init, init_gain, spectral_norm)

    def discriminator_blocks(self) -> list[nn.Module]:
        """Freeze-D blocks, input first: the first conv; each of the n_layers convs with its norm; the output
        conv (with the minibatch-std map): n_layers + 2 blocks."""
        ends = [2 + 3 * n for n in range(self.n_layers + 1)]
        return [self.model[start:end] for start, end in zip([0, *ends], [*ends, len(self.model)])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@NETWORKS.register("pixel", role="discriminator", family="pixel")
class PixelDiscriminator(nn.Module):
    """1x1-conv PixelGAN discriminator: classifies every pixel on its own (a 1x1 PatchGAN)."""

    def __init__(
        self,
        input_nc: int = 3,
        ndf: int = 64,
        norm: str = "batch",
        spectral_norm: bool = False,
        init: str = "normal",
        init_gain: float = 0.02,
    ):
        super().__init__()
        bias = use_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=bias),
            norm_layer(norm)(ndf * 2),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=bias),
        )
        init_then_spectral_norm(self, init, init_gain, spectral_norm)

    def discriminator_blocks(self) -> list[nn.Module]:
        """Freeze-D blocks, input first: the three 1x1 convs (the second with its norm)."""
        return [self.net[0:2], self.net[2:5], self.net[5:]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


NETWORKS.add_variant("basic", "n_layers", "The 70x70 PatchGAN of pix2pix and CycleGAN (3 layers).", n_layers=3)
