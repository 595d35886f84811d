"""DiffAugment (Zhao et al. 2020): differentiable color, translation and cutout applied to real and fake images."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from transgan.errors import TransganError

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125  # shift by up to 1/8 of the side, as in the paper's code
CUTOUT_RATIO = 0.5  # erase a square half the side long


def parse_policy(policy: str | Iterable[str] | None) -> tuple[str, ...]:
    """'color,translation,cutout' (any subset, any order, spaces allowed) -> a tuple; '', 'none' or None -> ()."""
    if policy is None:
        return ()
    names = policy.split(",") if isinstance(policy, str) else list(policy)
    names = [name.strip() for name in names if name.strip()]
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise TransganError(
            f"--diffaugment '{policy if isinstance(policy, str) else ','.join(policy)}': unknown "
            f"{', '.join(unknown)}; use a comma-separated subset of {','.join(POLICIES)} (or 'none')"
        )
    if len(set(names)) != len(names):
        raise TransganError(f"--diffaugment '{policy}': each of {','.join(POLICIES)} at most once")
    return tuple(names)


def _uniform(n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    # Drawn on the CPU (from `generator` or the global CPU RNG), then moved: the same numbers on every device,
    # and one RNG whose state a checkpoint holds.
    return torch.rand(n, 1, 1, 1, generator=generator).to(device=like.device, dtype=like.dtype)


def _randint(low: int, high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.randint(low, high, (n,), generator=generator).to(device)


def color(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random brightness (+[-0.5, 0.5)), saturation (x[0, 2)) and contrast (x[0.5, 1.5)) per image."""
    n = x.shape[0]
    x = x + (_uniform(n, generator, x) - 0.5)
    channel_mean = x.mean(dim=1, keepdim=True)
    x = (x - channel_mean) * (_uniform(n, generator, x) * 2) + channel_mean
    image_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - image_mean) * (_uniform(n, generator, x) + 0.5) + image_mean


def _shift(x: Tensor, offsets: Tensor, dim: int) -> Tensor:
    # out[..., i, ...] = x[..., i + offset, ...] along `dim` (2 rows, 3 columns); zero where that falls outside.
    size = x.shape[dim]
    index = torch.arange(size, device=x.device)[None, :] + offsets[:, None]  # (N, size)
    inside = (index >= 0) & (index < size)
    index = index.clamp(0, size - 1)
    shape = [x.shape[0], 1, 1, 1]
    shape[dim] = size
    index, inside = index.view(shape), inside.view(shape).to(x.dtype)
    return torch.gather(x, dim, index.expand_as(x)) * inside


def translation(x: Tensor, generator: torch.Generator | None = None, ratio: float = TRANSLATION_RATIO) -> Tensor:
    """Shift each image by whole pixels, up to `ratio` of the side each way, filling with zeros."""
    n, _, height, width = x.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = _randint(-max_dy, max_dy + 1, n, generator, x.device)
    dx = _randint(-max_dx, max_dx + 1, n, generator, x.device)
    return _shift(_shift(x, dy, 2), dx, 3)


def cutout(x: Tensor, generator: torch.Generator | None = None, ratio: float = CUTOUT_RATIO) -> Tensor:
    """Zero one square of `ratio` times the side per image, at a random centre (it may hang over the border)."""
    n, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    cy = _randint(0, height + (1 - size_y % 2), n, generator, x.device)
    cx = _randint(0, width + (1 - size_x % 2), n, generator, x.device)
    rows = torch.arange(height, device=x.device)[None, :] - (cy - size_y // 2)[:, None]  # (N, H)
    cols = torch.arange(width, device=x.device)[None, :] - (cx - size_x // 2)[:, None]  # (N, W)
    in_rows = (rows >= 0) & (rows < size_y)
    in_cols = (cols >= 0) & (cols < size_x)
    erased = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return x * (~erased).to(x.dtype)


OPERATIONS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(
    images: Tensor, policy: str | Iterable[str] | None, generator: torch.Generator | None = None
) -> Tensor:
    """Apply the policy's operations in the order given (the paper's code does), each with fresh random
    parameters per image; differentiable in `images`. An empty policy returns `images` itself.

    Random numbers come from `generator` (a CPU torch.Generator) or, when None, the global CPU RNG, and are
    drawn on the CPU whatever the images' device: a run resumed with the same RNG state augments identically.
    """
    for name in parse_policy(policy):
        images = OPERATIONS[name](images, generator)
    return images


class DiffAugment:
    """A parsed policy as a callable: `DiffAugment('color,cutout')(images)`; falsy when the policy is empty."""

    def __init__(self, policy: str | Iterable[str] | None):
        self.policy = parse_policy(policy)

    def __bool__(self) -> bool:
        return bool(self.policy)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return diff_augment(images, self.policy, generator)

    def __repr__(self) -> str:
        return f"DiffAugment('{','.join(self.policy) or 'none'}')"
