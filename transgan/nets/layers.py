"""Shared network helpers: norm layer factory, the reference weight init, the bias rule, spectral norm."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import init as nn_init
from torch.nn.utils import parametrizations

from transgan.errors import TransganError

NORMS = ("batch", "instance", "none")
INITS = ("normal", "xavier", "kaiming", "orthogonal")
PADDINGS = ("reflect", "replicate", "zero")


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    """Return `value` if it is one of `choices`, else raise one clear line naming the option."""
    if value not in choices:
        raise TransganError(f"{option} '{value}' is not supported; choose one of: {', '.join(choices)}")
    return value


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """A factory `channels -> module` for the norm named `norm` (as the reference's get_norm_layer).

    'instance' keeps no running statistics and no affine parameters: that is what the reference trains
    with, and why its state dicts hold no InstanceNorm tensors.
    """
    check_choice("norm", norm, NORMS)
    if norm == "batch":
        return lambda channels: nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "instance":
        return lambda channels: InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return lambda channels: nn.Identity()


def _contiguous(grad: Tensor) -> Tensor:
    return grad.contiguous()


class InstanceNorm2d(nn.InstanceNorm2d):
    """nn.InstanceNorm2d with a workaround for a PyTorch bug (torch 2.14.1, CPU): at batch size 1 its backward
    returns a wrong input gradient when the gradient arriving at its output has channels_last strides (CUT's
    patch sampling permutes features to (B, H, W, C) and sends such a gradient back; --channels-last sends
    one everywhere). Handing it a contiguous gradient gives the right one. Forward values, parameters and
    state dict are nn.InstanceNorm2d's; without gradients (inference, ONNX export) it is plain
    nn.InstanceNorm2d, so it still exports as InstanceNormalization. Every translator's instance norm is
    made here (norm_layer), so this is the one place of the workaround."""

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x)
        if y.requires_grad and not torch.onnx.is_in_onnx_export():
            # A hook on the output (not an autograd.Function, whose view output would forbid the in-place ReLU
            # that follows): it reaches the norm's backward even after that ReLU changed y in place.
            y.register_hook(_contiguous)
        return y


def use_bias(norm: str) -> bool:
    """Convs get a bias only when no affine norm follows them (a BatchNorm shift makes a bias redundant).

    This equals the reference's `use_bias = norm_layer == InstanceNorm2d` for 'batch' and 'instance'.
    For 'none' the reference gives no bias (an accident of its check); we give one, since nothing else
    can shift the activations.
    """
    check_choice("norm", norm, NORMS)
    return norm != "batch"


def padding_layer(padding: str, size: int) -> list[nn.Module]:
    """The explicit padding module(s) before a conv: empty for 'zero' (the conv pads itself then)."""
    check_choice("padding", padding, PADDINGS)
    if padding == "reflect":
        return [nn.ReflectionPad2d(size)]
    if padding == "replicate":
        return [nn.ReplicationPad2d(size)]
    return []


def init_weights(net: nn.Module, init: str = "normal", init_gain: float = 0.02) -> nn.Module:
    """The reference's init_weights: conv/linear weights by `init`, biases 0, BatchNorm weight N(1, gain).

    Call it before spectral norm is applied, so the power-iteration vectors match the final weights.
    """
    check_choice("init", init, INITS)
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init == "normal":
                nn_init.normal_(module.weight, 0.0, init_gain)
            elif init == "xavier":
                nn_init.xavier_normal_(module.weight, gain=init_gain)
            elif init == "kaiming":
                nn_init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            else:
                nn_init.orthogonal_(module.weight, gain=init_gain)
            if module.bias is not None:
                nn_init.constant_(module.bias, 0.0)
        elif isinstance(module, nn.BatchNorm2d):
            nn_init.normal_(module.weight, 1.0, init_gain)
            nn_init.constant_(module.bias, 0.0)
    return net


def maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap `module`'s weight in spectral norm (in place, torch parametrizations) when `enabled`.

    Keys change from `weight` to `parametrizations.weight.original` (+ `_u`, `_v` buffers).
    """
    return parametrizations.spectral_norm(module) if enabled else module


def spectral_norm_convs(net: nn.Module, enabled: bool) -> nn.Module:
    """Apply `maybe_spectral_norm` to every conv of `net`, in place."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            maybe_spectral_norm(module, enabled)
    return net


def init_then_spectral_norm(net: nn.Module, init: str, init_gain: float, spectral_norm: bool) -> nn.Module:
    """`init_weights`, then spectral norm on every conv if asked: its power-iteration vectors come from the
    initialised weights."""
    init_weights(net, init, init_gain)
    return spectral_norm_convs(net, spectral_norm)
