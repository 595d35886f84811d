"""A short real-data run: horses -> zebra-striped horses for a fixed number of minutes, then a sample grid.

    python benchmarks/cut_horse2zebra.py --task cut --minutes 10 --grid docs/cut_horse2zebra_cut.png --out cut.json
    python benchmarks/cut_horse2zebra.py --task cyclegan --minutes 10 --grid docs/cut_horse2zebra_cyclegan.png \\
        --out cyclegan.json

Domain A: the data kit's 50 real horses (horse2zebra/testA); domain B: the 50 zebra-striped versions of them
(horse2zebra/official_fake_B). Trains with the task's defaults except the widths and image size given, one
intra-op thread, until --minutes pass (the trainer's --max-minutes), then translates the first --show horses
with the model file and saves a grid: top row the inputs, bottom row the translations. Prints JSON (steps
done, seconds per step, last logged losses).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid, save_image

from transgan.checkpoint import read_model
from transgan.config import TrainConfig
from transgan.logs import read_metrics
from transgan.registry import TASKS
from transgan.train import build_trainer

DATA = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_images(folder: Path, count: int, size: int) -> torch.Tensor:
    """The first `count` images of `folder`, bicubic-resized to `size`, in [-1, 1], NCHW."""
    images = []
    for path in sorted(folder.glob("*.png"))[:count]:
        pixels = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float32)
        images.append(torch.from_numpy(pixels / 127.5 - 1).permute(2, 0, 1))
    return torch.stack(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cut", choices=["cut", "fastcut", "cyclegan"])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=128, help="crop size; images are first scaled to 1.12x")
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--ndf", type=int, default=32)
    parser.add_argument("--show", type=int, default=8, help="horses in the grid")
    parser.add_argument("--grid", required=True, help="PNG to write the sample grid to")
    parser.add_argument("--run-dir", default="", help="run directory (default: a temporary one)")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    args = parser.parse_args()
    torch.set_num_threads(1)
    horses, zebras = DATA / "horse2zebra" / "testA", DATA / "horse2zebra" / "official_fake_B"
    config = TASKS.get(args.task).config_class(
        domain_a=str(horses), domain_b=str(zebras), load_size=round(args.size * 286 / 256), crop_size=args.size,
        ngf=args.ngf, ndf=args.ndf,
    )  # fmt: skip
    run_dir = Path(args.run_dir or tempfile.mkdtemp()) / args.task
    train_config = TrainConfig(
        out=str(run_dir), max_minutes=args.minutes, num_workers=0, progress=False, tensorboard=False,
        log_every=25, sample_every=10**9, checkpoint_every=10**9,
    )  # fmt: skip
    start = time.perf_counter()
    trainer = build_trainer(args.task, config, train_config)  # the schedule is long; --max-minutes ends the run
    model_path = trainer.fit()
    seconds, steps = time.perf_counter() - start, trainer.step
    rows = read_metrics(run_dir / "metrics.jsonl")
    model = read_model(model_path)
    G, _ = model.generator("AtoB")
    real = load_images(horses, args.show, args.size)
    with torch.no_grad():
        fake = G(real)
    grid = make_grid(torch.cat([real, fake]), nrow=args.show, normalize=True, value_range=(-1, 1), padding=2)
    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, args.grid)
    result = {
        "benchmark": "cut_horse2zebra",
        "task": args.task,
        "machine": f"{platform.processor() or platform.machine()}, 1 intra-op thread",
        "minutes": args.minutes,
        "seconds": round(seconds, 1),
        "steps": steps,
        "seconds_per_step": round(seconds / max(steps, 1), 3),
        "size": args.size,
        "ngf": args.ngf,
        "ndf": args.ndf,
        "last_logged": {key: round(value, 4) for key, value in (rows[-1] if rows else {}).items()},
        "grid": args.grid,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
