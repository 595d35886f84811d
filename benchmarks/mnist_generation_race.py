"""Two generation tasks trained from scratch by the CLI for the same wall clock on MNIST, then judged; prints JSON.

    python benchmarks/mnist_generation_race.py --pair cgan,stylegan --minutes 15 --out /tmp/race
    python benchmarks/mnist_generation_race.py --pair dcgan,progan --minutes 15 --out /tmp/race

Each contestant is a plain `transgan train ...` command with its task's defaults on MNIST test-set images
[0, 8000) and `--max-minutes`. Both run at the same time, each pinned to its own CPU core with one thread
(`taskset`, OMP_NUM_THREADS=1), so they get the same machine for the same minutes. The judge
(benchmarks/mnist_classifier.py) then measures class accuracy (conditional models), Frechet distance in its
feature space against the held-out images [8000, 10000) and within-class diversity over real digits'.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_cgan_quality import measure
from mnist_classifier import MNIST, TRAIN_STOP, classifier

from transgan.logs import read_metrics

# The contestants: the task and the options that make it what the comparison names (everything else: defaults).
CONTESTANTS = {
    "cgan": ["cgan"],  # conditional BN G + projection D, hinge loss
    "stylegan": ["stylegan"],  # conditional StyleGAN2
    "dcgan": ["cgan", "--arch", "dcgan", "--no-conditional"],  # unconditional DCGAN
    # Unconditional ProGAN with stages short enough to reach 32 px in minutes (its defaults: 40k images per stage).
    "progan": ["progan", "--stage-images", "8000", "--fade-images", "4000"],
}


def train_command(name: str, out: Path, minutes: float, data: Path) -> list[str]:
    task, *options = CONTESTANTS[name]
    return [
        "transgan", "train", task, *options, "--data", str(data), "--stop", str(TRAIN_STOP),
        "--max-minutes", str(minutes), "--out", str(out), "--no-progress",
    ]  # fmt: skip


def race(names: list[str], minutes: float, out: Path, data: Path) -> dict:
    """Train every contestant at once, one core each, and return their commands, steps and wall clocks."""
    cores = os.cpu_count() or 1
    pin = shutil.which("taskset") is not None and cores >= len(names)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs = {}
    for index, name in enumerate(names):
        run_dir = out / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        command = train_command(name, run_dir, minutes, data)
        launched = (["taskset", "-c", str(index)] if pin else []) + command
        log = open(out / f"{name}.log", "w")
        runs[name] = {"command": " ".join(command), "process": subprocess.Popen(launched, env=env, stdout=log,
                      stderr=subprocess.STDOUT), "started": time.perf_counter(), "log": log}  # fmt: skip
    report = {}
    for name, run in runs.items():
        code = run["process"].wait()
        run["log"].close()
        rows = read_metrics(out / name / "metrics.jsonl")
        report[name] = {
            "command": run["command"],
            "exit_code": code,
            "wall_seconds": round(time.perf_counter() - run["started"], 1),
            "steps": max((row.get("step", 0) for row in rows), default=0),
            "pinned_core": names.index(name) if pin else None,
        }
        if code != 0:
            report[name]["log_tail"] = (out / f"{name}.log").read_text()[-2000:]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = ", ".join(CONTESTANTS)
    parser.add_argument("--pair", default="cgan,stylegan", help=f"comma-separated contestants: {names}")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/mnist-race"))
    parser.add_argument("--mnist", type=Path, default=MNIST, help="folder of the MNIST idx files (t10k-*)")
    parser.add_argument("--per-class", type=int, default=200, help="samples per class to judge")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    names = args.pair.split(",")
    unknown = [name for name in names if name not in CONTESTANTS]
    if unknown:
        parser.error(f"unknown contestant {unknown[0]}; use {', '.join(CONTESTANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    judge = classifier(args.mnist)  # trained (and cached) before the clock starts
    report = {"minutes": args.minutes, "cpu_count": os.cpu_count(), "contestants": race(names, args.minutes,
              args.out, args.mnist)}  # fmt: skip
    for name, entry in report["contestants"].items():
        if entry["exit_code"] == 0:
            entry["quality"] = measure(str(args.out / name), args.per_class, 0, None, args.mnist, judge)
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
