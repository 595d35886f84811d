"""Tiled translation equal to the untiled one: an engine that runs each image in tiles (`--tile N`), or only
the images that would not fit a memory budget (`--max-memory`), with whole-image normalisation statistics.

The graph and its runner are transgan.inference.tiled_graph and tiled_run; this module chooses the strategy
per image and wraps a torch engine, so the folder pipeline, video and the HTTP service run it unchanged.
"""

from __future__ import annotations

import re
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transgan.errors import TransganError
from transgan.inference.tiled_graph import Graph, lower
from transgan.inference.tiled_run import (
    Plan,
    TiledRun,
    draw_dropout_masks,
    make_plan,
    stored_bytes,
    tile_bytes,
    untiled_bytes,
)
from transgan.inference.torch_engine import PRECISIONS, Engine, TorchEngine
from transgan.nets.test_time import DEFAULT_SEED

TILE_CHOICES = (2048, 1024, 512, 256, 128, 64, 32)  # what --max-memory tries, largest (fewest halos) first
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20}
_UNITS.update({"g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40})


def parse_memory(text: str) -> int:
    """'2GB', '512MB', '1.5GiB', '1000000' -> bytes (binary units: 1 GB = 2**30 bytes)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise TransganError(f"--max-memory {text}: give a size like 2GB, 512MB or 1.5GiB")
    return int(float(match.group(1)) * _UNITS[unit])


def format_bytes(count: int) -> str:
    """1536 * 2**20 -> '1.5GB' (binary units, as parse_memory reads them)."""
    for unit, size in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return f"{count}B"


def check_tile(tile: int | None) -> int | None:
    """`tile` if it is a usable tile side, else one clear error."""
    if tile is not None and tile < 16:
        raise TransganError(f"--tile {tile}: use at least 16 pixels (512 is a good start)")
    return tile


@dataclass(frozen=True)
class Strategy:
    """How one image runs: whole (`tile` None) or in tiles of `tile` pixels, activations in RAM or on disk."""

    tile: int | None
    disk: bool = False
    untiled_bytes: int = 0
    tiled_bytes: int = 0

    def describe(self) -> str:
        if self.tile is None:
            return "whole image"
        return f"tiles of {self.tile}px, activations in {'files' if self.disk else 'memory'}"


def choose(plan: Plan, tile: int | None, max_memory: int | None) -> Strategy:
    """Whole, or the largest tile whose stored activations plus one tile's working set fit `max_memory`."""
    whole = untiled_bytes(plan.graph)
    stored = stored_bytes(plan)
    if max_memory is None:
        return Strategy(tile, False, whole, stored + tile_bytes(plan, tile)) if tile else Strategy(None, False, whole)
    if tile is None and whole <= max_memory:
        return Strategy(None, False, whole)
    longest = max(plan.graph.nodes[0].size[1:])
    candidates = [tile] if tile else sorted({min(side, longest) for side in TILE_CHOICES}, reverse=True)
    for disk in (False, True):
        for side in candidates:
            working = tile_bytes(plan, side)
            if working + (0 if disk else stored) <= max_memory:
                return Strategy(side, disk, whole, working + (0 if disk else stored))
    size = "x".join(map(str, plan.graph.nodes[0].size[1:][::-1]))
    smallest = tile_bytes(plan, candidates[-1])
    raise TransganError(
        f"--max-memory {format_bytes(max_memory)}: a {size} image needs {format_bytes(smallest)} for one tile of "
        f"{candidates[-1]}px even with activations in files; raise --max-memory or lower --tile"
    )


class TiledEngine(Engine):
    """A torch engine whose images run in tiles (all of them with `tile`, the oversized ones with only
    `max_memory`), normalisation on whole-image statistics and dropout masks drawn for the whole image."""

    name = "torch-tiled"

    def __init__(self, inner: TorchEngine, tile: int | None = None, max_memory: int | None = None,
                 seed: int | None = DEFAULT_SEED, folder: str | Path | None = None):  # fmt: skip
        if inner.info.get("kind") != "translator":
            raise TransganError("--tile and --max-memory are for translators; a sampler makes fixed-size images")
        if tile is None and max_memory is None:
            raise TransganError("tiled translation needs --tile N or --max-memory SIZE")
        self.inner, self.tile, self.max_memory, self.seed = inner, check_tile(tile), max_memory, seed
        self.info, self.device, self.precision = inner.info, inner.device, inner.precision
        self.folder = str(folder) if folder is not None else None
        mode = self.info.get("test_time", "eval")
        self.graph: Graph = lower(inner.net, int(self.info.get("input_nc", 3)), mode)
        self.last: Strategy | None = None  # how the latest image ran (benchmarks and tests read it)

    def describe(self) -> str:
        if self.tile:
            how = f"tiles of {self.tile}px" + (f", at most {format_bytes(self.max_memory)}" if self.max_memory else "")
        else:
            how = f"whole images up to {format_bytes(self.max_memory)} of activations, tiles beyond"
        return f"{self.inner.describe()}; {how}"

    def plan_for(self, height: int, width: int) -> tuple[Plan, Strategy]:
        """The plan and strategy an image of `height` x `width` gets."""
        plan = make_plan(self.graph, height, width)
        return plan, choose(plan, self.tile, self.max_memory)

    def run(self, batch: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        batch = np.asarray(batch, np.float32)
        if self.tile is None and len(batch) > 1:  # --max-memory alone: a batch that fits runs whole, at once
            plan, strategy = self.plan_for(*batch.shape[2:])
            if strategy.tile is None and strategy.untiled_bytes * len(batch) <= self.max_memory:
                self.last = strategy
                return self.inner.run(batch)
        return np.concatenate([self._one(image[None]) for image in batch])

    def _one(self, image: np.ndarray) -> np.ndarray:
        plan, strategy = self.plan_for(*image.shape[2:])
        self.last = strategy
        if strategy.tile is None:
            return self.inner.run(image)
        draw_dropout_masks(plan.graph, self.seed)
        autocast = None
        if self.precision != "fp32":
            autocast = torch.autocast(torch.device(self.device).type, dtype=PRECISIONS[self.precision])
        with (
            tempfile.TemporaryDirectory(prefix="transgan-tiles-", dir=self.folder)
            if strategy.disk
            else nullcontext() as folder
        ):
            runner = TiledRun(plan, self.device, folder if strategy.disk else None)
            output = runner.run(torch.from_numpy(np.ascontiguousarray(image)), strategy.tile, autocast)
        for node in plan.graph.nodes:  # full-size dropout masks are per image size: do not keep them
            node.params.pop("mask", None)
        return output.numpy()

    def close(self) -> None:
        self.inner.close()


def open_tiled(
    model_spec: str | Path,
    tile: int | None,
    max_memory: str | int | None,
    engine: str = "auto",
    seed: int | None = DEFAULT_SEED,
    **options: Any,
) -> TiledEngine:
    """A TiledEngine for MODEL (a model file, run directory or pretrained name); `options` go to open_engine.

    Tiles run through the torch network: `engine` 'auto' and 'torch' pick it. An exported .onnx graph cannot
    be tiled exactly (each tile's normalisation would see only that tile), so it is refused with the way out.
    """
    check_tile(tile)
    if Path(model_spec).suffix.lower() == ".onnx":
        raise TransganError(
            f"{model_spec}: an ONNX graph normalises whatever it is given, so its tiles would disagree; pass the "
            "model file it was exported from (tiles run through its torch network, exactly)"
        )
    if engine not in ("auto", "torch"):
        raise TransganError(f"--engine {engine} with --tile/--max-memory: tiles run with the torch engine; use auto")
    budget = parse_memory(max_memory) if isinstance(max_memory, str) else max_memory
    from transgan.inference.engines import open_engine  # ONNX support is imported only where engines open

    inner = open_engine(model_spec, engine="torch", seed=seed, **options)
    if not isinstance(inner, TorchEngine):
        raise TransganError(f"{model_spec}: tiled translation needs the torch engine")
    return TiledEngine(inner, tile, budget, seed)


def open_translator(model_spec: str | Path, tile: int | None = None, max_memory: str | None = None, **options: Any):
    """`open_tiled` when `tile` or `max_memory` is given, else the plain `open_engine`: the CLI's one call."""
    if tile is None and max_memory is None:
        from transgan.inference.engines import open_engine

        return open_engine(model_spec, **options)
    return open_tiled(model_spec, tile, max_memory, **options)
