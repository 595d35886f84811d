"""Train the cgan task on CIFAR-10 (32x32 RGB, 10 classes) for a few minutes to prove the colour path; prints JSON.

    python benchmarks/cifar10_cgan.py [--steps 300] [--batch-size 32] [--out /tmp/cifar10-cgan] [--device auto]

Reads ../shared/data/cifar10/cifar10-jpg.zip (train split). On a 2-core CPU keep the default small widths;
on a GPU raise --steps, --ngf and --ndf.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from transgan.checkpoint import read_model
from transgan.config import TrainConfig
from transgan.logs import read_metrics
from transgan.tasks.cgan import CGANConfig, generate
from transgan.train import build_trainer

DATA = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ZIP = DATA / "cifar10" / "cifar10-jpg.zip"


def run(steps: int, batch_size: int, out: Path, device: str, ngf: int, ndf: int, num_workers: int) -> dict:
    config = CGANConfig(data=str(ZIP), split="train", image_size=32, channels=3, ngf=ngf, ndf=ndf)
    train = TrainConfig(
        out=str(out), steps=steps, batch_size=batch_size, ema=0.999, device=device, num_workers=num_workers,
        log_every=25, sample_every=steps, checkpoint_every=steps, progress=False, tensorboard=False,
    )  # fmt: skip
    started = time.perf_counter()
    trainer = build_trainer("cgan", config, train)
    setup_seconds = time.perf_counter() - started
    path = trainer.fit()
    seconds = time.perf_counter() - started
    rows = read_metrics(out / "metrics.jsonl")
    model = read_model(path)
    fakes = generate(model.primary, list(range(10)), 8, seed=0)
    reals = torch.stack([trainer.task.dataset[(i, 0)]["image"] for i in range(0, 50000, 625)])
    return {
        "data": str(ZIP),
        "classes": model.class_names,
        "device": str(trainer.device),
        "steps": steps,
        "batch_size": batch_size,
        "setup_seconds": round(setup_seconds, 1),
        "train_seconds": round(seconds - setup_seconds, 1),
        "images_per_s": round(rows[-1]["speed/images_per_s"], 1),
        "first_logged": {k: round(v, 4) for k, v in rows[0].items() if k.startswith(("loss/", "D/"))},
        "last_logged": {k: round(v, 4) for k, v in rows[-1].items() if k.startswith(("loss/", "D/", "health/"))},
        "fake_shape": list(fakes.shape),
        # Colour statistics: a colour path that works gives fakes with real-like per-channel means and spreads.
        "fake_channel_mean": [round(v, 3) for v in fakes.mean((0, 2, 3)).tolist()],
        "real_channel_mean": [round(v, 3) for v in reals.mean((0, 2, 3)).tolist()],
        "fake_channel_std": [round(v, 3) for v in fakes.std((0, 2, 3)).tolist()],
        "real_channel_std": [round(v, 3) for v in reals.std((0, 2, 3)).tolist()],
        "model_file": str(path),
        "model_bytes": path.stat().st_size,
        "samples_grid": str(max((out / "samples").glob("*.png"))),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--ndf", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cifar10-cgan"))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    if not ZIP.is_file():
        raise SystemExit(f"{ZIP}: not found (the real-data kit lives in ../shared/data)")
    print(
        json.dumps(
            run(args.steps, args.batch_size, args.out, args.device, args.ngf, args.ndf, args.num_workers), indent=2
        )
    )
