"""Layers StyleGAN and ProGAN share: equalised-lr linear/conv, pixel norm, minibatch std, class vectors, growing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transgan.errors import TransganError

ACTIVATIONS = ("linear", "lrelu")
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # He gain: keeps the activations' second moment through a leaky ReLU


def width_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """The StyleGAN/ProGAN width rule: channel_base / resolution feature maps, at most channel_max (at least 1)."""
    return max(1, min(channel_base // resolution, channel_max))


def activate(x: Tensor, activation: str) -> Tensor:
    """'linear' (identity) or 'lrelu': leaky ReLU (slope 0.2) times sqrt(2), StyleGAN2's bias_act convention."""
    if activation == "lrelu":
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
    return x


def check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise TransganError(f"activation '{activation}' is not supported; choose one of: {', '.join(ACTIVATIONS)}")
    return activation


class EqualLinear(nn.Module):
    """Fully connected layer with an equalised learning rate (Karras et al. 2018).

    The weight is stored as N(0, 1) / lr_mul and scaled by lr_mul / sqrt(fan_in) at run time, so Adam's
    per-parameter step sizes are the same for every layer; `lr_mul` < 1 slows a layer (StyleGAN's mapping
    network uses 0.01). The bias is stored divided by lr_mul for the same reason.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str = "linear",
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = check_activation(activation)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.bias_gain = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.bias_gain
        return activate(F.linear(x, self.weight * self.weight_gain, bias), self.activation)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, activation={self.activation}, gain={self.weight_gain:.3g}"


class EqualConv2d(nn.Module):
    """Convolution (stride 1, 'same' zero padding) with an equalised learning rate; see EqualLinear."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        lr_mul: float = 1.0,
        activation: str = "linear",
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.activation = check_activation(activation)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_channels * kernel_size * kernel_size)
        self.bias_gain = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.bias_gain
        x = F.conv2d(x, self.weight * self.weight_gain, bias, padding=self.kernel_size // 2)
        return activate(x, self.activation)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"activation={self.activation}, gain={self.weight_gain:.3g}"
        )


def pixel_norm(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """x / sqrt(mean(x^2 over `dim`) + eps): ProGAN's pixelwise feature normalisation (and StyleGAN's z norm)."""
    return x * torch.rsqrt(x.square().mean(dim=dim, keepdim=True) + eps)


class PixelNorm(nn.Module):
    """Module form of `pixel_norm` over the channel dimension."""

    def forward(self, x: Tensor) -> Tensor:
        return pixel_norm(x)


def largest_divisor_at_most(n: int, limit: int) -> int:
    for candidate in range(min(n, limit), 0, -1):
        if n % candidate == 0:
            return candidate
    return 1


class MinibatchStd(nn.Module):
    """Minibatch standard deviation (ProGAN; StyleGAN2's grouped form): append `num_channels` feature maps.

    The batch is split into groups of `group_size` samples (sample n joins group n % (N / group_size), as in
    StyleGAN2); the channels into `num_channels` slices. For each group and slice: the standard deviation of
    every feature over the group's samples (biased, + 1e-8 inside the root), averaged over the slice's channels
    and all pixels. Each sample gets its group's values as constant extra maps, so D can see a batch with too
    little variety. A batch not divisible by `group_size` uses the largest group size that divides it.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        if group_size < 1 or num_channels < 1:
            raise TransganError(
                f"minibatch std: group size {group_size} and channels {num_channels} must both be at least 1"
            )
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: Tensor) -> Tensor:
        N, C, H, W = x.shape
        G = largest_divisor_at_most(N, self.group_size)
        F_ = self.num_channels
        if C % F_:
            raise TransganError(f"minibatch std: {C} feature channels do not split into {F_} groups")
        y = x.reshape(G, -1, F_, C // F_, H, W).float()  # [G, n, F, c, H, W]
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [n, F, c, H, W]
        y = y.mean(dim=[2, 3, 4])  # [n, F]
        y = y.reshape(-1, F_, 1, 1).repeat(G, 1, H, W).to(x.dtype)  # sample n gets group n % (N / G)
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


def class_vectors(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot rows (N, num_classes) for integer labels; soft labels (N, num_classes) pass through as weights."""
    if labels.is_floating_point():
        return labels.to(dtype)
    # Indexing an identity matrix exports to ONNX as a Gather, unlike one_hot.
    return torch.eye(num_classes, dtype=dtype, device=labels.device)[labels]


class ClassEmbedding(nn.Module):
    """A learned vector per class (equalised: stored N(0, 1) / lr_mul, scaled by lr_mul); soft labels mix rows."""

    def __init__(self, num_classes: int, dim: int, lr_mul: float = 1.0):
        super().__init__()
        self.num_classes, self.dim = num_classes, dim
        self.weight = nn.Parameter(torch.randn(num_classes, dim) / lr_mul)
        self.gain = lr_mul

    def forward(self, labels: Tensor) -> Tensor:
        weight = self.weight * self.gain
        if labels.is_floating_point():
            return labels.to(weight.dtype) @ weight
        return weight[labels]


def upsample2x(x: Tensor, mode: str = "bilinear") -> Tensor:
    """Double the resolution: 'bilinear' (StyleGAN2's [1,3,3,1] filter, up to the border) or 'nearest' (ProGAN)."""
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def downsample2x(x: Tensor) -> Tensor:
    """Halve the resolution by 2x2 average pooling (ProGAN's downscale)."""
    return F.avg_pool2d(x, 2)


def fade_images(images: Tensor, alpha: float) -> Tensor:
    """Real images as a growing D sees them during a fade-in: lerp(upsample(downsample(x)), x, alpha).

    At alpha 0 they carry only the previous stage's detail, like the old generator's upsampled output.
    """
    if alpha >= 1.0:
        return images
    coarse = upsample2x(downsample2x(images), mode="nearest")
    return torch.lerp(coarse, images, float(alpha))


class Growing:
    """Mixin of progressively grown networks: an active depth and a fade-in alpha, saved with the weights.

    Resolution stages are numbered 0 .. stages - 1; stage s works at `base * 2**s` pixels. `depth` is the
    newest active stage and `alpha` in [0, 1] blends it in: 0 is exactly the previous stage (upsampled),
    1 is the new stage alone. A freshly built network is fully grown (depth stages - 1, alpha 1).
    The pair lives in plain attributes (so forward passes, torch.export and ONNX see constants) and travels in
    `state_dict()` as the float64 tensor `_extra_state` = [depth, alpha], so model files, checkpoints and
    `load_state_dict` restore it exactly. In-place buffer copies (an EMA update) do not carry it: call
    `set_stage` on every copy.
    """

    stages: int
    base: int
    depth: int
    alpha: float

    def _init_growing(self, base: int, stages: int) -> None:
        self.base, self.stages = base, stages
        self.depth, self.alpha = stages - 1, 1.0

    @property
    def resolution(self) -> int:
        """The image size at the active depth."""
        return self.base * 2**self.depth

    def stage_resolution(self, stage: int) -> int:
        return self.base * 2**stage

    def set_stage(self, depth: int, alpha: float = 1.0) -> None:
        """Activate stages 0..depth, the last one faded in by `alpha` (ignored at depth 0, which has no parent)."""
        depth, alpha = int(depth), float(alpha)
        if not 0 <= depth < self.stages:
            raise TransganError(
                f"{type(self).__name__}: stage {depth} does not exist; it has stages 0..{self.stages - 1} "
                f"({self.stage_resolution(0)}..{self.stage_resolution(self.stages - 1)} px)"
            )
        if not 0.0 <= alpha <= 1.0:
            raise TransganError(f"{type(self).__name__}: fade-in alpha {alpha} must lie in [0, 1]")
        self.depth, self.alpha = depth, alpha

    def grow(self) -> None:
        """Add the next stage with alpha 0 (the fade-in starts); raises when already fully grown."""
        if self.depth + 1 >= self.stages:
            raise TransganError(f"{type(self).__name__} is fully grown ({self.resolution} px): nothing to grow")
        self.set_stage(self.depth + 1, 0.0)

    @property
    def fading(self) -> bool:
        return self.depth > 0 and self.alpha < 1.0

    def get_extra_state(self) -> Tensor:
        return torch.tensor([float(self.depth), self.alpha], dtype=torch.float64)

    def set_extra_state(self, state: Tensor) -> None:
        values = torch.as_tensor(state, dtype=torch.float64).flatten().tolist()
        self.set_stage(int(values[0]), values[1])
