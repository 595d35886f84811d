"""Latency, throughput and peak memory of an engine on random input (what `transgan bench` prints)."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from transgan.errors import TransganError
from transgan.inference.engines import Engine


def _rss_mib() -> float:
    """Resident memory of this process in MiB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


@contextmanager
def peak_memory(device: str):
    """Yields a dict filled on exit with peak host RSS and (CUDA) device memory in use, both in MiB.

    Device memory is sampled from the driver, so it also sees ONNX Runtime's allocations, which
    torch's allocator statistics would miss.
    """
    peaks = {"host_peak_mib": _rss_mib(), "device_peak_mib": None}
    cuda = device.startswith("cuda")
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.005):
            peaks["host_peak_mib"] = max(peaks["host_peak_mib"], _rss_mib())
            if cuda:
                free, total = torch.cuda.mem_get_info(torch.device(device))
                peaks["device_peak_mib"] = max(peaks["device_peak_mib"] or 0.0, (total - free) / 2**20)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peaks
    finally:
        stop.set()
        sampler.join()
        peaks["host_peak_mib"] = round(max(peaks["host_peak_mib"], _rss_mib()), 1)
        if peaks["device_peak_mib"] is not None:
            peaks["device_peak_mib"] = round(peaks["device_peak_mib"], 1)


def sample_input(engine: Engine, batch_size: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Random input of the right kind: images in [-1, 1] for translators, (noise, labels) for samplers."""
    generator = np.random.default_rng(0)
    info = engine.info
    if info["kind"] == "sampler":
        noise = generator.standard_normal((batch_size, info["latent_dim"]), dtype=np.float32)
        labels = np.arange(batch_size) % info["num_classes"] if info.get("num_classes") else None
        return noise, labels
    multiple = int(info.get("size_multiple") or 1)
    height, width = size
    if height % multiple or width % multiple:
        raise TransganError(f"--size {height}x{width}: {info.get('arch')} needs multiples of {multiple}")
    images = generator.uniform(-1, 1, (batch_size, info["input_nc"], height, width)).astype(np.float32)
    return images, None


def benchmark(
    engine: Engine,
    batch_size: int,
    size: tuple[int, int] = (256, 256),
    warmup: int = 2,
    iterations: int = 10,
    min_seconds: float = 0.0,
) -> dict[str, Any]:
    """Time `iterations` runs (more until `min_seconds` have passed) after `warmup` untimed ones."""
    batch, labels = sample_input(engine, batch_size, size)
    for _ in range(warmup):  # first runs pay for allocation, autotuning and compilation
        engine.run(batch, labels)
    times = []
    with peak_memory(engine.device) as peaks:
        start = time.perf_counter()
        while len(times) < iterations or time.perf_counter() - start < min_seconds:
            begin = time.perf_counter()
            engine.run(batch, labels)  # returns host arrays, so GPU work is finished when it returns
            times.append(time.perf_counter() - begin)
    latency = np.array(times) * 1000
    return {
        "engine": engine.describe(),
        "batch_size": batch_size,
        "size": f"{size[0]}x{size[1]}" if engine.info["kind"] == "translator" else None,
        "iterations": len(times),
        "latency_p50_ms": round(float(np.percentile(latency, 50)), 2),
        "latency_p99_ms": round(float(np.percentile(latency, 99)), 2),
        "images_per_s": round(batch_size * len(times) / (latency.sum() / 1000), 2),
        **peaks,
    }
