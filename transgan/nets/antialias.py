"""Anti-aliased resampling (blur-pool, Zhang 2019) as CUT's networks use it, and CUT's anti-aliased PatchGAN.

The layers keep their fixed filters as buffers named `filt`, as the official CUT code does, so its state
dicts load directly. Both export to ONNX as a padding op and a grouped (depthwise) conv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transgan.nets.layers import init_then_spectral_norm, norm_layer, use_bias
from transgan.registry import NETWORKS


def binomial_filter(size: int) -> torch.Tensor:
    """The normalised 2-D binomial filter of side `size` (3: [1,2,1] x [1,2,1] / 16)."""
    row = torch.tensor(_binomial_row(size))
    kernel = row[:, None] * row[None, :]
    return kernel / kernel.sum()


def _binomial_row(size: int) -> list[float]:
    """Pascal's triangle row of length `size` (3: [1, 2, 1]; 4: [1, 3, 3, 1])."""
    row = [1.0]
    for _ in range(size - 1):
        row = [a + b for a, b in zip([0.0, *row], [*row, 0.0])]
    return row


class Downsample(nn.Module):
    """Blur, then subsample by 2: reflect-pad 1, depthwise 3x3 binomial conv with stride 2 (H -> ceil(H/2))."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("filt", binomial_filter(3)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt, stride=2, groups=self.channels)


class Upsample(nn.Module):
    """Upsample by 2 with a 4x4 binomial filter: replicate-pad 1, depthwise transposed conv with stride 2,
    then drop one row and column on every side (H -> 2H). Close to bilinear x2 (align_corners=False)."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        # x4: each output pixel receives a quarter of the filter's taps (stride 2 in both directions).
        self.register_buffer("filt", (binomial_filter(4) * 4)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
        out = F.conv_transpose2d(padded, self.filt, stride=2, padding=2, groups=self.channels)
        return out[:, :, 1:-1, 1:-1]


@NETWORKS.register("n_layers_antialias", role="discriminator", family="patchgan_antialias")
class AntialiasNLayerDiscriminator(nn.Module):
    """CUT's PatchGAN: the n_layers PatchGAN with each stride-2 conv replaced by a stride-1 conv and a blur-pool
    Downsample after its activation (the official `NLayerDiscriminator` without --no_antialias)."""

    def __init__(
        self,
        input_nc: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        spectral_norm: bool = False,
        init: str = "normal",
        init_gain: float = 0.02,
    ):
        super().__init__()
        bias = use_bias(norm)
        make_norm = norm_layer(norm)
        sequence: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=4, stride=1, padding=1),
            nn.LeakyReLU(0.2, True),
            Downsample(ndf),
        ]
        mult = 1
        self._block_starts = [0]  # Freeze-D's blocks: where each conv (with what follows it) starts
        for n in range(1, n_layers + 1):
            previous, mult = mult, min(2**n, 8)
            self._block_starts.append(len(sequence))
            sequence += [
                nn.Conv2d(ndf * previous, ndf * mult, kernel_size=4, stride=1, padding=1, bias=bias),
                make_norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
            if n < n_layers:  # the last widening conv keeps the resolution
                sequence.append(Downsample(ndf * mult))
        self._block_starts.append(len(sequence))
        sequence.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*sequence)
        init_then_spectral_norm(self, init, init_gain, spectral_norm)

    def discriminator_blocks(self) -> list[nn.Module]:
        """Freeze-D blocks, input first, as the PatchGAN's: the first conv (with its blur-pool); each of the
        n_layers convs with its norm (and blur-pool); the output conv: n_layers + 2 blocks."""
        ends = [*self._block_starts[1:], len(self.model)]
        return [self.model[start:end] for start, end in zip(self._block_starts, ends)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


NETWORKS.add_variant(
    "basic_antialias", "n_layers_antialias", "CUT's 70x70 PatchGAN with blur-pool downsampling (3 layers).", n_layers=3
)
