"""Cost of a training step: cut, fastcut and cyclegan at the same widths and image size, interleaved; prints JSON.

    python benchmarks/cut_cost.py --out cut_cost.json                       # CPU, 128 px, ngf/ndf 64
    python benchmarks/cut_cost.py --device cuda --size 256 --out cut_cost.json
    python benchmarks/cut_cost.py --quick --out /tmp/cut_cost.json          # tiny smoke run

Each task is the real GANTrainer step (`_train_step`: forward, every phase, optimizer steps) with the task's
published defaults (CUT: PatchNCE on 5 layers with 256 patches and identity loss; FastCUT: no identity loss,
flips; CycleGAN: two generators, two discriminators, image pool), on the same fixed batch of random images.
Steps run in rounds, one step of each task per round, so machine load hits the three alike; the table
reports the median seconds per step and its ratio to cyclegan's.

Memory (`peak_mb`): the task's parameters, gradients and Adam state, plus on CUDA the rise of
torch.cuda.max_memory_allocated over one of its steps, and on CPU the tensors autograd saves for backward over
one step (each storage counted once, by address: free of the allocator's and the machine's noise; a storage
freed by one phase and reused by a later one counts once, so this is near the activations alive at once).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from transgan.config import TrainConfig
from transgan.registry import TASKS
from transgan.train import build_trainer

TASK_NAMES = ("cut", "fastcut", "cyclegan")
NO_EVENTS = 10**9  # log/sample/checkpoint intervals the benchmark never reaches


def write_domains(root: Path, size: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for name in ("A", "B"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            pixels = (rng.random((size, size, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root / "A", root / "B"


def make_trainer(task: str, args: argparse.Namespace, root: Path):
    domain_a, domain_b = write_domains(root / "data", args.size)
    config = TASKS.get(task).config_class(
        domain_a=str(domain_a), domain_b=str(domain_b), preprocess="none", load_size=args.size,
        crop_size=args.size, ngf=args.ngf, ndf=args.ndf,
    )  # fmt: skip
    train = TrainConfig(
        out=str(root / task), device=args.device, num_workers=0, progress=False, tensorboard=False,
        log_every=NO_EVENTS, sample_every=NO_EVENTS, checkpoint_every=NO_EVENTS, batch_size=1,
    )  # fmt: skip
    torch.manual_seed(0)
    trainer = build_trainer(task, config, train)
    batch = next(trainer.stream.batches(0))
    return trainer, batch


def one_step(trainer, batch: dict[str, Any]) -> float:
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    trainer._train_step(batch)
    trainer.step += 1
    sync()
    return time.perf_counter() - start


def state_mb(trainer) -> float:
    """Parameters, gradients and the two Adam moments of every trained network, in MB."""
    count = sum(p.numel() for net in trainer.task.networks.values() for p in net.parameters())
    return 4 * count * 4 / 2**20


def saved_mb(trainer, batch: dict[str, Any]) -> float:
    """MB of tensors autograd keeps for backward over one step (each storage once): the activation memory,
    whatever the allocator and the machine's other jobs do."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        one_step(trainer, batch)
    return sum(storages.values()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per task (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads on CPU")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 32 px, ngf/ndf 8, 2 steps")
    args = parser.parse_args()
    if args.quick:
        args.size, args.ngf, args.ndf, args.steps = 32, 8, 8, 2
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp())
    trainers = {task: make_trainer(task, args, root / task) for task in TASK_NAMES}
    for trainer, batch in trainers.values():  # warm-up (allocator, kernel choice, Adam state)
        one_step(trainer, batch), one_step(trainer, batch)
    times: dict[str, list[float]] = {task: [] for task in TASK_NAMES}
    peaks: dict[str, float] = {}
    for _ in range(args.steps):
        for task, (trainer, batch) in trainers.items():
            if trainer.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            times[task].append(one_step(trainer, batch))
            if trainer.device.type == "cuda":
                rise = (torch.cuda.max_memory_allocated() - base) / 2**20
                peaks[task] = max(peaks.get(task, 0.0), rise + state_mb(trainer))
    if not peaks:  # CPU: the activations kept for backward plus the parameters, gradients and Adam state
        peaks = {task: saved_mb(trainer, batch) + state_mb(trainer) for task, (trainer, batch) in trainers.items()}
    median = {task: statistics.median(values) for task, values in times.items()}
    rows = [
        {
            "task": task,
            "seconds_per_step": round(median[task], 4),
            "time_vs_cyclegan": round(median[task] / median["cyclegan"], 3),
            "peak_mb": round(peaks[task], 1),
            "memory_vs_cyclegan": round(peaks[task] / peaks["cyclegan"], 3),
            "parameters_trained": sum(
                p.numel() for net in trainers[task][0].task.networks.values() for p in net.parameters()
            ),
        }
        for task in TASK_NAMES
    ]
    result = {
        "benchmark": "cut_cost",
        "device": args.device if args.device != "cpu" else f"cpu ({platform.processor() or platform.machine()})",
        "threads": args.threads,
        "size": args.size,
        "ngf": args.ngf,
        "ndf": args.ndf,
        "batch_size": 1,
        "steps_timed": args.steps,
        "torch": torch.__version__,
        "memory": "state + CUDA allocator peak" if args.device.startswith("cuda") else "state + saved for backward",
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
