"""Run a translator's tiled graph over one whole image: layer by layer, each full intermediate kept in host
memory (or a file), each computed tile by tile with the halo its layers need, norms on whole-image statistics.

Kept in full ("stored"): the input, the output, every activation used twice (residual and skip connections)
and the inputs of whole-image norms that are costly to compute; a cheap norm input is only summed (its
statistics, per channel, in float64, tile by tile). Everything else is recomputed inside a tile from the stored
rectangles it needs, so the result equals the untiled run up to float32 summation order.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from transgan.inference.tiled_graph import Box, Graph, compute, needed

MIN_TILE = 16  # pixels of an intermediate: smaller tiles spend more on halos than on the tile itself
# A norm input whose conv costs at most this many multiply-adds per value is summed, not stored: a ResNet's stem,
# its stride-2 and transposed convs (3*7*7, 64*3*3, 256*3*3/4...) but not its residual convs (256*3*3).
RECOMPUTE_MACS = 600
RECOMPUTE_CHAIN = 2
FLOAT_BYTES = 4


class RamStore:
    """A full activation in host memory, (1, C, H, W) float32."""

    def __init__(self, size: tuple[int, int, int], data: Tensor | None = None):
        self.data = torch.empty((1, *size)) if data is None else data

    def read(self, box: Box) -> Tensor:
        (y0, y1), (x0, x1) = box
        return self.data[:, :, y0:y1, x0:x1]

    def write(self, box: Box, value: Tensor) -> None:
        (y0, y1), (x0, x1) = box
        self.data[:, :, y0:y1, x0:x1] = value.detach().to("cpu", torch.float32)

    def close(self) -> None:
        self.data = torch.empty(0)


class DiskStore:
    """A full activation in a file, rows of (W, C) float32: a tile's rows are read and written with one call
    each, and the file's pages stay in the page cache rather than in this process's resident memory."""

    def __init__(self, size: tuple[int, int, int], folder: str):
        self.channels, self.height, self.width = size
        handle, self.path = tempfile.mkstemp(dir=folder, suffix=".f32")
        self.fd = handle
        os.ftruncate(self.fd, self.channels * self.height * self.width * FLOAT_BYTES)

    def _offset(self, y: int, x: int) -> int:
        return (y * self.width + x) * self.channels * FLOAT_BYTES

    def read(self, box: Box) -> Tensor:
        (y0, y1), (x0, x1) = box
        rows = np.empty((y1 - y0, x1 - x0, self.channels), np.float32)
        if x0 == 0 and x1 == self.width:  # whole rows are one contiguous range
            self._read_into(rows, self._offset(y0, 0))
        else:
            for index, y in enumerate(range(y0, y1)):
                self._read_into(rows[index], self._offset(y, x0))
        return torch.from_numpy(rows).permute(2, 0, 1).unsqueeze(0)

    def _read_into(self, array: np.ndarray, offset: int) -> None:
        view = memoryview(array).cast("B")
        while len(view):  # a read may return fewer bytes than asked (the kernel's per-call limit)
            count = os.preadv(self.fd, [view], offset)
            if count <= 0:
                raise OSError(f"{self.path}: activation file ended early")
            view, offset = view[count:], offset + count

    def write(self, box: Box, value: Tensor) -> None:
        (y0, y1), (x0, x1) = box
        rows = np.ascontiguousarray(value.detach().to("cpu", torch.float32)[0].permute(1, 2, 0).numpy())
        for index, y in enumerate(range(y0, y1)):
            view, offset = memoryview(rows[index]).cast("B"), self._offset(y, x0)
            while len(view):
                count = os.pwrite(self.fd, view, offset)
                view, offset = view[count:], offset + count

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            os.unlink(self.path)
            self.fd = -1


@dataclass
class Plan:
    """What one image size needs: which nodes are stored or only summed, in which order, when each is freed."""

    graph: Graph
    passes: list[int]  # nodes computed over the whole image, in order (the input excluded, the output last)
    stored: set[int]  # nodes kept in full; the others in `passes` are only summed for their statistics
    free_after: dict[int, list[int]]  # pass -> stored nodes no longer needed once it is done
    stats_of: dict[int, list[int]]  # node -> the norm nodes that need its statistics


def make_plan(graph: Graph, height: int, width: int) -> Plan:
    """Shape `graph` for `height` x `width` and decide what is stored, summed or recomputed.

    A norm's input that a cheap conv makes (a stem conv from 3 channels, a stride-2 or transposed conv) and that
    is larger than every stored residual or skip tensor is not stored: one pass sums its statistics and later
    tiles compute it again from the stored rectangles they read. At most RECOMPUTE_CHAIN such nodes follow each
    other, so recomputing stays bounded.
    """
    graph.shape(height, width)
    users = graph.consumers()
    stats_of: dict[int, list[int]] = {}
    for index, node in enumerate(graph.nodes):
        if node.kind == "norm":
            stats_of.setdefault(node.inputs[0], []).append(index)
    shared = [i for i, u in enumerate(users) if len(u) > 1]
    stored = {0, graph.output, *shared}
    # Recomputing pays where a node is larger than what must be stored anyway (the residual or skip tensors):
    # a ResNet's full-resolution stem and upsampling outputs, not a mobile ResNet's separable convs.
    largest_shared = max((node_bytes(graph, i) for i in shared if i), default=0)
    recompute: set[int] = set()
    for node in sorted(stats_of):
        cheap = _macs_per_value(graph, node) <= RECOMPUTE_MACS and node_bytes(graph, node) > largest_shared
        if node in stored or not cheap or _chain(graph, node, stored, recompute) >= RECOMPUTE_CHAIN:
            stored.add(node)
        else:
            recompute.add(node)
    passes = sorted((stored | recompute) - {0})
    last_use: dict[int, int] = {}
    for node in passes:
        for source in _stored_reads(graph, node, stored):
            last_use[source] = node
    free_after: dict[int, list[int]] = {}
    for source, node in last_use.items():
        if source != graph.output:
            free_after.setdefault(node, []).append(source)
    return Plan(graph, passes, stored, free_after, stats_of)


def _macs_per_value(graph: Graph, node: int) -> float:
    """Multiply-adds per output value of a conv node (infinite for other kinds: those are always stored)."""
    current = graph.nodes[node]
    if current.kind not in ("conv", "convT"):
        return math.inf
    p = current.params
    fan_in = graph.nodes[current.inputs[0]].size[0] // p["groups"] * p["kernel"][0] * p["kernel"][1]
    return fan_in / (p["stride"][0] * p["stride"][1]) if current.kind == "convT" else fan_in


def _chain(graph: Graph, node: int, stored: set[int], recompute: set[int]) -> int:
    """How many recomputed nodes a tile of `node` computes in a row, at most, before reaching stored ones."""
    depth = 0
    for source in graph.nodes[node].inputs:
        if source not in stored:
            depth = max(depth, _chain(graph, source, stored, recompute) + (source in recompute))
    return depth


def _stored_reads(graph: Graph, node: int, stored: set[int]) -> set[int]:
    """The stored nodes that computing a tile of `node` reads."""
    found, stack = set(), list(graph.nodes[node].inputs)
    while stack:
        source = stack.pop()
        if source in stored:
            found.add(source)
        else:
            stack.extend(graph.nodes[source].inputs)
    return found


def draw_dropout_masks(graph: Graph, seed: int | None) -> None:
    """Each dropout node's full-size mask, drawn in the untiled network's layer order from one CPU generator
    seeded once per image, as transgan.nets.test_time.SeededDropout draws them (so the same masks)."""
    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(seed)
    for node in graph.nodes:
        if node.kind == "dropout":
            keep = 1 - node.params["p"]
            noise = torch.empty((1, *node.size)).bernoulli_(keep, generator=generator if seed is not None else None)
            node.params["mask"] = noise.bool()
            node.params["scale"] = 1 / keep if keep > 0 else 0.0


def tiles(size: tuple[int, int, int], edge: tuple[int, int]) -> Iterator[Box]:
    """Boxes of at most `edge` pixels covering a (C, H, W) activation, row by row."""
    _, height, width = size
    for y in range(0, height, edge[0]):
        for x in range(0, width, edge[1]):
            yield (y, min(y + edge[0], height)), (x, min(x + edge[1], width))


def tile_edge(plan: Plan, node: int, tile: int) -> tuple[int, int]:
    """`tile` input pixels in `node`'s own resolution (a quarter at a ResNet's residual blocks)."""
    _, height, width = plan.graph.nodes[0].size
    _, h, w = plan.graph.nodes[node].size
    return max(MIN_TILE, math.ceil(tile * h / height)), max(MIN_TILE, math.ceil(tile * w / width))


class TiledRun:
    """One image through a planned graph on `device`; stored activations in host memory or, with `folder`,
    in files there."""

    def __init__(self, plan: Plan, device: torch.device, folder: str | None = None):
        self.plan, self.device, self.folder = plan, torch.device(device), folder
        self.stores: dict[int, RamStore | DiskStore] = {}

    def run(self, image: Tensor, tile: int, autocast=None) -> Tensor:
        """(1, C, H, W) float32 CPU in, (1, C', H', W') float32 CPU out."""
        graph = self.plan.graph
        self.stores = {0: RamStore(graph.nodes[0].size, image.float())}
        try:
            for node in self.plan.passes:
                self._pass(node, tile, autocast)
                for source in self.plan.free_after.get(node, []):
                    self.stores.pop(source).close()
            return self.stores[graph.output].data
        finally:
            for store in self.stores.values():
                if isinstance(store, DiskStore):
                    store.close()

    def _pass(self, node: int, tile: int, autocast) -> None:
        """`node` over the whole image, tile by tile: stored, summed for its norms' statistics, or both."""
        size = self.plan.graph.nodes[node].size
        store = None
        if node in self.plan.stored:
            disk = self.folder is not None and node != self.plan.graph.output
            store = DiskStore(size, self.folder) if disk else RamStore(size)
        with_stats = node in self.plan.stats_of
        total = torch.zeros(size[0], dtype=torch.float64, device=self.device)
        squares = torch.zeros_like(total)
        for box in tiles(size, tile_edge(self.plan, node, tile)):
            with torch.inference_mode(), autocast or _nothing():
                value = self._evaluate(node, box).float()
            if with_stats:  # float64 sums: exact enough over millions of pixels
                wide = value.double()
                total += wide.sum((0, 2, 3))
                squares += (wide * wide).sum((0, 2, 3))
            if store is not None:
                store.write(box, value)
        if store is not None:
            self.stores[node] = store
        if with_stats:
            count = size[1] * size[2]
            mean = total / count
            variance = (squares / count - mean * mean).clamp_min(0)
            for norm in self.plan.stats_of[node]:
                self._set_norm(norm, mean, variance)

    def _set_norm(self, norm: int, mean: Tensor, variance: Tensor) -> None:
        params = self.plan.graph.nodes[norm].params
        scale = torch.rsqrt(variance + params["eps"])
        if params["weight"] is not None:
            scale = scale * params["weight"].to(scale)
        shift = -mean * scale
        if params["bias"] is not None:
            shift = shift + params["bias"].to(shift)
        params["scale"], params["shift"] = scale.float(), shift.float()

    def _evaluate(self, node: int, box: Box) -> Tensor:
        graph = self.plan.graph
        if node in self.stores:
            return self.stores[node].read(box).to(self.device, non_blocking=True)
        current = graph.nodes[node]
        if box[0][0] == box[0][1] or box[1][0] == box[1][1]:
            return torch.zeros((1, current.size[0], box[0][1] - box[0][0], box[1][1] - box[1][0]), device=self.device)
        sizes = [graph.nodes[i].size for i in current.inputs]
        boxes = needed(current, box, sizes)
        inputs = [self._evaluate(source, rect) for source, rect in zip(current.inputs, boxes)]
        return compute(current, inputs, boxes, box, sizes)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- memory estimates (activations only; the weights are the same either way) ----------------------------------


def node_bytes(graph: Graph, node: int) -> int:
    channels, height, width = graph.nodes[node].size
    return channels * height * width * FLOAT_BYTES


def untiled_bytes(graph: Graph) -> int:
    """Peak of live activations when the network runs whole, each freed after its last use (eager PyTorch)."""
    users = graph.consumers()
    last = {i: max(u) if u else i for i, u in enumerate(users)}
    live, peak = 0, 0
    for index in range(len(graph.nodes)):
        live += node_bytes(graph, index)
        peak = max(peak, live)
        live -= sum(node_bytes(graph, source) for source in set(graph.nodes[index].inputs) if last[source] == index)
    return peak


def stored_bytes(plan: Plan) -> int:
    """Peak of the stored full activations alive at once."""
    live = peak = node_bytes(plan.graph, 0)
    for node in plan.passes:
        live += node_bytes(plan.graph, node) if node in plan.stored else 0
        peak = max(peak, live)
        live -= sum(node_bytes(plan.graph, source) for source in plan.free_after.get(node, []))
    return peak


def tile_bytes(plan: Plan, tile: int) -> int:
    """The largest working set of one tile: every rectangle computed for it, inputs read included."""
    graph, worst = plan.graph, 0
    for node in plan.passes:
        box = next(tiles(graph.nodes[node].size, tile_edge(plan, node, tile)))
        total, stack = 0, [(node, box)]
        while stack:
            current, rect = stack.pop()
            total += graph.nodes[current].size[0] * (rect[0][1] - rect[0][0]) * (rect[1][1] - rect[1][0]) * 4
            if current in plan.stored and current != node:
                continue
            sizes = [graph.nodes[i].size for i in graph.nodes[current].inputs]
            stack.extend(zip(graph.nodes[current].inputs, needed(graph.nodes[current], rect, sizes)))
        worst = max(worst, total)
    return worst
