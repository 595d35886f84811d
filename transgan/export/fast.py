"""CPU rewrites of a trained generator: same outputs (fp32 rounding apart), fewer and better-shaped operations.

Measured on a 2-core AVX2 CPU (ONNX Runtime and PyTorch eager alike): a 3x3 conv with 256 channels at 64x64
runs ~2.2x faster as Winograd F(4x4, 3x3), and a 7x7 conv to 3 output channels ~2.5-3x faster as the
equivalent transposed conv (its GEMM has 3*49 rows instead of 3, which CPU kernels pad to 8 or 16).
GPUs already pick Winograd in cuDNN/TensorRT, so these rewrites are for CPU inference only.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

# Winograd F(4x4, 3x3) (Lavin & Gray 2016): Y = A^T [(G g G^T) * (B^T d B)] A on 6x6 input tiles.
_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]  # fmt: skip
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]  # fmt: skip
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
# Below this width the tile transforms cost more than the 4x fewer multiplies in the GEMM save.
WINOGRAD_MIN_CHANNELS = 64
FEW_OUTPUTS = 4  # convs with at most this many output channels become transposed convs


class WinogradConv2d(nn.Module):
    """A 3x3, stride 1 conv as Winograd F(4x4, 3x3): one batched GEMM of 36 (Cout x Cin) products.

    Any height and width: the output is computed on a grid of 4x4 tiles (zero-padded) and cropped.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        bt, g, at = (torch.tensor(m, dtype=torch.float64) for m in (_BT, _G, _AT))
        weight = conv.weight.detach().double()
        out_channels, in_channels = weight.shape[:2]
        # Transforms are computed in float64 once, so the only fp32 rounding is at run time.
        kernel = torch.einsum("ia,kcab,jb->ijkc", g, weight, g).reshape(36, out_channels, in_channels)
        self.register_buffer("kernel", kernel.float())
        # Input transform B^T d B as a 6x6, stride-4 conv with 36 fixed filters, output transform as a 16x36 matrix.
        self.register_buffer("input_transform", torch.einsum("ia,jb->ijab", bt, bt).reshape(36, 1, 6, 6).float())
        self.register_buffer("output_transform", torch.einsum("ri,sj->rsij", at, at).reshape(16, 36).float())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(out_channels)
        self.register_buffer("bias", bias.float().reshape(1, out_channels, 1, 1))
        self.padding = tuple(conv.padding)  # zero padding of the original conv (reflect padding is a layer before)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = self.padding
        n, c, height, width = x.shape
        h, w = height + 2 * pad_h - 2, width + 2 * pad_w - 2  # output size
        tiles_h, tiles_w = (h + 3) // 4, (w + 3) // 4
        x = F.pad(x, (pad_w, pad_w + 4 * tiles_w - w, pad_h, pad_h + 4 * tiles_h - h))
        v = F.conv2d(x.reshape(n * c, 1, 4 * tiles_h + 2, 4 * tiles_w + 2), self.input_transform, stride=4)
        tiles = tiles_h * tiles_w
        v = v.reshape(n, c, 36, tiles).permute(2, 1, 0, 3).reshape(36, c, n * tiles)
        m = torch.matmul(self.kernel, v)  # (36, Cout, N * tiles): the only big GEMM
        y = torch.matmul(self.output_transform, m.reshape(36, -1)).reshape(16, self.out_channels, n, tiles)
        y = y.permute(2, 1, 0, 3).reshape(n, self.out_channels * 16, tiles_h, tiles_w)
        return F.pixel_shuffle(y, 4)[:, :, :h, :w] + self.bias


class FewOutputConv2d(nn.Module):
    """A stride-1 conv with very few output channels as the transposed conv that computes the same thing."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.register_buffer("weight", conv.weight.detach().flip(2, 3).transpose(0, 1).contiguous().float())
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.float())
        kernel_h, kernel_w = conv.kernel_size
        self.padding = (kernel_h - 1 - conv.padding[0], kernel_w - 1 - conv.padding[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight, self.bias, padding=self.padding)


def _plain(conv: nn.Conv2d) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(conv.padding, tuple)
    )


def rewrite(conv: nn.Module) -> nn.Module | None:
    """The faster equivalent of `conv`, or None where no rewrite pays off."""
    if not isinstance(conv, nn.Conv2d) or not _plain(conv):
        return None
    if conv.kernel_size == (3, 3) and min(conv.in_channels, conv.out_channels) >= WINOGRAD_MIN_CHANNELS:
        return WinogradConv2d(conv)
    if conv.out_channels <= FEW_OUTPUTS and conv.kernel_size[0] > 1 and conv.padding[0] < conv.kernel_size[0]:
        if conv.padding[1] < conv.kernel_size[1]:
            return FewOutputConv2d(conv)
    return None


def optimize_for_cpu(net: nn.Module) -> tuple[nn.Module, list[str]]:
    """A copy of `net` (eval mode) with its convs rewritten for CPU inference, and the names of the rewrites.

    The original is left untouched; training code must keep using it (the rewrites hold no parameters).
    """
    net = copy.deepcopy(net).float().eval()
    applied: set[str] = set()
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            faster = rewrite(child)
            if faster is not None:
                setattr(parent, name, faster)
                applied.add("winograd_f4x4_3x3" if isinstance(faster, WinogradConv2d) else "few_output_conv_transpose")
    return net, sorted(applied)
