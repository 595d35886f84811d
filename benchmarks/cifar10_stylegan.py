"""Conditional StyleGAN on CIFAR-10 (32x32) by the CLI for a few minutes: a class-by-class sample grid and a
style-mixing figure for the README; prints JSON.

    python benchmarks/cifar10_stylegan.py --minutes 15 --out /tmp/cifar10-stylegan --figures docs/

Reads ../shared/data/cifar10/cifar10-jpg.zip (train split) unless --data says otherwise. Every option the CLI
takes can follow `--` (e.g. `-- --channel-max 128` on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

DATA = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
ZIP = DATA / "cifar10" / "cifar10-jpg.zip"


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--data", type=Path, default=ZIP)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cifar10-stylegan"))
    parser.add_argument("--figures", type=Path, default=Path("docs"), help="where the two PNGs go")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    parser.add_argument("extra", nargs="*", help="more `transgan train stylegan` options, after --")
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    started = time.perf_counter()
    run(["transgan", "train", "stylegan", "--data", str(args.data), "--split", "train", "--channels", "3",
         "--image-size", "32", "--max-minutes", str(args.minutes), "--out", str(args.out), "--device", args.device,
         "--no-progress", *args.extra])  # fmt: skip
    train_seconds = time.perf_counter() - started
    args.figures.mkdir(parents=True, exist_ok=True)
    grid, mix = args.figures / "cifar10_stylegan_samples.png", args.figures / "cifar10_stylegan_mixing.png"
    # One row of 8 per class (airplane .. truck); then the classic mixing grid for one class (horse).
    classes = [option for k in range(10) for option in ("--class", str(k))]
    run(["transgan", "generate", str(args.out), *classes, "--n", "8", "--nrow", "8", "--seed", "0", "--out", str(grid)])
    run(["transgan", "generate", str(args.out), "--class", "7", "--mix", "1,2,3,4", "5,6,7,8,9",
         "--out", str(mix)])  # fmt: skip
    rows = [json.loads(line) for line in (args.out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = rows[-1] if rows else {}
    report = {
        "minutes": args.minutes,
        "train_seconds": round(train_seconds, 1),
        "steps": last.get("step"),
        "images_per_s": last.get("speed/images_per_s"),
        "D/accuracy_real": last.get("D/accuracy_real"),
        "D/accuracy_fake": last.get("D/accuracy_fake"),
        "health/diversity": last.get("health/diversity"),
        "figures": [str(grid), str(mix)],
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
