"""The engine interface and the PyTorch eager engine (the base every other engine builds on; no onnx import)."""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from transgan.errors import TransganError
from transgan.nets.test_time import DEFAULT_SEED, check_mode, describe
from transgan.nets.test_time import test_time as at_test_time

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Engine:
    """A generator ready to run: `run(batch)` maps float32 NCHW in [-1, 1] to float32 NCHW in [-1, 1].

    Samplers take `run(noise, labels)` instead. `info` holds the model's metadata: kind ('translator' or
    'sampler'), arch, task, direction, normalization, size_multiple, input_nc, output_nc, class_names,
    test_time... (`GeneratorInfo.as_dict()`). `close()` (or a `with` block) gives back what it holds.
    """

    name = "engine"
    # True where every new input shape re-plans the kernels (ONNX Runtime on GPU: seconds per shape for
    # mobile_resnet on an H100), so the pipeline pads a short last batch instead of running a new shape.
    replans_per_shape = False
    info: dict[str, Any]
    device: str
    precision: str

    def run(self, batch: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} on {self.device} ({self.precision}{self._mode_note()})"

    def _mode_note(self) -> str:
        notes = [self.info.get("test_time_note") or "", "CPU rewrites" if self.info.get("rewrites") else ""]
        return "".join(f"; {note}" for note in notes if note)

    def close(self) -> None:
        """Give back what the engine holds (a network it borrowed returns to its own modes)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class TorchEngine(Engine):
    """Eager PyTorch with channels_last, optional autocast (fp16/bf16) and optional torch.compile.

    The network runs the test-time way `info['test_time']` says ('reference': batch norm on each image's
    own statistics, dropout seeded by `seed`; 'eval'), from construction until `close()`, which restores
    the network's own modes: a live training network can be handed to an engine inside a `with` block.
    """

    name = "torch"

    def __init__(
        self,
        net: nn.Module,
        info: dict[str, Any],
        device: str = "cpu",
        precision: str = "fp32",
        channels_last: bool = True,
        compile: bool = False,
        seed: int | None = DEFAULT_SEED,
    ):
        if precision not in PRECISIONS:
            raise TransganError(f"--precision {precision}: use one of {', '.join(PRECISIONS)}")
        mode = check_mode(info.get("test_time", "eval"))
        self.info, self.device, self.precision = dict(info), device, precision
        self.net = net.to(device)
        self._modes = ExitStack()
        self._modes.enter_context(at_test_time(self.net, mode, seed))
        note = describe(self.net, mode, seed)
        if note:
            self.info["test_time_note"] = note
        # channels_last lets cuDNN/oneDNN pick their NHWC kernels; samplers start from a (N, latent) vector.
        self.channels_last = channels_last and info["kind"] == "translator"
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.net) if compile else self.net

    def close(self) -> None:
        self._modes.close()

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(torch.device(self.device).type, dtype=PRECISIONS[self.precision])

    def run_tensor(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Like `run` on tensors that stay on the engine's device (no host round trip)."""
        batch = batch.to(self.device, torch.float32, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            if self.info["kind"] == "sampler":
                labels = None if labels is None else labels.to(self.device)
                output = self.forward(batch, labels)
            else:
                output = self.forward(batch)
        return output.float().contiguous()

    def run(self, batch: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        labels_t = None if labels is None else torch.as_tensor(labels)
        return self.run_tensor(torch.as_tensor(batch), labels_t).cpu().numpy()
