"""Re-measure an MNIST generator (default: the shipped mnist-cgan); prints JSON.

Accuracy: the fraction of generated samples that a CNN trained on the first 8,000 MNIST test-set images
classifies as the requested class (conditional models only). FD: Frechet distance between that CNN's 128-d
penultimate features of the samples and of the 2,000 held-out images (8,000..9,999), which no model here was
trained on. Diversity: per-pixel spread within each class (the requested class, or the class the judge sees
for unconditional models) over the same for real digits. Samples of other sizes (32 px) are resized to 28.

    python benchmarks/mnist_cgan_quality.py [MODEL] [--per-class 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

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
    G = open_model(model).primary
    # Real digits take the same path as the samples (loaded at the model's size, then back to 28 px), so a
    # 32 px model is not charged for the resize blur.
    held_images, held_labels = load_mnist(*against, root, size=G.image_size)
    held_images = as_mnist(held_images)
    held_predicted, held_features = predict(judge, held_images)
    conditional = bool(G.num_classes)
    fakes = as_mnist(generate(G, list(range(10)), per_class, seed, truncation))
    predicted, features = predict(judge, fakes)
    # Unconditional models are grouped by the class the judge sees: there is no requested one.
    groups = torch.arange(10).repeat_interleave(per_class) if conditional else predicted
    per_class_accuracy = [(predicted[groups == k] == k).float().mean().item() for k in range(10)]
    # Within-class variety: mean per-pixel std across up to 64 samples of one class (0.26 for 64 real digits);
    # near 0 means the generator ignores its noise, which class accuracy cannot see.
    spread = torch.stack([class_spread(fakes[groups == k][:64]) for k in range(10)])
    held_spread = torch.stack([class_spread(held_images[held_labels == k][:64]) for k in range(10)])
    # Reference point: two disjoint halves of real data give the FD floor of this feature space.
    half = len(held_features) // 2
    return {
        "model": model,
        "image_size": G.image_size,
        "against_images": list(against),
        "samples": len(fakes),
        "conditional": conditional,
        "class_accuracy": (predicted == groups).float().mean().item() if conditional else None,
        "class_accuracy_per_class": [round(a, 4) for a in per_class_accuracy] if conditional else None,
        "class_histogram": torch.bincount(predicted, minlength=10).tolist(),
        "frechet_distance": fid_from_features(features, held_features),
        "within_class_std": round(spread.nanmean().item(), 4),
        "within_class_std_per_class": [round(v, 4) for v in spread.tolist()],
        "within_class_std_real": round(held_spread.mean().item(), 4),
        "diversity_vs_real": round((spread.nanmean() / held_spread.mean()).item(), 4),
        "judge_accuracy_on_reference_images": (held_predicted == held_labels).float().mean().item(),
        "frechet_distance_real_half_vs_half": fid_from_features(held_features[:half], held_features[half:]),
        "seconds": round(time.perf_counter() - started, 1),
    }


def as_mnist(images: torch.Tensor) -> torch.Tensor:
    """Samples as the judge reads them: one channel, 28x28 (a 32 px model's output is resized, antialiased)."""
    if images.shape[1] == 3:
        images = images.mean(1, keepdim=True)
    if images.shape[-1] != 28:
        images = F.interpolate(images, size=(28, 28), mode="bilinear", antialias=True, align_corners=False)
    return images


def class_spread(images: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel standard deviation over a set of images; NaN when fewer than two (a class never drawn)."""
    if len(images) < 2:
        return torch.tensor(float("nan"))
    return images.flatten(1).std(0).mean()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="mnist-cgan", help="model file, run dir or pretrained name")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--truncation", type=float, default=None)
    parser.add_argument("--mnist", type=Path, default=MNIST, help="folder of the MNIST idx files (t10k-*)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args()
    text = json.dumps(measure(args.model, args.per_class, args.seed, args.truncation, args.mnist), indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)
