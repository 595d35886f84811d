"""Adaptive discriminator augmentation (Karras et al. 2020, StyleGAN2-ADA): the 'bgc' pipeline (blit, geometric,
colour) with augmentation probability p, and the controller that moves p from D's overfitting on reals."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from transgan.errors import TransganError

# The paper's defaults: strengths of each transform (every probability multiplier is 1 in 'bgc').
XINT_MAX = 0.125  # integer translation, as a fraction of the side
SCALE_STD = 0.2  # log2 std of isotropic scaling
ROTATE_MAX = 1.0  # arbitrary rotation, 1 = a full turn
ANISO_STD = 0.2  # log2 std of anisotropic scaling
XFRAC_STD = 0.125  # std of fractional translation, as a fraction of the side
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5  # log2 std
HUE_MAX = 1.0  # 1 = a full turn around the luma axis
SATURATION_STD = 1.0  # log2 std

ADA_TARGET = 0.6  # the r_t the controller aims at
ADA_INTERVAL = 4  # steps between two adjustments of p
ADA_KIMG = 500.0  # thousands of real images over which p may move by 1

# Low-pass filter of the Symlet-6 wavelet (its published decomposition coefficients): geometric transforms are
# resampled at twice the resolution through it, so rotations and fractional shifts do not alias.
SYM6 = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)


def sym6_filter() -> Tensor:
    """The 12-tap filter normalised to unit DC gain, in float32 (as the reference normalises it)."""
    taps = torch.tensor(SYM6, dtype=torch.float32)
    return taps / taps.sum()


class Draws:
    """The random numbers of one pipeline call: from the global CPU generator (drawn on the CPU whatever the
    images' device, so a seed gives the same augmentation everywhere and a checkpoint's RNG state resumes it),
    or replayed from a list (to check the transforms against recorded draws). `made` keeps them in order."""

    def __init__(self, replay: Iterable[Tensor] | None = None):
        self._replay = None if replay is None else iter(replay)
        self.made: list[Tensor] = []

    def _next(self, kind: str, shape: tuple[int, ...]) -> Tensor:
        if self._replay is None:
            value = torch.rand(shape) if kind == "rand" else torch.randn(shape)
        else:
            value = torch.as_tensor(next(self._replay), dtype=torch.float32).reshape(shape)
        self.made.append(value)
        return value

    def rand(self, *shape: int) -> Tensor:
        return self._next("rand", shape)

    def randn(self, *shape: int) -> Tensor:
        return self._next("randn", shape)


# -- homogeneous matrices, one per image: entries are numbers or [N] tensors --------------------------------
def _matrix(*rows: tuple) -> Tensor:
    entries = [x for row in rows for x in row]
    ref = next((x for x in entries if isinstance(x, Tensor)), None)
    if ref is None:
        return torch.tensor(rows, dtype=torch.float32)
    filled = [x if isinstance(x, Tensor) else torch.full_like(ref, float(x)) for x in entries]
    return torch.stack(filled, dim=-1).reshape(ref.shape + (len(rows), -1))


def _translate2d(tx, ty) -> Tensor:
    return _matrix((1, 0, tx), (0, 1, ty), (0, 0, 1))


def _scale2d(sx, sy) -> Tensor:
    return _matrix((sx, 0, 0), (0, sy, 0), (0, 0, 1))


def _rotate2d(theta: Tensor) -> Tensor:
    return _matrix((torch.cos(theta), torch.sin(-theta), 0), (torch.sin(theta), torch.cos(theta), 0), (0, 0, 1))


def _translate3d(tx, ty, tz) -> Tensor:
    return _matrix((1, 0, 0, tx), (0, 1, 0, ty), (0, 0, 1, tz), (0, 0, 0, 1))


def _scale3d(sx, sy, sz) -> Tensor:
    return _matrix((sx, 0, 0, 0), (0, sy, 0, 0), (0, 0, sz, 0), (0, 0, 0, 1))


def _rotate3d(axis: Tensor, theta: Tensor) -> Tensor:
    """Rotation by theta around a unit axis (Rodrigues)."""
    x, y, z = axis[0], axis[1], axis[2]
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _matrix(
        (x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s, 0),
        (y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s, 0),
        (z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c, 0),
        (0, 0, 0, 1),
    )


def _gate(value: Tensor, chance: Tensor, p: Tensor, identity: float) -> Tensor:
    """`value` where the drawn chance falls below p, else the transform's identity value."""
    return torch.where(chance < p, value, torch.full_like(value, identity))


# -- the pipeline ------------------------------------------------------------------------------------------
def _geometric_matrix(draws: Draws, n: int, width: int, height: int, p: Tensor) -> Tensor:
    """The inverse transform (output pixel -> input pixel) of the blit and general geometric stages."""
    G = torch.eye(3)
    # Blit: x-flip, quarter turns, integer translation.
    i = _gate(torch.floor(draws.rand(n) * 2), draws.rand(n), p, 0)
    G = G @ _scale2d(1 / (1 - 2 * i), 1)
    i = _gate(torch.floor(draws.rand(n) * 4), draws.rand(n), p, 0)
    G = G @ _rotate2d(math.pi / 2 * i)
    t = _gate((draws.rand(n, 2) * 2 - 1) * XINT_MAX, draws.rand(n, 1), p, 0)
    G = G @ _translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
    # General geometric: isotropic scale, rotation, anisotropic scale, rotation, fractional translation.
    s = _gate(torch.exp2(draws.randn(n) * SCALE_STD), draws.rand(n), p, 1)
    G = G @ _scale2d(1 / s, 1 / s)
    p_rot = 1 - torch.sqrt((1 - p).clamp(0, 1))  # a rotation before or after the anisotropic scale: chance p
    theta = _gate((draws.rand(n) * 2 - 1) * math.pi * ROTATE_MAX, draws.rand(n), p_rot, 0)
    G = G @ _rotate2d(theta)
    s = _gate(torch.exp2(draws.randn(n) * ANISO_STD), draws.rand(n), p, 1)
    G = G @ _scale2d(1 / s, 1 / (1 / s))  # 1 / (1 / s), not s: the reference's rounding
    theta = _gate((draws.rand(n) * 2 - 1) * math.pi * ROTATE_MAX, draws.rand(n), p_rot, 0)
    G = G @ _rotate2d(theta)
    t = _gate(draws.randn(n, 2) * XFRAC_STD, draws.rand(n, 1), p, 0)
    return G @ _translate2d(-(t[:, 0] * width), -(t[:, 1] * height))


@lru_cache(maxsize=64)
def _upsample_matrix(size: int) -> Tensor:
    """[size, 2 * size]: zero insertion, then the filter (gain 2 per axis) as a true convolution, padded so the
    output is twice as long. Built by running that 1-D operation on the unit signals."""
    taps = sym6_filter().double()
    unit = F.pad(torch.eye(size, dtype=torch.float64)[:, None, :, None], [0, 1]).reshape(size, 1, 2 * size)
    unit = F.pad(unit, [(len(taps) + 1) // 2, (len(taps) - 2) // 2])
    return F.conv1d(unit, (taps * 2).flip(0)[None, None])[:, 0].float()


@lru_cache(maxsize=64)
def _downsample_matrix(size: int, crop: int) -> Tensor:
    """[size, out]: crop `crop` samples per side, the filter as a correlation, keep every other sample."""
    taps = sym6_filter().double()
    unit = torch.eye(size, dtype=torch.float64)[:, None, crop : size - crop]
    return F.conv1d(unit, taps[None, None])[:, 0, ::2].float()


def _resample(images: Tensor, rows: Tensor, columns: Tensor) -> Tensor:
    # A separable filter as two matrix products: far faster on CPUs than depthwise convolutions of one
    # channel, and the same sums (the matrices hold the filter taps, zero elsewhere).
    return rows.t().to(images) @ (images @ columns.to(images))


def _apply_geometric(images: Tensor, G: Tensor) -> Tensor:
    """Resample the images through the inverse transforms G: reflect-pad what the transform brings into view,
    upsample 2x, bilinear grid sample, filter and downsample back."""
    n, c, height, width = images.shape
    cx, cy = (width - 1) / 2, (height - 1) / 2
    corners = _matrix((-cx, -cy, 1), (cx, -cy, 1), (cx, cy, 1), (-cx, cy, 1))
    corners = G @ corners.t()  # [N, xyz, corner]: where the output's corners come from
    pad = len(SYM6) // 4  # the filter's reach at the original resolution
    margin = corners[:, :2, :].permute(1, 0, 2).flatten(1)
    margin = torch.cat([-margin, margin]).max(dim=1).values  # [x0, y0, x1, y1] over the whole batch
    margin = margin + torch.tensor([pad * 2 - cx, pad * 2 - cy] * 2, dtype=torch.float32)
    margin = margin.max(torch.zeros(4)).min(torch.tensor([width - 1, height - 1] * 2, dtype=torch.float32))
    mx0, my0, mx1, my1 = (int(v) for v in margin.ceil().to(torch.int32))
    images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
    G = _translate2d(torch.tensor((mx0 - mx1) / 2), torch.tensor((my0 - my1) / 2)) @ G
    images = _resample(images, _upsample_matrix(images.shape[2]), _upsample_matrix(images.shape[3]))
    G = _scale2d(2, 2) @ G @ _scale2d(1 / 2, 1 / 2)
    G = _translate2d(-0.5, -0.5) @ G @ _translate2d(0.5, 0.5)
    shape = [n, c, (height + pad * 2) * 2, (width + pad * 2) * 2]
    G = _scale2d(2 / images.shape[3], 2 / images.shape[2]) @ G @ _scale2d(1 / (2 / shape[3]), 1 / (2 / shape[2]))
    grid = F.affine_grid(G[:, :2, :].to(images), size=shape, align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _resample(images, _downsample_matrix(images.shape[2], 1), _downsample_matrix(images.shape[3], 1))


def _colour_matrix(draws: Draws, n: int, channels: int, p: Tensor) -> Tensor:
    """The colour transform (homogeneous RGB) of each image: brightness, contrast, luma flip, hue, saturation."""
    eye = torch.eye(4)
    C = eye
    b = _gate(draws.randn(n) * BRIGHTNESS_STD, draws.rand(n), p, 0)
    C = _translate3d(b, b, b) @ C
    c = _gate(torch.exp2(draws.randn(n) * CONTRAST_STD), draws.rand(n), p, 1)
    C = _scale3d(c, c, c) @ C
    luma = (torch.tensor([1, 1, 1, 0], dtype=torch.float64) / math.sqrt(3)).float()  # the luma axis
    outer = torch.outer(luma, luma)
    i = _gate(torch.floor(draws.rand(n, 1, 1) * 2), draws.rand(n, 1, 1), p, 0)
    C = (eye - 2 * outer * i) @ C  # Householder reflection through the plane orthogonal to luma
    if channels > 1:  # hue and saturation mean nothing for grey images (and draw nothing)
        theta = _gate((draws.rand(n) * 2 - 1) * math.pi * HUE_MAX, draws.rand(n), p, 0)
        C = _rotate3d(luma, theta) @ C
        s = _gate(torch.exp2(draws.randn(n, 1, 1) * SATURATION_STD), draws.rand(n, 1, 1), p, 1)
        C = (outer + (eye - outer) * s) @ C
    return C


def _apply_colour(images: Tensor, C: Tensor, group: int) -> Tensor:
    """Apply C to every `group`-channel slice (the whole image, or each half of a pix2pix pair)."""
    n, channels, height, width = images.shape
    C = C.to(images)
    x = images.reshape(n, channels // group, group, height * width)
    if group == 3:
        x = C[:, None, :3, :3] @ x + C[:, None, :3, 3:]
    else:  # grey: the mean of the RGB rows applied to equal R, G and B
        row = C[:, :3, :].mean(dim=1, keepdim=True)[:, None]  # [N, 1, 1, 4]
        x = x * row[..., :3].sum(dim=-1, keepdim=True) + row[..., 3:]
    return x.reshape(n, channels, height, width)


def colour_group(channels: int) -> int:
    """The channels one colour transform covers: 1 or 3, or the halves of a pix2pix pair (2 = 1+1, 6 = 3+3)."""
    if channels in (1, 3):
        return channels
    if channels in (2, 6):
        return channels // 2
    raise TransganError(
        f"ADA (--ada / --aug-p): D sees {channels}-channel images; its colour transforms need 1 or 3 channels "
        "(or pix2pix pairs with --input-nc equal to --output-nc); use --diffaugment instead"
    )


def augment(images: Tensor, p: float | Tensor, draws: Draws | None = None) -> Tensor:
    """StyleGAN2-ADA's 'bgc' augmentation of a batch (N, C, H, W), each transform applied to each image with
    probability p; differentiable in `images` (G learns through it, R1 is taken through it).

    The random numbers are drawn in the reference's order whatever p is (p only decides which are applied),
    so at the same torch seed and p the batch equals the reference pipeline's.
    """
    draws = Draws() if draws is None else draws
    p = torch.as_tensor(p, dtype=torch.float32).reshape(())
    n, channels, height, width = images.shape
    group = colour_group(channels)
    G = _geometric_matrix(draws, n, width, height, p)
    images = _apply_geometric(images, G)
    C = _colour_matrix(draws, n, group, p)
    return _apply_colour(images, C, group)


# -- the controller ----------------------------------------------------------------------------------------
def next_p(p: Tensor, rt: float, target: float, images: int, kimg: float) -> Tensor:
    """StyleGAN2-ADA's update after an interval of `images` real images (the global batch times the interval):
    p moves by images / (kimg * 1000) toward more augmentation when r_t is above the target, toward less when
    below (not at all when equal), and never below 0. In float32, as the reference keeps p."""
    step = float((rt > target) - (rt < target))  # sign(r_t - target)
    return (p + step * images / (kimg * 1000)).clamp(min=0).to(torch.float32)


def sum_across_processes(totals: Tensor) -> Tensor:
    """`totals` summed over the processes of a data-parallel run (itself in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from transgan.distributed import all_reduce_sum

        return all_reduce_sum(totals)
    return totals


class AdaController:
    """The augmentation probability p: fixed (`adaptive` False) or, every `interval` steps, moved by the
    overfitting heuristic r_t = E[sign(D(real) - threshold)] over the reals D judged since the last move
    (averaged over all processes). p and the partial sums are training state (`state` / `load_state`)."""

    def __init__(self, p: float = 0.0, adaptive: bool = True, target: float = ADA_TARGET, kimg: float = ADA_KIMG):
        self.p = torch.tensor(p, dtype=torch.float32)
        self.adaptive, self.target, self.kimg, self.interval = adaptive, target, kimg, ADA_INTERVAL
        self.totals = torch.zeros(2)  # [sum of signs, number of predictions] since the last adjustment
        self.rt = float("nan")  # r_t of the last adjustment

    def observe(self, predictions: Tensor, threshold: float = 0.0) -> Tensor:
        """Count D's predictions on reals (every element of a PatchGAN map); returns their mean sign."""
        signs = torch.sign(predictions.detach().float() - threshold)
        batch = torch.stack([signs.sum(), torch.tensor(float(signs.numel()), device=signs.device)])
        self.totals = self.totals.to(signs.device) + batch  # stays on the device: synced once per interval
        return signs.mean()

    def adjust(self, batch_size: int) -> None:
        """End of an interval: r_t over every process's reals, then p's update for the global batch."""
        totals = sum_across_processes(self.totals)
        world = _world_size()
        self.totals = torch.zeros_like(self.totals)
        count = float(totals[1])
        if count == 0:
            return
        self.rt = float(totals[0]) / count
        self.p = next_p(self.p, self.rt, self.target, batch_size * world * self.interval, self.kimg)

    def state(self, prefix: str = "ada") -> dict[str, Tensor]:
        return {f"{prefix}.p": self.p.clone(), f"{prefix}.totals": self.totals.detach().cpu().clone()}

    def load_state(self, tensors: dict[str, Tensor], prefix: str = "ada") -> None:
        if f"{prefix}.p" in tensors:
            self.p = tensors[f"{prefix}.p"].to(torch.float32).reshape(()).cpu().clone()
            self.totals = tensors[f"{prefix}.totals"].to(torch.float32).reshape(2).cpu().clone()


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
