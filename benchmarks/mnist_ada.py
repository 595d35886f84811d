"""cgan with and without ADA on 1,000 MNIST digits, for the same CPU minutes each, then judged; prints JSON.

    python benchmarks/mnist_ada.py --minutes 8 --out /tmp/mnist-ada

Both arms are plain `transgan train cgan` commands (the task's defaults) on MNIST test-set images [0, 1000),
one with `--ada`. They run at the same time, each pinned to its own CPU core with one thread (`taskset`,
OMP_NUM_THREADS=1), for `--max-minutes`, so each gets one core for the same minutes. The judge
(benchmarks/mnist_classifier.py) measures Frechet distance in its feature space against the held-out images
[8000, 10000) and class accuracy. D's accuracy on reals is read two ways: as logged during training (the
images D saw, augmented in the ADA arm) and recomputed from the last checkpoint's D on clean images, the
1,000 training digits and 1,000 held-out ones (a gap between the two is D memorising its training set).
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_cgan_quality import measure
from mnist_classifier import MNIST, TRAIN_STOP, classifier, load_mnist

from transgan.logs import read_metrics
from transgan.train import build, stored_run
from transgan.training_state import list_checkpoints, read_training_checkpoint

ARMS = ("plain", "ada")


def run_arms(minutes: float, out: Path, data: Path, images: int, ada_kimg: float, extra: list[str]) -> dict:
    """Train both arms at once, one core each; their commands, exit codes and wall clocks."""
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= len(ARMS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs = {}
    for index, name in enumerate(ARMS):
        options = ["--ada", "--ada-kimg", str(ada_kimg)] if name == "ada" else []
        run_dir = out / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        command = ["transgan", "train", "cgan", *options, *extra, "--data", str(data), "--stop", str(images),
                   "--max-minutes", str(minutes), "--log-every", "10", "--out", str(run_dir),
                   "--no-progress"]  # fmt: skip
        launched = (["taskset", "-c", str(index)] if pin else []) + command
        log = open(out / f"{name}.log", "w")
        process = subprocess.Popen(launched, env=env, stdout=log, stderr=subprocess.STDOUT)
        runs[name] = (command, process, time.perf_counter(), log)
    report = {}
    for name, (command, process, started, log) in runs.items():
        code = process.wait()
        log.close()
        report[name] = {
            "command": " ".join(command),
            "exit_code": code,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "pinned_core": ARMS.index(name) if pin else None,
        }
        if code != 0:
            report[name]["log_tail"] = (out / f"{name}.log").read_text()[-2000:]
    return report


def logged(run_dir: Path, tail: float = 0.2) -> dict:
    """Steps, the final p and D's logged accuracies averaged over the last `tail` of the logged rows."""
    rows = [row for row in read_metrics(run_dir / "metrics.jsonl") if "D/accuracy_real" in row]
    last = rows[-max(1, int(len(rows) * tail)) :]
    mean = lambda key: sum(row[key] for row in last) / len(last)  # noqa: E731
    checkpoint = read_training_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1][1])
    return {
        "steps": checkpoint.meta["counters"]["step"],
        "final_p": float(checkpoint.tensors["task.ada.p"]) if "task.ada.p" in checkpoint.tensors else 0.0,
        "logged_d_accuracy_real": round(mean("D/accuracy_real"), 4),
        "logged_d_accuracy_fake": round(mean("D/accuracy_fake"), 4),
        "logged_rt": round(mean("ada/rt"), 4) if "ada/rt" in last[-1] else None,
    }


@torch.no_grad()
def clean_d_accuracy(run_dir: Path, data: Path, images: int) -> dict:
    """D of the last checkpoint on un-augmented reals: the training digits and as many held-out ones."""
    trainer = build(stored_run(run_dir).with_train(out=str(run_dir)))
    checkpoint = read_training_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1][1])
    D, task = trainer.task.networks["D"], trainer.task
    D.load_state_dict(checkpoint.section("net.D"))
    D.eval()
    size = trainer.task.config.image_size
    result = {}
    for name, (start, stop) in {"train": (0, images), "held_out": (TRAIN_STOP, TRAIN_STOP + images)}.items():
        reals, labels = load_mnist(start, stop, data, size=size)
        scores = torch.cat([D(reals[i : i + 250], labels[i : i + 250]) for i in range(0, len(reals), 250)])
        threshold = task.regularizer.threshold
        result[f"clean_d_accuracy_{name}"] = round((scores > threshold).float().mean().item(), 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="CPU minutes per arm (both run at once)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs, logs and report.json")
    parser.add_argument("--mnist", type=Path, default=MNIST, help="folder of the MNIST idx files (t10k-*)")
    parser.add_argument("--images", type=int, default=1000, help="training digits: test-set images [0, N)")
    parser.add_argument("--per-class", type=int, default=200, help="samples per class to judge")
    # StyleGAN2-ADA's 500k images per unit of p suit runs of millions of images; a run of minutes on one core
    # sees tens of thousands, in which p moves by a few hundredths at most. A lower value lets it act sooner.
    parser.add_argument("--ada-kimg", type=float, default=500.0, help="--ada-kimg of the ADA arm")
    parser.add_argument("--option", action="append", default=[], help="an extra `transgan train` option, both arms")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    judge = classifier(args.mnist)  # trained (and cached) before the clock starts
    extra = [token for option in args.option for token in option.split()]
    report = {"minutes": args.minutes, "images": args.images, "ada_kimg": args.ada_kimg, "cpu_count": os.cpu_count()}
    report["arms"] = run_arms(args.minutes, args.out, args.mnist, args.images, args.ada_kimg, extra)
    for name, entry in report["arms"].items():
        if entry["exit_code"] == 0:
            run_dir = args.out / name
            entry.update(logged(run_dir))
            entry.update(clean_d_accuracy(run_dir, args.mnist, args.images))
            quality = measure(str(run_dir), args.per_class, 0, None, args.mnist, judge)
            entry["frechet_distance"] = quality["frechet_distance"]
            entry["class_accuracy"] = quality["class_accuracy"]
            entry["frechet_distance_real_half_vs_half"] = quality["frechet_distance_real_half_vs_half"]
    plain, ada = report["arms"]["plain"], report["arms"]["ada"]
    if "frechet_distance" in plain and "frechet_distance" in ada:
        report["goals"] = {
            "fd_with_ada_no_worse": ada["frechet_distance"] <= plain["frechet_distance"],
            "p_above_0_at_the_end": ada["final_p"] > 0,
            "logged_d_accuracy_real_lower_with_ada": ada["logged_d_accuracy_real"] < plain["logged_d_accuracy_real"],
            "clean_d_accuracy_train_lower_with_ada": ada["clean_d_accuracy_train"] < plain["clean_d_accuracy_train"],
        }
    text = json.dumps(report, indent=2)
    (args.out / "report.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
