"""DiffAugment: policy parsing, identity when off, each operation against its definition, gradients, seeding."""

from __future__ import annotations

import pytest
import torch

from transgan.augment import DiffAugment, color, cutout, diff_augment, parse_policy, translation
from transgan.errors import TransganError


def images(n: int = 4, channels: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def seeded(seed: int = 3) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_policy_parsing():
    assert parse_policy("color,translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy(" cutout , color ") == ("cutout", "color")
    assert parse_policy("") == parse_policy("none") == parse_policy(None) == ()
    assert parse_policy(["translation"]) == ("translation",)
    with pytest.raises(TransganError, match="--diffaugment 'color,flip': unknown flip"):
        parse_policy("color,flip")
    with pytest.raises(TransganError, match="at most once"):
        parse_policy("color,color")


def test_identity_when_off():
    x = images()
    assert diff_augment(x, "") is x and diff_augment(x, None) is x
    augment = DiffAugment("none")
    assert not augment and augment(x) is x
    assert DiffAugment("color") and repr(DiffAugment("cutout,color")) == "DiffAugment('cutout,color')"


def test_color_against_its_formula():
    x = images()
    out = color(x, seeded())
    g = seeded()
    brightness, saturation, contrast = (torch.rand(4, 1, 1, 1, generator=g) for _ in range(3))
    y = x + brightness - 0.5
    y = (y - y.mean(1, keepdim=True)) * (saturation * 2) + y.mean(1, keepdim=True)
    y = (y - y.mean([1, 2, 3], keepdim=True)) * (contrast + 0.5) + y.mean([1, 2, 3], keepdim=True)
    torch.testing.assert_close(out, y)
    gray = images(channels=1)  # saturation leaves a single channel alone
    g = seeded()
    brightness, _, contrast = (torch.rand(4, 1, 1, 1, generator=g) for _ in range(3))
    y = gray + brightness - 0.5
    y = (y - y.mean([1, 2, 3], keepdim=True)) * (contrast + 0.5) + y.mean([1, 2, 3], keepdim=True)
    torch.testing.assert_close(color(gray, seeded()), y)


def test_translation_shifts_whole_images_with_zero_fill():
    x = images(size=16)
    out = translation(x, seeded())
    g = seeded()
    dy, dx = torch.randint(-2, 3, (4,), generator=g), torch.randint(-2, 3, (4,), generator=g)  # 16 / 8 = 2
    for n in range(4):
        expected = torch.zeros_like(x[n])
        for i in range(16):
            for j in range(16):
                if 0 <= i + dy[n] < 16 and 0 <= j + dx[n] < 16:
                    expected[:, i, j] = x[n, :, i + dy[n], j + dx[n]]
        assert torch.equal(out[n], expected)
    assert (dy != 0).any() or (dx != 0).any()  # the seed does move something


def test_cutout_erases_one_square_per_image():
    x = images(size=8) + 3  # no zeros of its own
    out = cutout(x, seeded(5))
    g = seeded(5)
    cy, cx = torch.randint(0, 9, (4,), generator=g), torch.randint(0, 9, (4,), generator=g)  # size 4: even
    for n in range(4):
        erased = torch.zeros(8, 8, dtype=torch.bool)
        erased[max(cy[n] - 2, 0) : max(cy[n] + 2, 0), max(cx[n] - 2, 0) : max(cx[n] + 2, 0)] = True
        assert torch.equal(out[n] == 0, erased.expand(3, -1, -1))
        assert torch.equal(out[n][:, ~erased], x[n][:, ~erased])
        assert erased.sum() <= 16


def test_differentiable():
    x = images(n=2, channels=2, size=6).double().requires_grad_(True)
    for policy in ("color", "translation", "cutout", "color,translation,cutout"):
        # The same random parameters on every call, so gradcheck compares like with like.
        assert torch.autograd.gradcheck(lambda t, policy=policy: diff_augment(t, policy, seeded(11)), (x,))
    out = diff_augment(x, "translation,cutout", seeded())
    out.sum().backward()
    # The gradient of a shift-and-erase is 1 where a pixel survives and 0 where it left or was erased.
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0} and 0 < x.grad.sum() < x.numel()
    assert x.grad.sum() == (out != 0).sum()  # one input per surviving output (the inputs are never exactly 0)


def test_seeding_is_repeatable_and_device_independent():
    x = images()
    policy = "color,translation,cutout"
    assert torch.equal(diff_augment(x, policy, seeded(1)), diff_augment(x, policy, seeded(1)))
    assert not torch.equal(diff_augment(x, policy, seeded(1)), diff_augment(x, policy, seeded(2)))
    torch.manual_seed(9)
    first = diff_augment(x, policy)
    torch.manual_seed(9)
    assert torch.equal(first, diff_augment(x, policy))  # the global RNG when no generator is given
    # Each call draws fresh parameters: real and fake batches are augmented independently.
    g = seeded(4)
    assert not torch.equal(diff_augment(x, policy, g), diff_augment(x, policy, g))
    # Half precision keeps its dtype.
    assert diff_augment(x.half(), policy, seeded()).dtype == torch.float16
