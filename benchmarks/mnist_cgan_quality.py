"""Re-measure a class-conditional MNIST model (default: the shipped mnist-cgan); prints JSON.

Accuracy: the fraction of generated samples that a CNN trained on the first 8,000 MNIST test-set images
classifies as the requested class. FD: Frechet distance between that CNN's 128-d penultimate features of
the samples and of the 2,000 held-out images (8,000..9,999), which no model here was trained on.

    python benchmarks/mnist_cgan_quality.py [MODEL] [--per-class 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_classifier import MNIST, TRAIN_STOP, MnistClassifier, classifier, load_mnist, predict

from transgan.metrics.frechet import fid_from_features
from transgan.models import open_model
from transgan.tasks.cgan import generate


def measure(
    model: str = "mnist-cgan",
    per_class: int = 200,
    seed: int = 0,
    truncation: float | None = None,
    root: Path = MNIST,
    judge: MnistClassifier | None = None,
    against: tuple[int, int] = (TRAIN_STOP, 10000),
) -> dict:
    """Class accuracy and FD of `model` (a file, run dir or pretrained name) against MNIST test-set images
    [against[0], against[1]): the held-out ones by default; training images to choose between models."""
    started = time.perf_counter()
    judge = judge if judge is not None else classifier(root)
    held_images, held_labels = load_mnist(*against, root)
    held_predicted, held_features = predict(judge, held_images)
    G = open_model(model).primary
    fakes = generate(G, list(range(10)), per_class, seed, truncation)
    requested = torch.arange(10).repeat_interleave(per_class)
    predicted, features = predict(judge, fakes)
    per_class_accuracy = [(predicted[requested == k] == k).float().mean().item() for k in range(10)]
    # Within-class variety: mean per-pixel std across 64 samples of one class (0.26 for 64 real digits);
    # near 0 means the generator ignores its noise, which class accuracy cannot see.
    spread = fakes.view(10, per_class, -1)[:, :64].std(1).mean(1)
    held_spread = torch.stack([held_images[held_labels == k][:64].flatten(1).std(0).mean() for k in range(10)])
    # Reference point: two disjoint halves of real data give the FD floor of this feature space.
    half = len(held_features) // 2
    return {
        "model": model,
        "against_images": list(against),
        "samples": len(fakes),
        "class_accuracy": (predicted == requested).float().mean().item(),
        "class_accuracy_per_class": [round(a, 4) for a in per_class_accuracy],
        "frechet_distance": fid_from_features(features, held_features),
        "within_class_std": round(spread.mean().item(), 4),
        "within_class_std_per_class": [round(v, 4) for v in spread.tolist()],
        "within_class_std_real": round(held_spread.mean().item(), 4),
        "judge_accuracy_on_reference_images": (held_predicted == held_labels).float().mean().item(),
        "frechet_distance_real_half_vs_half": fid_from_features(held_features[:half], held_features[half:]),
        "seconds": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="mnist-cgan", help="model file, run dir or pretrained name")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truncation", type=float, default=None)
    parser.add_argument("--mnist", type=Path, default=MNIST, help="folder of the MNIST idx files (t10k-*)")
    args = parser.parse_args()
    print(json.dumps(measure(args.model, args.per_class, args.seed, args.truncation, args.mnist), indent=2))
