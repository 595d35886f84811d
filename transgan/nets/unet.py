"""U-Net translator (pix2pix's generator), nested like the reference so its state dicts load directly."""

from __future__ import annotations

import torch
from torch import nn

from transgan.errors import TransganError
from transgan.nets.layers import init_weights, norm_layer, use_bias
from transgan.registry import NETWORKS


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down (conv4x4 s2), the inner levels, up (convT4x4 s2); its input is concatenated
    to its output, except at the outermost level, which produces the image."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        dropout: bool = False,
    ):
        super().__init__()
        self.outermost = outermost
        bias = use_bias(norm)
        make_norm = norm_layer(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        if outermost:
            # The output conv always has a bias: no norm follows it.
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            model = [downrelu, downconv, uprelu, upconv, make_norm(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            model = [downrelu, downconv, make_norm(inner_nc), submodule, uprelu, upconv, make_norm(outer_nc)]
            if dropout:
                model.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


@NETWORKS.register("unet", role="translator", family="unet", test_config={"ngf": 4, "num_downs": 5})
class UnetGenerator(nn.Module):
    """U-Net translator with `num_downs` stride-2 levels (pix2pix's generator).

    The bottleneck is 1x1 for inputs of 2**num_downs pixels; any height and width that are multiples of
    2**num_downs work (`size_multiple`).
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        num_downs: int = 8,
        norm: str = "batch",
        dropout: bool = False,
        init: str = "normal",
        init_gain: float = 0.02,
    ):
        super().__init__()
        if num_downs < 5:
            raise TransganError(f"num_downs {num_downs} is too small for a U-Net; use 5 or more")
        self.size_multiple = 2**num_downs
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, dropout=dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(
            output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm=norm
        )
        init_weights(self, init, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


NETWORKS.add_variant("unet_256", "unet", "The pix2pix generator for 256x256 images (8 levels).", num_downs=8)
NETWORKS.add_variant("unet_128", "unet", "The pix2pix generator for 128x128 images (7 levels).", num_downs=7)
