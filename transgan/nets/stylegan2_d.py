"""StyleGAN2 discriminator as NVIDIA's StyleGAN2-ADA defines it: 'resnet', 'skip' or 'orig' blocks with FIR
down-sampling (filter, then a stride-2 conv; 1x1 skips filter first), minibatch std in its strided groups,
and the conditional form's label-mapping network whose output (cmap) the logit is projected onto."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from transgan.errors import TransganError
from transgan.nets.equalized import EqualLinear
from transgan.nets.fir import bias_act, conv2d_resample, downsample2d, fir_filter
from transgan.nets.generator_base import check_labels
from transgan.nets.layers import check_choice
from transgan.nets.stylegan2 import ARCHITECTURES, MappingNetwork, fp16_resolution, widths
from transgan.registry import NETWORKS

TINY_D = {"channel_base": 64, "channel_max": 8, "image_size": 16, "num_classes": 3}


class Conv2dLayer(nn.Module):
    """Equalised-lr conv with optional FIR down-sampling, bias, activation and clamp (official Conv2dLayer)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias=True, activation="linear", down=1, conv_clamp=None):
        super().__init__()
        self.activation, self.down, self.conv_clamp, self.padding = activation, down, conv_clamp, kernel // 2
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_ch * kernel * kernel)

    def forward(self, x: Tensor, gain: float = 1) -> Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample(x, w, self.resample_filter, down=self.down, padding=self.padding)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, self.activation, gain, clamp)


class DiscriminatorBlock(nn.Module):
    """fromRGB (first block, or every block for 'skip'), conv0, conv1 down 2; 'resnet' adds a 1x1 skip."""

    def __init__(
        self, in_ch: int, tmp_ch: int, out_ch: int, img_channels: int, architecture: str, conv_clamp, use_fp16: bool
    ):
        super().__init__()
        self.in_ch, self.architecture, self.use_fp16 = in_ch, architecture, use_fp16
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        if in_ch == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_ch, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_ch, tmp_ch, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_ch, out_ch, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_ch, out_ch, 1, bias=False, down=2)

    def forward(self, x: Tensor | None, img: Tensor | None, force_fp32: bool) -> tuple[Tensor, Tensor | None]:
        device = (x if x is not None else img).device
        fp16 = self.use_fp16 and not force_fp32 and device.type == "cuda"
        dtype = torch.float16 if fp16 else torch.float32
        x = None if x is None else x.to(dtype)
        if self.in_ch == 0 or self.architecture == "skip":
            img = img.to(dtype)  # as the official: the skip image is down-sampled in the block's precision
            y = self.fromrgb(img)
            x = y if x is None else x + y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
        if self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = y + self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        else:
            x = self.conv1(self.conv0(x))
        return x, img


class MinibatchStd(nn.Module):
    """The official minibatch std: groups of min(group_size, N) samples taken with stride N / G."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: Tensor) -> Tensor:
        N, C, H, W = x.shape
        G = min(self.group_size, N)
        if N % G:
            raise TransganError(f"minibatch std: a batch of {N} does not split into groups of {G}; use a multiple")
        F_ = self.num_channels
        y = x.reshape(G, -1, F_, C // F_, H, W)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4]).reshape(-1, F_, 1, 1)
        return torch.cat([x, y.repeat(G, 1, H, W)], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """At 4x4: (skip: fromRGB), minibatch std, conv, fc, out; conditional: projection onto cmap."""

    def __init__(self, in_ch: int, cmap_dim: int, img_channels: int, architecture: str, mbstd_group_size: int,
                 mbstd_channels: int, conv_clamp):  # fmt: skip
        super().__init__()
        self.cmap_dim, self.architecture = cmap_dim, architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_ch, 1, activation="lrelu")
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_channels) if mbstd_channels > 0 else None
        self.conv = Conv2dLayer(in_ch + mbstd_channels, in_ch, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.fc = EqualLinear(in_ch * 16, in_ch, activation="lrelu")
        self.out = EqualLinear(in_ch, cmap_dim or 1)

    def forward(self, x: Tensor, img: Tensor | None, cmap: Tensor | None) -> Tensor:
        x = x.float()
        if self.architecture == "skip":
            x = x + self.fromrgb(img.float())
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / math.sqrt(self.cmap_dim))
        return x


@NETWORKS.register("stylegan2_discriminator", role="discriminator", family="stylegan", test_config=TINY_D)
class StyleGAN2Discriminator(nn.Module):
    """StyleGAN2-ADA's Discriminator (official numbers and state-dict names): blocks b{res} .. b8, epilogue b4,
    and for num_classes > 0 the label mapping (`mapping`, 8 layers at lr 0.01 by default) giving cmap.
    Returns logits (N,); labels are class indices (or soft rows), fed as the official one-hot c."""

    def __init__(
        self,
        num_classes: int = 0,
        image_size: int = 256,
        channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        architecture: str = "resnet",
        mbstd_group_size: int = 4,
        mbstd_channels: int = 1,
        mapping_layers: int = 8,
        cmap_dim: int = 0,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        check_choice("architecture", architecture, ARCHITECTURES)
        if image_size < 8 or image_size & (image_size - 1):
            raise TransganError(f"stylegan2_discriminator: image_size {image_size} must be a power of two, >= 8")
        if mbstd_group_size < 1 or mbstd_channels < 0:
            raise TransganError("stylegan2_discriminator: mbstd_group_size >= 1 and mbstd_channels >= 0")
        self.num_classes, self.image_size, self.channels = num_classes, image_size, channels
        self.block_resolutions = [2**i for i in range(int(math.log2(image_size)), 2, -1)]
        width = widths(self.block_resolutions + [4], channel_base, channel_max)
        self.cmap_dim = (cmap_dim or width[4]) if num_classes else 0
        fp16_res = fp16_resolution(image_size, num_fp16_res)
        for res in self.block_resolutions:
            in_ch = width[res] if res < image_size else 0
            block = DiscriminatorBlock(
                in_ch, width[res], width[res // 2], channels, architecture, conv_clamp, res >= fp16_res
            )
            setattr(self, f"b{res}", block)
        if num_classes:
            self.mapping = MappingNetwork(0, num_classes, self.cmap_dim, None, mapping_layers)
        self.b4 = DiscriminatorEpilogue(
            width[4], self.cmap_dim, channels, architecture, mbstd_group_size, mbstd_channels, conv_clamp
        )

    def discriminator_blocks(self) -> list[nn.Module]:
        """Freeze-D blocks, input first: b{res} .. b8, then the epilogue b4 with the label mapping."""
        epilogue = [self.b4, *([self.mapping] if self.num_classes else [])]
        return [*(getattr(self, f"b{res}") for res in self.block_resolutions), nn.ModuleList(epilogue)]

    def forward(self, images: Tensor, labels: Tensor | None = None, force_fp32: bool = False) -> Tensor:
        check_labels(self, labels)
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise TransganError(
                f"{type(self).__name__} takes {self.image_size}x{self.image_size} images, got "
                f"{images.shape[-2]}x{images.shape[-1]}"
            )
        x, img = None, images
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, force_fp32)
        cmap = self.mapping(None, labels) if self.num_classes else None
        return self.b4(x, img, cmap).flatten()
