"""Train the cgan task on CIFAR-10 (32x32 RGB, 10 classes) for a few minutes to prove the colour path; prints JSON.

    python benchmarks/cifar10_cgan.py [--steps 300] [--batch-size 32] [--out /tmp/cifar10-cgan] [--device auto]
        [--data cifar10-jpg.zip] [--minutes 0] [--json figures.json]

Reads ../shared/data/cifar10/cifar10-jpg.zip (train split) unless --data says otherwise. On a 2-core CPU keep
the default small widths; on a GPU raise --steps (or set --minutes), --ngf, --ndf and --num-workers, e.g.
    python benchmarks/cifar10_cgan.py --data DIR/cifar10-jpg.zip --minutes 2 --steps 100000 --batch-size 64 \
        --ngf 64 --ndf 64 --num-workers 8 --out /tmp/cifar10-cgan --json results/cifar10_cgan.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from transgan.checkpoint import read_model
from transgan.config import TrainConfig
from transgan.logs import read_metrics
from transgan.tasks.cgan import CGANConfig, generate
from transgan.train import build_trainer

DATA = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ZIP = DATA / "cifar10" / "cifar10-jpg.zip"


def run(
    steps: int,
    batch_size: int,
    out: Path,
    device: str,
    ngf: int,
    ndf: int,
    num_workers: int,
    data: Path = ZIP,
    minutes: float = 0.0,
) -> dict:
    """Train for `steps` (or `minutes` of wall clock, whichever ends first) and return the figures."""
    config = CGANConfig(data=str(data), split="train", image_size=32, channels=3, ngf=ngf, ndf=ndf)
    train = TrainConfig(
        out=str(out), steps=steps, max_minutes=minutes, batch_size=batch_size, ema=0.999, device=device,
        num_workers=num_workers, log_every=25, sample_every=steps, checkpoint_every=steps, progress=False,
        tensorboard=False,
    )  # fmt: skip
    started = time.perf_counter()
    trainer = build_trainer("cgan", config, train)
    setup_seconds = time.perf_counter() - started
    path = trainer.fit()
    seconds = time.perf_counter() - started
    rows = read_metrics(out / "metrics.jsonl")
    model = read_model(path)
    fakes = generate(model.primary, list(range(10)), 8, seed=0)
    grid = out / "fakes_by_class.png"  # one row of 8 per class (the trainer's grids only come every N steps)
    save_image(make_grid(fakes, nrow=8, normalize=True, value_range=(-1, 1), pad_value=1.0), grid)
    dataset = trainer.task.dataset  # 80 real images spread over the whole set, for the statistics below
    reals = torch.stack([dataset[(i, 0)]["image"] for i in range(0, len(dataset), max(1, len(dataset) // 80))][:80])
    return {
        "data": str(data),
        "classes": model.class_names,
        "device": str(trainer.device),
        "steps": trainer.step,
        "device_name": torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "cpu",
        "torch": torch.__version__,
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
        "samples_grid": str(grid),
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
    parser.add_argument("--data", type=Path, default=ZIP, help="cifar10-jpg.zip (train/<class>/*.jpg inside)")
    parser.add_argument("--minutes", type=float, default=0.0, help="stop after this much training (0: --steps)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: not found (the real-data kit lives in ../shared/data)")
    figures = run(
        args.steps,
        args.batch_size,
        args.out,
        args.device,
        args.ngf,
        args.ndf,
        args.num_workers,
        args.data,
        args.minutes,
    )
    text = json.dumps(figures, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        shutil.copyfile(figures["samples_grid"], args.json.with_suffix(".png"))
    print(text)
