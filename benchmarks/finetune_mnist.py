"""Fine-tuning example: the shipped mnist-cgan adapted to thick digits (`--init-from`) versus the same minutes from
scratch, both judged by the project's MNIST classifier; prints JSON.

    python benchmarks/finetune_mnist.py --minutes 5 --out /tmp/finetune

The new style: MNIST test digits [0, 8000) dilated by a 3x3 maximum (strokes about twice as thick), of which
only `--images` (default 500, about 50 per class) are given to training. Both arms are the same
`transgan train cgan` command with the shipped model's architecture and loss (dcgan, z 64, ngf 32, ndf 64,
label smoothing 0.9, mode seeking 1); one adds `--init-from mnist-cgan` (its G; D starts new). They run at the
same time, each pinned to its own core with one thread, for `--minutes` each. The judge (benchmarks/
mnist_classifier.py, trained on plain digits) then reads 200 samples per class of each model: class accuracy,
and the Frechet distance in its feature space to the held-out thick digits [8000, 10000) (lower: closer to the
new style). The shipped model itself (no training) is scored too, as the starting point.
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

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_cgan_quality import as_mnist
from mnist_classifier import MNIST, TRAIN_STOP, classifier, load_mnist, predict

from transgan.metrics.frechet import fid_from_features
from transgan.models import open_model
from transgan.tasks.cgan import generate
from transgan.training_state import list_checkpoints

# The shipped model's recipe (pretrained/mnist-cgan.md), so its G loads whole.
SHIPPED = ["--arch", "dcgan", "--latent-dim", "64", "--ngf", "32", "--ndf", "64", "--embed-dim", "50",
           "--real-label", "0.9", "--mode-seeking", "1", "--lr-policy", "constant"]  # fmt: skip


def thicken(images: torch.Tensor) -> torch.Tensor:
    """White strokes on black, in [-1, 1], dilated by a 3x3 maximum."""
    return F.max_pool2d(images, 3, stride=1, padding=1)


def write_class_folders(images: torch.Tensor, labels: torch.Tensor, folder: Path) -> None:
    for index, (image, label) in enumerate(zip(images, labels)):
        (folder / str(int(label))).mkdir(parents=True, exist_ok=True)
        pixels = ((image[0].numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(folder / str(int(label)) / f"{index:05d}.png")


def score(model: str, judge, held_features: torch.Tensor, per_class: int) -> dict:
    G = open_model(model).primary
    fakes = as_mnist(generate(G, list(range(10)), per_class, 0, None))
    predicted, features = predict(judge, fakes)
    wanted = torch.arange(10).repeat_interleave(per_class)
    return {
        "class_accuracy": round((predicted == wanted).float().mean().item(), 4),
        "frechet_distance_to_thick_digits": round(fid_from_features(features, held_features), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for data, runs, logs and report.json")
    parser.add_argument("--minutes", type=float, default=5.0, help="training minutes of each arm")
    parser.add_argument("--images", type=int, default=500, help="thick digits given to training")
    parser.add_argument("--per-class", type=int, default=200, help="samples per class to judge")
    parser.add_argument("--mnist", type=Path, default=MNIST)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    judge = classifier(args.mnist)  # trained (and cached) before the clock starts
    images, labels = load_mnist(0, args.images, args.mnist)
    data = args.out / "thick"
    shutil.rmtree(data, ignore_errors=True)
    write_class_folders(thicken(images), labels, data)
    held, held_labels = load_mnist(TRAIN_STOP, 10000, args.mnist)
    held_predicted, held_features = predict(judge, thicken(held))

    arms = {"finetune": ["--init-from", "mnist-cgan"], "scratch": []}
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= len(arms)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running = {}
    for core, (name, extra) in enumerate(arms.items()):
        run_dir = args.out / name
        shutil.rmtree(run_dir, ignore_errors=True)
        command = ["transgan", "train", "cgan", "--data", str(data), "--image-size", "28", "--channels", "1",
                   *SHIPPED, *extra, "--steps", "1000000", "--max-minutes", str(args.minutes),
                   "--out", str(run_dir), "--no-progress", "--no-tensorboard", "--sample-every", "100000"]  # fmt: skip
        log = open(args.out / f"{name}.log", "w")
        launched = (["taskset", "-c", str(core)] if pin else []) + command
        process = subprocess.Popen(launched, env=env, stdout=log, stderr=subprocess.STDOUT)
        running[name] = (command, process, log, time.perf_counter())
    report = {
        "benchmark": "benchmarks/finetune_mnist.py",
        "cpu_count": os.cpu_count(),
        "minutes_per_arm": args.minutes,
        "training_images": args.images,
        "judge_accuracy_on_held_out_thick_digits": round((held_predicted == held_labels).float().mean().item(), 4),
        "frechet_distance_thick_half_vs_half": round(
            fid_from_features(held_features[: len(held) // 2], held_features[len(held) // 2 :]), 3
        ),
        "shipped_model_untrained": score("mnist-cgan", judge, held_features, args.per_class),
        "arms": {},
    }
    for name, (command, process, log, started) in running.items():
        code = process.wait()
        log.close()
        checkpoints = list_checkpoints(args.out / name / "checkpoints")
        entry = {
            "command": " ".join(command),
            "exit_code": code,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "steps": checkpoints[-1][0] if checkpoints else 0,
            "pinned_core": list(arms).index(name) if pin else None,
        }
        if code == 0:
            entry.update(score(str(args.out / name), judge, held_features, args.per_class))
        else:
            entry["log_tail"] = (args.out / f"{name}.log").read_text()[-2000:]
        report["arms"][name] = entry
    text = json.dumps(report, indent=2)
    (args.out / "report.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
