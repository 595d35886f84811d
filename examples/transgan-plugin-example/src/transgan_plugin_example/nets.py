"""`tiny_translator`: a small encoder-decoder translator, registered on import (the module entry-point form)."""

from __future__ import annotations

import torch
from torch import nn
from transgan.errors import TransganError
from transgan.nets.layers import init_weights, norm_layer, use_bias
from transgan.registry import NETWORKS


class ResidualBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), at constant width."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        make_norm, bias = norm_layer(norm), use_bias(norm)
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect", bias=bias),
            make_norm(channels),
            nn.ReLU(True),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode="reflect", bias=bias),
            make_norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TinyTranslator(nn.Module):
    """Stem at full size, one stride-2 level with residual blocks, upsampling, and a skip from the stem.

    Heights and widths must be even (`size_multiple` = 2): the engines and exporter read that attribute.
    """

    size_multiple = 2

    def __init__(self, input_nc: int, output_nc: int, ngf: int, n_blocks: int, norm: str):
        super().__init__()
        # transgan's own norm factory and bias rule, so --norm means what it means for the built-ins
        # (a conv followed by BatchNorm has no bias; InstanceNorm has no affine parameters).
        make_norm, bias = norm_layer(norm), use_bias(norm)
        self.stem = nn.Sequential(
            nn.Conv2d(input_nc, ngf, 3, padding=1, padding_mode="reflect", bias=bias), make_norm(ngf), nn.ReLU(True)
        )
        self.down = nn.Sequential(
            nn.Conv2d(ngf, 2 * ngf, 4, stride=2, padding=1, bias=bias), make_norm(2 * ngf), nn.ReLU(True)
        )
        self.blocks = nn.Sequential(*[ResidualBlock(2 * ngf, norm) for _ in range(n_blocks)])
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * ngf, ngf, 4, stride=2, padding=1, bias=bias), make_norm(ngf), nn.ReLU(True)
        )
        self.head = nn.Sequential(nn.Conv2d(2 * ngf, output_nc, 3, padding=1, padding_mode="reflect"), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.stem(x)
        return self.head(torch.cat([skip, self.up(self.blocks(self.down(skip)))], 1))


# role="translator" is what makes it a generator for pix2pix/cyclegan, `transgan export` and `translate`.
# The keyword names follow the built-ins (input_nc, output_nc, ngf, norm, init, init_gain): the tasks pass
# each network the options it declares, so these receive --ngf, --norm, --init and --init-gain.
@NETWORKS.register("tiny_translator", role="translator", family="tiny")
def tiny_translator(
    input_nc: int = 3,
    output_nc: int = 3,
    ngf: int = 16,
    n_blocks: int = 2,
    norm: str = "instance",
    init: str = "normal",
    init_gain: float = 0.02,
) -> nn.Module:
    """A small translator for quick experiments: ~55k parameters at ngf 16."""
    if ngf < 1 or n_blocks < 0:
        raise TransganError(f"tiny_translator: ngf {ngf} must be >= 1 and n_blocks {n_blocks} >= 0")
    return init_weights(TinyTranslator(input_nc, output_nc, ngf, n_blocks, norm), init, init_gain)
