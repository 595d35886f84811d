"""FIR resampling and the resampling convolutions of StyleGAN2-ADA, in plain PyTorch (exportable to ONNX).

Semantics follow the official upfirdn2d / conv2d_resample: a separable low-pass filter (default [1, 3, 3, 1],
normalised to sum 1) applied as a true convolution after zero insertion (up) or before subsampling (down),
with explicit zero padding. Up-sampling convolutions are a stride-2 transposed convolution followed by the
filter with gain up^2, so their 3x3 kernels act as convolutions (not correlations, unlike F.conv2d).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

FIR_TAPS = (1, 3, 3, 1)
LRELU_GAIN = math.sqrt(2.0)


def fir_filter(taps: tuple[float, ...] = FIR_TAPS) -> Tensor:
    """The 2D filter outer(taps, taps) / its sum, float32 (the official setup_filter for short filters)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: Tensor, f: Tensor, up: int = 1, down: int = 1, padding: tuple[int, int, int, int] = (0, 0, 0, 0), gain=1.0
) -> Tensor:
    """Upsample by zero insertion, pad (x0, x1, y0, y1; negative crops), convolve with f * gain, subsample."""
    N, C, H, W = x.shape
    if up > 1:
        # Zero insertion: each pixel followed by up - 1 zeros along both axes.
        x = x.reshape(N, C, H, 1, W, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(N, C, H * up, W * up)
    x0, x1, y0, y1 = padding
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    if min(padding) < 0:
        x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    # A true convolution: F.conv2d correlates, so the filter is flipped (the [1,3,3,1] filter is symmetric).
    weight = (f * gain).flip([0, 1]).to(x.dtype)[None, None].expand(C, 1, *f.shape)
    # Filtering then keeping every down-th pixel equals a strided filter.
    return F.conv2d(x, weight, stride=down, groups=C)


def upsample2d(x: Tensor, f: Tensor) -> Tensor:
    """2x up-sampling with the filter (the official upsample2d: padding 2/1, gain 4)."""
    fw = f.shape[-1]
    p0, p1 = (fw + 1) // 2, (fw - 2) // 2
    return upfirdn2d(x, f, up=2, padding=(p0, p1, p0, p1), gain=4.0)


def downsample2d(x: Tensor, f: Tensor) -> Tensor:
    """2x down-sampling with the filter (the official downsample2d: padding 1/1 for a 4-tap filter)."""
    fw = f.shape[-1]
    p0, p1 = (fw - 1) // 2, (fw - 2) // 2
    return upfirdn2d(x, f, down=2, padding=(p0, p1, p0, p1))


def conv2d_resample(
    x: Tensor, w: Tensor, f: Tensor | None = None, up: int = 1, down: int = 1, padding: int = 0, flip_weight=True
) -> Tensor:
    """Convolution with optional 2x up- or down-sampling, as the official conv2d_resample (groups 1).

    flip_weight True: correlation (F.conv2d); False: convolution. Padding is relative to the up-sampled input.
    """
    kh, kw = w.shape[-2:]
    fw = 1 if f is None else f.shape[-1]
    p0 = p1 = padding
    if up > 1:
        p0, p1 = p0 + (fw + up - 1) // 2, p1 + (fw - up) // 2
    if down > 1:
        p0, p1 = p0 + (fw - down + 1) // 2, p1 + (fw - down) // 2
    if not flip_weight and up == 1:
        w = w.flip([2, 3])
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        # 1x1 with down-sampling: filter and subsample first, then the cheap conv.
        return F.conv2d(upfirdn2d(x, f, down=down, padding=(p0, p1, p0, p1)), w)
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        return upfirdn2d(F.conv2d(x, w), f, up=up, padding=(p0, p1, p0, p1), gain=up**2)
    if down > 1 and up == 1:
        return F.conv2d(upfirdn2d(x, f, padding=(p0, p1, p0, p1)), w, stride=down)
    if up > 1:
        # Transposed stride-2 conv (the kernel acts as a convolution unless flip_weight), then the filter.
        if flip_weight:
            w = w.flip([2, 3])
        p0, p1 = p0 - (kw - 1), p1 - (kw - up)
        pt = max(min(-p0, -p1), 0)
        x = F.conv_transpose2d(x, w.transpose(0, 1), stride=up, padding=pt)
        return upfirdn2d(x, f, padding=(p0 + pt, p1 + pt, p0 + pt, p1 + pt), gain=up**2)
    return F.conv2d(x, w, padding=padding)


def bias_act(x: Tensor, b: Tensor | None, act: str = "linear", gain: float = 1.0, clamp: float | None = None) -> Tensor:
    """x + b, then the activation ('lrelu': slope 0.2 times sqrt 2) times gain, then clamped to +-clamp."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, *([1] * (x.dim() - 2)))
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = gain * LRELU_GAIN
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x
