"""Pix2Pix on real CMP Facades pairs (CPU): train on 40, report L1/PSNR on the 10 held out vs copying the input.

    python benchmarks/pix2pix_facades.py --minutes 4 [--data ../shared/data/facades/test] [--out runs/facades-bench]

Prints one JSON object. The held-out pairs are the last 10 file names in sorted order.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import transgan
from transgan.config import TrainConfig
from transgan.tasks.pix2pix import Pix2PixConfig
from transgan.train import build_trainer

ROOT = Path(__file__).resolve().parents[1]


def split(data: Path, work: Path) -> tuple[Path, list[str]]:
    """Links the first 40 pairs into work/train/{A,B}; returns that folder and the 10 held-out names."""
    names = sorted(p.name for p in (data / "A").iterdir())
    for side in ("A", "B"):
        (work / "train" / side).mkdir(parents=True, exist_ok=True)
        for name in names[:40]:
            target = work / "train" / side / name
            if not target.exists():
                target.symlink_to((data / side / name).resolve())
    return work / "train", names[40:]


def load(path: Path, size: int) -> torch.Tensor:
    image = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1.0


def l1_psnr(prediction: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    # On [0, 1] images, as reported for pix2pix-style benchmarks.
    p, t = (prediction.clamp(-1, 1) + 1) / 2, (target + 1) / 2
    mse = float(((p - t) ** 2).mean())
    return float((p - t).abs().mean()), 10 * np.log10(1.0 / max(mse, 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "facades" / "test")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "facades-bench")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    train_dir, held_out = split(args.data, args.out / "data")
    # facades: A = label map, B = photo; the benchmark task is labels -> photo (AtoB).
    task_config = Pix2PixConfig(
        data=str(train_dir), arch="unet_128", ngf=32, ndf=32, load_size=args.size + args.size // 8, crop_size=args.size
    )
    train_config = TrainConfig(
        out=str(args.out / "run"),
        max_minutes=args.minutes,
        batch_size=1,
        num_workers=1,
        progress=False,
        tensorboard=False,
        log_every=20,
        sample_every=10**9,
        checkpoint_every=10**9,
    )
    trainer = build_trainer("pix2pix", task_config, train_config)
    started = time.perf_counter()
    model_path = trainer.fit()
    seconds = time.perf_counter() - started
    G = transgan.load(model_path)
    model_l1, model_psnr, copy_l1, copy_psnr = [], [], [], []
    with torch.no_grad():
        for name in held_out:
            real_A, real_B = load(args.data / "A" / name, args.size), load(args.data / "B" / name, args.size)
            fake_B = G(real_A[None])[0]
            for values, prediction in (((model_l1, model_psnr), fake_B), ((copy_l1, copy_psnr), real_A)):
                l1, psnr = l1_psnr(prediction, real_B)
                values[0].append(l1)
                values[1].append(psnr)
    text = json.dumps(
        {
            "benchmark": "pix2pix_facades",
            "train_pairs": 40,
            "eval_pairs": len(held_out),
            "size": args.size,
            "steps": trainer.step,
            "seconds": round(seconds, 1),
            "model": {"l1": float(np.mean(model_l1)), "psnr_db": float(np.mean(model_psnr))},
            "copy_input_baseline": {"l1": float(np.mean(copy_l1)), "psnr_db": float(np.mean(copy_psnr))},
            "machine": f"{torch.get_num_threads()} CPU threads",
        },
        indent=1,
    )
    print(text)
    if args.json_out:
        args.json_out.write_text(text)


if __name__ == "__main__":
    main()
