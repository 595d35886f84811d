"""Where `--engine auto` remembers its choices: one JSON per model content, machine and setting, in the cache."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from transgan import __version__
from transgan.inference.measure import Measurement
from transgan.models import cache_dir

# The instruction-set features that decide which kernels run fast (x86 and ARM); others do not change the choice.
ISA_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
             "amx_tile", "amx_bf16", "amx_int8", "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16")  # fmt: skip
TUNING_FORMAT = 2  # bump when the measurement changes meaning: older cached choices are then ignored


@dataclass
class Choice:
    """The engine and batch size that measured fastest, with everything that was measured."""

    engine: str
    batch_size: int
    images_per_s: float
    key: str
    machine: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # candidate -> why it was not measured
    from_cache: bool = False
    left_out: list[str] = field(default_factory=list)  # candidates not measured because their cost did not fit
    job_s: float | None = None  # the estimated job the measuring was sized for (None: the budget alone)

    def summary(self) -> str:
        source = "cached choice" if self.from_cache else f"measured {len(self.measurements)} configurations"
        return f"{self.engine} at batch {self.batch_size}: {self.images_per_s:.2f} images/s ({source})"


def cpu_description() -> dict[str, Any]:
    """CPU model name, core counts and the instruction-set flags of ISA_FLAGS that this CPU has."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "CPU part") and name in ("", platform.processor(), platform.machine()):
                name = value.strip() or name
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: the name and core count still tell machines apart
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": name, "cores": os.cpu_count(), "usable_cores": usable,
            "isa": [flag for flag in ISA_FLAGS if flag in flags]}  # fmt: skip


def machine_description(device: str = "cpu") -> dict[str, Any]:
    """What a tuning result depends on besides the model: the CPU (and GPU), torch and ONNX Runtime versions."""
    machine: dict[str, Any] = {**cpu_description(), "torch": torch.__version__, "transgan": __version__}
    try:
        import onnxruntime

        machine["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        machine["onnxruntime"] = None
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        machine["gpu"] = torch.cuda.get_device_name(index)
        machine["gpu_capability"] = list(torch.cuda.get_device_capability(index))
    return machine


def tuning_key(model_digest: str, machine: dict[str, Any], device: str, setting: dict[str, Any]) -> str:
    """The cache key: model content, machine, device and what was tried (candidates, size, direction...)."""
    text = json.dumps([TUNING_FORMAT, model_digest, machine, device, setting], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def choice_path(label: str, key: str) -> Path:
    """The cache file of a choice: the model file's stem (for people browsing the cache) and the key."""
    return cache_dir() / "autotune" / f"{label}-{key}.json"


def read_choice(path: Path, key: str) -> Choice | None:
    """The choice cached at `path` under `key`; None when absent, damaged or written for another key."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or damaged: measure again
    if data.get("key") != key:
        return None
    measurements = [Measurement(**m) for m in data.get("measurements", [])]
    choice = {k: data["choice"][k] for k in ("engine", "batch_size", "images_per_s")}
    return Choice(**choice, key=key, machine=data["machine"], measurements=measurements,
                  skipped=data.get("skipped", {}), from_cache=True, left_out=data.get("left_out", []),
                  job_s=data.get("job_s"))  # fmt: skip


def write_choice(path: Path, choice: Choice, setting: dict[str, Any], model: str) -> None:
    """Write `choice` atomically (a temporary file renamed), with what it was measured for."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"key": choice.key, "model": model, "setting": setting, "machine": choice.machine,
            "choice": {"engine": choice.engine, "batch_size": choice.batch_size,
                       "images_per_s": choice.images_per_s},
            "measurements": [asdict(m) for m in choice.measurements], "skipped": choice.skipped,
            "left_out": choice.left_out, "job_s": choice.job_s,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(data, indent=1))
    os.replace(partial, path)
