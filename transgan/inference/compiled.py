"""A torch.compile (inductor) engine for CPU or CUDA; input shapes bucketed so a mixed folder compiles few graphs."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transgan.checkpoint import ModelFile
from transgan.errors import TransganError
from transgan.inference.torch_engine import TorchEngine
from transgan.models import cache_dir, open_model
from transgan.nets.test_time import DEFAULT_SEED

# Each distinct input shape costs a compile (tens of seconds on a small CPU); after this many image sizes the
# engine compiles one graph with symbolic height, width and batch and runs every further size on it.
STATIC_SHAPES = 3


def batch_bucket(n: int) -> int:
    """The batch a run of `n` images is padded to: the next power of two, so batch sizes compile a few graphs."""
    return 1 << max(0, (n - 1).bit_length())


class CompiledEngine(TorchEngine):
    """TorchEngine whose network runs through torch.compile (inductor).

    CPU: inductor's C++ kernels fuse padding, normalisation and activations around oneDNN convs (`freeze`:
    weights folded in as constants and prepacked, see below). CUDA: 'max-autotune' (kernel search and CUDA
    graphs), with fp16/bf16 by autocast. The first `static_shapes` image sizes each get a graph specialised to
    that size; batches are padded up to a power of two by repeating the last image (images of a batch never mix
    in these networks, so the padding changes no output); any later size runs on one graph compiled with
    symbolic sizes (two in fact: torch specialises a batch of 1). Compiled kernels are cached on disk by torch
    (TORCHINDUCTOR_CACHE_DIR, by default under the transgan cache), so a second process reuses them.
    """

    name = "compiled"

    def __init__(
        self,
        net: nn.Module,
        info: dict[str, Any],
        device: str = "cpu",
        precision: str = "fp32",
        static_shapes: int = STATIC_SHAPES,
        backend: str = "inductor",
        freeze: bool = False,
        seed: int | None = DEFAULT_SEED,
    ):
        if info.get("kind") != "translator":
            raise TransganError(f"--engine compiled runs image translators; {info.get('arch')} is a {info.get('kind')}")
        if static_shapes < 0:
            raise TransganError(f"static_shapes {static_shapes}: must be 0 or more")
        # Before the first compile: torch reads the cache location when it writes its first artefact.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
        super().__init__(net, info, device, precision, channels_last=True, compile=False, seed=seed)
        cuda = device.startswith("cuda")
        if backend != "inductor":
            static_options: dict[str, Any] = {}
            dynamic_options: dict[str, Any] = {}
        elif cuda:
            static_options = {"mode": "max-autotune"}  # includes CUDA graphs: fixed shapes, so replayable
            dynamic_options = {"mode": "max-autotune-no-cudagraphs"}
        else:
            # Freezing folds the weights in as constants so inductor can prepack them for oneDNN, but torch then
            # bypasses its on-disk graph cache: measured on 2 cores with mobile_resnet, every process recompiled
            # for ~20 s instead of loading in ~5 s, for runs ~10-20% faster. Off unless asked.
            static_options = dynamic_options = {"options": {"freezing": True}} if freeze else {}
        self.static_shapes = static_shapes
        self._static = torch.compile(self.net, dynamic=False, backend=backend, **static_options)
        self._dynamic = torch.compile(self.net, dynamic=True, backend=backend, **dynamic_options)
        self.compiled_shapes: list[tuple[int, ...]] = []  # (batch, C, H, W) given a static graph, in order
        self.dynamic_used = False

    def describe(self) -> str:
        return f"compiled (torch.compile inductor) on {self.device} ({self.precision}{self._mode_note()})"

    def _graph_for(self, shape: tuple[int, ...]):
        if shape in self.compiled_shapes:
            return self._static
        sizes = {s[2:] for s in self.compiled_shapes}
        if shape[2:] in sizes or len(sizes) < self.static_shapes:
            self.compiled_shapes.append(shape)
            return self._static
        self.dynamic_used = True
        return self._dynamic

    def run_tensor(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Like TorchEngine.run_tensor, through the compiled graph for this input's bucket."""
        batch = batch.to(self.device, torch.float32, non_blocking=True)
        n = batch.shape[0]
        padded = batch_bucket(n)
        if padded > n:
            batch = torch.cat([batch, batch[-1:].expand(padded - n, *batch.shape[1:])])
        batch = batch.contiguous(memory_format=torch.channels_last)
        graph = self._graph_for(tuple(batch.shape))
        with torch.inference_mode(), self._autocast():
            output = graph(batch)
        if output.device.type == "cuda":
            output = output.clone()  # CUDA graphs reuse their output buffer on the next replay
        return output[:n].float().contiguous()

    def run(self, batch: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        return self.run_tensor(torch.as_tensor(batch)).cpu().numpy()


def open_compiled(
    model: str | Path | ModelFile,
    device: str = "cpu",
    precision: str = "fp32",
    direction: str | None = None,
    test_time: str | None = None,
    **options: Any,
) -> CompiledEngine:
    """A CompiledEngine for a ModelFile (or a model file, run directory or pretrained name, see transgan.models).

    The network compiled is a copy: inductor and channels_last must not change the ModelFile's own network.
    """
    model_file = open_model(model)
    net, direction = model_file.generator(direction)
    info = model_file.info(direction).as_dict()
    info["test_time"] = test_time or info["test_time"]
    return CompiledEngine(copy.deepcopy(net), info, device, precision, **options)
