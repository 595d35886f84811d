"""GAN Compression's compressed ResNet translator (sub_mobile_resnet), keys identical to its checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from transgan.errors import TransganError
from transgan.nets.layers import init_weights, norm_layer, padding_layer, use_bias
from transgan.registry import NETWORKS

N_STAGES = 8


def parse_channels(channels: str) -> list[int]:
    """'16_16_32_16_32_32_16_16' -> [16, 16, ...]: GAN Compression's config_str, one width per stage."""
    try:
        widths = [int(part) for part in channels.split("_")]
    except ValueError:
        widths = []
    if len(widths) != N_STAGES or min(widths) <= 0:
        raise TransganError(
            f"channels '{channels}' must be {N_STAGES} positive integers joined by '_', like '16_16_32_16_32_32_16_16'"
        )
    return widths


class SeparableConv2d(nn.Module):
    """Depthwise kxk conv, InstanceNorm, pointwise 1x1 conv: the cheap replacement for a kxk conv.

    As in GAN Compression, both convs keep a bias and the inner norm is always InstanceNorm without
    affine parameters, whatever the network's `norm`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 0):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, groups=in_channels),
            norm_layer("instance")(in_channels),  # the one InstanceNorm factory (layers.InstanceNorm2d)
            nn.Conv2d(in_channels, out_channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MobileResnetBlock(nn.Module):
    """x + conv_block(x) with separable convs; the hidden width `hidden` may differ from `dim` (pruning)."""

    def __init__(self, dim: int, hidden: int, padding: str, norm: str, dropout: bool):
        super().__init__()
        make_norm = norm_layer(norm)
        conv_padding = 1 if padding == "zero" else 0
        # The dropout slot is always there (Identity when off) so the second conv keeps index 6 either way,
        # matching GAN Compression, which always inserts nn.Dropout(rate).
        self.conv_block = nn.Sequential(
            *padding_layer(padding, 1),
            SeparableConv2d(dim, hidden, 3, conv_padding),
            make_norm(hidden),
            nn.ReLU(True),
            nn.Dropout(0.5) if dropout else nn.Identity(),
            *padding_layer(padding, 1),
            SeparableConv2d(hidden, dim, 3, conv_padding),
            make_norm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


@NETWORKS.register(
    "mobile_resnet", role="translator", family="mobile_resnet", test_config={"channels": "4_4_4_4_4_4_4_4"}
)
class MobileResnetGenerator(nn.Module):
    """GAN Compression's sub_mobile_resnet: a ResNet translator with per-stage widths and separable convs.

    Widths from channels c0..c7: stem c0, downsampling 2*c1 and 4*c2 (the residual width), block hidden
    widths 4*c3, 4*c4, 4*c5 (each for a third of the blocks), upsampling 2*c6 and c7; the default channels
    are GAN Compression's horse2zebra model's. Input is clamped to [-1, 1] as in GAN Compression. Height
    and width: multiples of 4.
    """

    size_multiple = 4

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        channels: str = "16_16_32_16_32_32_16_16",
        norm: str = "instance",
        n_blocks: int = 9,
        padding: str = "reflect",
        dropout: bool = False,
        init: str = "normal",
        init_gain: float = 0.02,
    ):
        super().__init__()
        c = parse_channels(channels)
        if n_blocks < 1:
            raise TransganError(f"n_blocks {n_blocks} must be at least 1")
        bias = use_bias(norm)
        make_norm = norm_layer(norm)
        padding_layer(padding, 1)  # validates the option before anything is built
        width = 4 * c[2]
        model: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, c[0], kernel_size=7, bias=bias),
            make_norm(c[0]),
            nn.ReLU(True),
            nn.Conv2d(c[0], 2 * c[1], kernel_size=3, stride=2, padding=1, bias=bias),
            make_norm(2 * c[1]),
            nn.ReLU(True),
            nn.Conv2d(2 * c[1], width, kernel_size=3, stride=2, padding=1, bias=bias),
            make_norm(width),
            nn.ReLU(True),
        ]
        for i in range(n_blocks):
            # Blocks come in three groups, each with its own hidden width (i // 3 for 9 blocks).
            hidden = 4 * c[3 + i * 3 // n_blocks]
            model.append(MobileResnetBlock(width, hidden, padding, norm, dropout))
        model += [
            nn.ConvTranspose2d(width, 2 * c[6], 3, stride=2, padding=1, output_padding=1, bias=bias),
            make_norm(2 * c[6]),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * c[6], c[7], 3, stride=2, padding=1, output_padding=1, bias=bias),
            make_norm(c[7]),
            nn.ReLU(True),
            nn.ReflectionPad2d(3),
            nn.Conv2d(c[7], output_nc, kernel_size=7),
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*model)
        init_weights(self, init, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.clamp(-1, 1))
