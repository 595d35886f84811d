"""How a generator runs at test time: eval mode, or the reference's way (per-image batch norm, seeded dropout)."""

from __future__ import annotations

import functools
import types
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transgan.errors import TransganError

# "reference": as the reference's test.py without --eval (and the pix2pix paper): the network runs as in
# training, batch norm normalising each image by its own statistics and dropout on. "eval": running
# statistics, no dropout.
MODES = ("reference", "eval")
DEFAULT_SEED = 0
# Dropout masks are kept per input shape so a folder of same-sized images draws them once.
MASK_CACHE_SHAPES = 16


def check_mode(mode: str) -> str:
    """`mode` if it is a test-time mode, else one clear error."""
    if mode not in MODES:
        raise TransganError(f"test-time mode '{mode}': use {' or '.join(MODES)}")
    return mode


def per_image_batch_norm(module: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """Batch norm's affine on each image's own statistics (mean and biased variance over H, W per channel).

    That is what a BatchNorm2d in training mode computes on a batch of one image, so the result equals the
    reference at batch 1 for every image of a larger batch. The running statistics are neither used nor
    updated. It exports to ONNX as InstanceNormalization with the batch norm's scale and shift.
    """
    return F.instance_norm(x, None, None, module.weight, module.bias, use_input_stats=True, eps=module.eps)


def _no_dropout(module: nn.Dropout, x: Tensor) -> Tensor:
    return x


class SeededDropout:
    """Dropout masks of one forward pass, drawn as the reference draws them at batch 1 after `torch.manual_seed`.

    Every image of a batch gets the same masks: image i's output equals the reference's output for image i
    alone, whatever the batch, its order or the device. Masks are drawn on the CPU (so a GPU run draws the
    same ones) in layer order from a generator seeded at the start of each forward pass, each of shape
    (1, C, H, W) with Bernoulli(1 - p) entries scaled by 1 / (1 - p), exactly as torch's CPU dropout does.
    `seed` None draws from torch's global generator per image instead, as an unseeded reference run would.
    """

    def __init__(self, seed: int | None):
        self.seed = seed
        self.generator = torch.Generator()
        # input shape -> (masks in layer order, generator state after the last one drawn)
        self.cache: OrderedDict[tuple, tuple[list[dict[Any, Tensor]], Tensor | None]] = OrderedDict()
        self.key: tuple = ()
        self.index = 0

    # torch.compile runs these eagerly: they change Python state each pass, which it would recompile for.
    @torch.compiler.disable
    def start(self, module: nn.Module, args: tuple) -> None:
        """Forward pre-hook of the whole network: a new pass starts at the first mask for its input shape."""
        first = next((arg for arg in args if isinstance(arg, Tensor)), None)
        self.key = tuple(first.shape[1:]) if first is not None else ()
        self.index = 0
        if self.key not in self.cache:
            self.cache[self.key] = ([], None)
            while len(self.cache) > MASK_CACHE_SHAPES:
                self.cache.popitem(last=False)
        self.cache.move_to_end(self.key)

    @torch.compiler.disable
    def forward(self, module: nn.Dropout, x: Tensor) -> Tensor:
        if self.seed is None:
            return F.dropout(x, module.p, training=True)
        masks, state = self.cache.setdefault(self.key, ([], None))
        if self.index == len(masks):
            # Continue the generator where the previous draw of this pass left it (or from the seed).
            if state is None:
                self.generator.manual_seed(self.seed)
            else:
                self.generator.set_state(state)
            noise = torch.empty((1, *x.shape[1:])).bernoulli_(1 - module.p, generator=self.generator)
            if module.p < 1:
                noise.div_(1 - module.p)
            masks.append({"cpu": noise})
            self.cache[self.key] = (masks, self.generator.get_state())
        copies = masks[self.index]
        self.index += 1
        if tuple(copies["cpu"].shape[1:]) != tuple(x.shape[1:]):
            raise RuntimeError("dropout layers saw other shapes than in the first pass of this input shape")
        place = (x.device, x.dtype)
        if place not in copies:
            copies[place] = copies["cpu"].to(x.device, x.dtype)
        return x * copies[place]


def _patch(module: nn.Module, forward: Any, saved: list[tuple[nn.Module, Any]]) -> None:
    # An instance attribute shadows the class's forward; the module's parameters and state_dict stay as they are.
    saved.append((module, module.__dict__.get("forward")))
    module.forward = forward


@contextmanager
def test_time(
    net: nn.Module, mode: str, seed: int | None = DEFAULT_SEED, *, dropout: bool = True
) -> Iterator[nn.Module]:
    """Run `net` the test-time way `mode` inside the block; on exit every module's mode is as before.

    "eval": `net.eval()`. "reference": as the reference's test.py without --eval: every BatchNorm2d
    normalises each image by its own statistics (see `per_image_batch_norm`) and every nn.Dropout stays on
    with masks seeded by `seed` (see `SeededDropout`); `dropout=False` leaves dropout out (ONNX export,
    whose graph has no seeded masks). The network is not copied: parameters, buffers and the state dict
    are untouched, and running statistics are not updated.
    """
    check_mode(mode)
    training = [(module, module.training) for module in net.modules()]
    saved: list[tuple[nn.Module, Any]] = []
    hook = None
    net.eval()
    try:
        if mode == "reference":
            draws = SeededDropout(seed) if dropout else None
            for module in net.modules():
                if isinstance(module, nn.BatchNorm2d):
                    _patch(module, types.MethodType(per_image_batch_norm, module), saved)
                elif isinstance(module, nn.Dropout):
                    forward = (
                        functools.partial(draws.forward, module) if draws else types.MethodType(_no_dropout, module)
                    )
                    _patch(module, forward, saved)
            if draws is not None:
                hook = net.register_forward_pre_hook(draws.start)
        yield net
    finally:
        if hook is not None:
            hook.remove()
        for module, previous in reversed(saved):
            if previous is None:
                del module.forward
            else:
                module.forward = previous
        for module, flag in training:
            module.training = flag


def reference_layers(net: nn.Module) -> tuple[int, int]:
    """(BatchNorm2d, Dropout) counts: the layers whose behaviour differs between the two modes."""
    modules = list(net.modules())
    return sum(isinstance(m, nn.BatchNorm2d) for m in modules), sum(isinstance(m, nn.Dropout) for m in modules)


def describe(net: nn.Module, mode: str, seed: int | None = DEFAULT_SEED, *, dropout: bool = True) -> str:
    """What `mode` changes for `net`, in words; empty where it runs as in eval mode."""
    batch_norms, dropouts = reference_layers(net)
    if mode != "reference" or not (batch_norms or dropouts):
        return ""
    parts = ["batch norm on each image's own statistics"] if batch_norms else []
    if dropouts and not dropout:
        parts.append("test-time dropout left out")
    elif dropouts:
        parts.append("dropout on, unseeded" if seed is None else f"dropout on, seed {seed}")
    return "reference test-time mode (" + "; ".join(parts) + ")"
