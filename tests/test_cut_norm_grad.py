"""Gradients at batch size 1 through every normalisation the translators use, against finite differences in
float64, with the incoming gradient channels_last-strided as CUT's patch sampling sends it (a PyTorch bug makes
InstanceNorm's backward wrong there; transgan's instance norm works around it, see nets/layers.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transgan.nets import build_network
from transgan.nets.layers import NORMS, norm_layer


def channels_last_like(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A random (N, C, H, W) tensor stored as (N, H, W, C): what `permute(0, 2, 3, 1)`'s backward hands back."""
    n, c, h, w = shape
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, h, w, c, dtype=torch.float64, generator=generator).permute(0, 3, 1, 2)


def finite_difference_grad(f, x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """d/dx of sum(f(x) * weight) by central differences, element by element."""
    grad = torch.zeros_like(x)
    flat, out = x.detach().clone().view(-1), grad.view(-1)
    with torch.no_grad():
        for i in range(flat.numel()):
            saved = flat[i].item()
            flat[i] = saved + eps
            plus = (f(flat.view_as(x)) * weight).sum()
            flat[i] = saved - eps
            minus = (f(flat.view_as(x)) * weight).sum()
            flat[i] = saved
            out[i] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("norm", NORMS)
def test_norm_layer_gradient_at_batch_1_with_channels_last_incoming_gradient(norm):
    layer = norm_layer(norm)(4).double().train()
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weight = channels_last_like((1, 4, 5, 5), seed=1)
    (analytic,) = torch.autograd.grad(layer(x), x, weight)
    expected = finite_difference_grad(layer, x, weight.contiguous())
    torch.testing.assert_close(analytic, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("norm", NORMS)
def test_generator_features_like_cut_at_batch_1(norm):
    """CUT's path: encoder features (the last one a ResnetBlock output ending in a norm), permuted to
    (B, H*W, C) and weighted, back to the input. Blur-pool down and up sampling included."""
    torch.manual_seed(0)
    net = build_network("resnet", ngf=2, n_blocks=1, norm=norm, antialias=True, antialias_up=True).double()
    net.train()
    for parameter in net.parameters():  # trained-like scales, so that no path is negligible
        nn.init.normal_(parameter, 0.0, 0.5)
    layers = [4, 8, 12]

    def f(x: torch.Tensor) -> torch.Tensor:
        features = net.encode(x, layers)
        return torch.cat([feature.permute(0, 2, 3, 1).flatten(1, 2).flatten() for feature in features])

    x = torch.randn(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    weight = torch.randn(f(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (analytic,) = torch.autograd.grad((f(x) * weight).sum(), x)
    expected = finite_difference_grad(f, x, weight)
    torch.testing.assert_close(analytic, expected, rtol=1e-5, atol=1e-6)


def test_instance_norm_keeps_its_state_dict_and_export_form():
    """The workaround adds no tensors (checkpoints and reference state dicts load as before) and is plain
    nn.InstanceNorm2d when no gradient is wanted (so it exports as InstanceNormalization)."""
    layer = norm_layer("instance")(4)
    assert isinstance(layer, nn.InstanceNorm2d) and layer.state_dict() == {}
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), nn.InstanceNorm2d(4)(x), rtol=0, atol=0)
