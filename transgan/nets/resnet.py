"""ResNet translator (CycleGAN's generator), laid out like the reference so its state dicts load directly."""

from __future__ import annotations

import torch
from torch import nn

from transgan.nets.antialias import Downsample, Upsample
from transgan.nets.layers import init_weights, norm_layer, padding_layer, use_bias
from transgan.registry import NETWORKS


class ResnetBlock(nn.Module):
    """x + conv_block(x): pad, conv3x3, norm, ReLU, [Dropout], pad, conv3x3, norm."""

    def __init__(self, dim: int, padding: str, norm: str, dropout: bool):
        super().__init__()
        bias = use_bias(norm)
        make_norm = norm_layer(norm)
        # With 'zero' padding the conv pads itself and there is no pad module, as in the reference.
        conv_padding = 1 if padding == "zero" else 0
        block: list[nn.Module] = [
            *padding_layer(padding, 1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=conv_padding, bias=bias),
            make_norm(dim),
            nn.ReLU(True),
        ]
        if dropout:
            block.append(nn.Dropout(0.5))
        block += [
            *padding_layer(padding, 1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=conv_padding, bias=bias),
            make_norm(dim),
        ]
        self.conv_block = nn.Sequential(*block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


@NETWORKS.register("resnet", role="translator", family="resnet", test_config={"ngf": 4, "n_blocks": 1})
class ResnetGenerator(nn.Module):
    """ResNet translator with `n_blocks` residual blocks (CycleGAN's generator).

    c7s1-ngf, two stride-2 downsamplings, the residual blocks, two upsamplings, c7s1-output, tanh. Input height
    and width must be multiples of 4 (two stride-2 stages), see `size_multiple`.

    `antialias` and `antialias_up` give CUT's layout: each stride-2 conv becomes a stride-1 conv followed by a
    blur-pool Downsample, each transposed conv an Upsample followed by a 3x3 conv (the official CUT code
    without --no_antialias / --no_antialias_up; with both off the layout is CycleGAN's).
    """

    size_multiple = 4

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        norm: str = "instance",
        dropout: bool = False,
        n_blocks: int = 9,
        padding: str = "reflect",
        init: str = "normal",
        init_gain: float = 0.02,
        antialias: bool = False,
        antialias_up: bool = False,
    ):
        super().__init__()
        bias = use_bias(norm)
        make_norm = norm_layer(norm)
        padding_layer(padding, 1)  # validates the option before anything is built
        model: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=bias),
            make_norm(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            channels = ngf * 2**i
            stride = 1 if antialias else 2
            model += [
                nn.Conv2d(channels, channels * 2, kernel_size=3, stride=stride, padding=1, bias=bias),
                make_norm(channels * 2),
                nn.ReLU(True),
                *([Downsample(channels * 2)] if antialias else []),
            ]
        model += [ResnetBlock(ngf * 4, padding, norm, dropout) for _ in range(n_blocks)]
        for i in range(2):
            channels = ngf * 2 ** (2 - i)
            if antialias_up:
                model += [Upsample(channels), nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1, bias=bias)]
            else:
                model.append(
                    nn.ConvTranspose2d(
                        channels, channels // 2, kernel_size=3, stride=2, padding=1, output_padding=1, bias=bias
                    )
                )
            model += [make_norm(channels // 2), nn.ReLU(True)]
        # The last conv always has a bias: no norm follows it.
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*model)
        init_weights(self, init, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def encode(self, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """The outputs of `model[i]` for each i in `layers` (ascending), running only up to the last one: the
        features CUT's PatchNCE loss compares (its `netG(x, layers, encode_only=True)`). The ReLUs are in
        place, as in the reference, so a norm output followed by a ReLU holds post-ReLU values."""
        features, last = [], max(layers)
        for index, layer in enumerate(self.model[: last + 1]):
            x = layer(x)
            if index in layers:
                features.append(x)
        return features

    def forward_and_encode(self, x: torch.Tensor, layers: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """forward(x) and encode(x, layers) from one pass: the features hold the values encode returns (the last
        one is copied when the next layer would change it in place, since encode stops before that layer)."""
        features, last = [], max(layers)
        for index, layer in enumerate(self.model):
            x = layer(x)
            if index in layers:
                in_place = index == last and getattr(self.model[index + 1], "inplace", False)
                features.append(x.clone() if in_place else x)
        return x, features

    def feature_widths(self, layers: list[int]) -> list[int]:
        """The channel count of `model[i]`'s output for each i in `layers` (the input's before the first conv)."""
        widths, width = [], self.model[1].in_channels
        for index, layer in enumerate(self.model):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                width = layer.out_channels
            if index in layers:
                widths.append(width)
        return widths


NETWORKS.add_variant(
    "resnet_9blocks", "resnet", "The CycleGAN generator for 256x256 images (9 residual blocks).", n_blocks=9
)
NETWORKS.add_variant(
    "resnet_6blocks", "resnet", "The CycleGAN generator for 128x128 images (6 residual blocks).", n_blocks=6
)
NETWORKS.add_variant(
    "resnet_9blocks_antialias",
    "resnet",
    "CUT's generator: 9 residual blocks, blur-pool downsampling and upsampling.",
    n_blocks=9,
    antialias=True,
    antialias_up=True,
)
NETWORKS.add_variant(
    "resnet_6blocks_antialias",
    "resnet",
    "CUT's generator with 6 residual blocks, blur-pool downsampling and upsampling.",
    n_blocks=6,
    antialias=True,
    antialias_up=True,
)
