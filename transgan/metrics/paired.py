"""Paired metrics (L1, PSNR, SSIM) between predicted and target images matched by file name."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from transgan.errors import TransganError
from transgan.images import list_images, read_pixels

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
# Identical images have infinite PSNR; flooring the MSE caps one pair at 100 dB so a mean stays finite.
MSE_FLOOR = 1e-10


def l1(pred: Tensor, target: Tensor) -> float:
    """Mean absolute difference of two images in [0, 1]."""
    return float((pred.double() - target.double()).abs().mean())


def psnr(pred: Tensor, target: Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE)."""
    mse = max(float(((pred.double() - target.double()) ** 2).mean()), MSE_FLOOR)
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_window(channels: int) -> Tensor:
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float64) - SSIM_WINDOW // 2
    g = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW).contiguous()


def ssim(pred: Tensor, target: Tensor, data_range: float = 1.0) -> float:
    """SSIM (Wang et al. 2004) of two (C, H, W) images: Gaussian window 11, sigma 1.5, valid region, channel mean."""
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise TransganError(
            f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(pred.shape)}"
        )
    x, y = pred.double()[None], target.double()[None]
    window = _gaussian_window(x.shape[1])

    def blur(image: Tensor) -> Tensor:
        return F.conv2d(image, window, groups=x.shape[1])

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def _by_name(folder: str | Path) -> dict[str, Path]:
    # Key: the path below the folder without extension, so 'a/001.png' pairs with 'a/001.jpg'.
    folder = Path(folder)
    return {path.relative_to(folder).with_suffix("").as_posix(): path for path in list_images(folder)}


def paired_metrics(pred_dir: str | Path, target_dir: str | Path) -> dict[str, Any]:
    """Mean L1, PSNR (dB) and SSIM over images present in both folders (matched by name, read as RGB in [0, 1])."""
    preds, targets = _by_name(pred_dir), _by_name(target_dir)
    names = sorted(preds.keys() & targets.keys())
    if not names:
        raise TransganError(
            f"no image in {pred_dir} has a namesake in {target_dir} (e.g. {next(iter(sorted(preds)))} vs "
            f"{next(iter(sorted(targets)))}); paired metrics match files by name"
        )
    totals = {"l1": 0.0, "psnr": 0.0, "ssim": 0.0}
    for name in names:
        pred = torch.from_numpy(read_pixels(preds[name])).permute(2, 0, 1).double() / 255.0
        target = torch.from_numpy(read_pixels(targets[name])).permute(2, 0, 1).double() / 255.0
        if pred.shape != target.shape:
            raise TransganError(
                f"{preds[name]} is {pred.shape[2]}x{pred.shape[1]} but {targets[name]} is "
                f"{target.shape[2]}x{target.shape[1]}; paired images must have one size"
            )
        totals["l1"] += l1(pred, target)
        totals["psnr"] += psnr(pred, target)
        totals["ssim"] += ssim(pred, target)
    return {
        "pairs": len(names),
        **{key: value / len(names) for key, value in totals.items()},
        "unmatched_pred": len(preds) - len(names),
        "unmatched_target": len(targets) - len(names),
    }
