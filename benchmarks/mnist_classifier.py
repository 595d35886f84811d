"""A small MNIST CNN trained on the first 8,000 test-set images: the judge of generated digits (accuracy, FD)."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transgan.data.classes import class_dataset

MNIST = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) / "mnist"
TRAIN_STOP = 8000  # the convention: images [0, 8000) train, [8000, 10000) are held out
CACHE = Path(os.environ.get("TRANSGAN_CACHE", Path.home() / ".cache" / "transgan")) / "mnist_classifier_v1.pt"


class MnistClassifier(nn.Module):
    """Two conv blocks and a 128-d penultimate layer whose activations are the Frechet-distance features."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(128, 10)

    def features(self, images: Tensor) -> Tensor:
        return self.body(images)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.body(images))


def load_mnist(start: int, stop: int, root: Path = MNIST, size: int = 28) -> tuple[Tensor, Tensor]:
    """Images (N, 1, size, size) in [-1, 1] and labels (N,) of MNIST test-set images [start, stop)."""
    dataset = class_dataset(root, size, start=start, stop=stop)
    items = [dataset[(i, 0)] for i in range(len(dataset))]
    return torch.stack([item["image"] for item in items]), torch.tensor([item["label"] for item in items])


def train_classifier(
    images: Tensor, labels: Tensor, epochs: int = 4, seed: int = 0, batch_size: int = 64
) -> MnistClassifier:
    """Adam, fixed seed, small random shifts (so slightly off-centre generated digits are judged fairly)."""
    torch.manual_seed(seed)
    net = MnistClassifier()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for first in range(0, len(images), batch_size):
            index = order[first : first + batch_size]
            dx, dy = torch.randint(-2, 3, (2,), generator=generator).tolist()
            batch = torch.roll(images[index], shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(net(batch), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


def classifier(root: Path = MNIST, cache: Path | None = CACHE) -> MnistClassifier:
    """The judge: loaded from the cache when it is there, else trained (about a minute on CPU) and cached."""
    if cache is not None and cache.is_file():
        net = MnistClassifier()
        net.load_state_dict(torch.load(cache, weights_only=True))
        return net.eval()
    images, labels = load_mnist(0, TRAIN_STOP, root)
    net = train_classifier(images, labels)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), cache)
    return net


@torch.no_grad()
def predict(net: MnistClassifier, images: Tensor, batch_size: int = 500) -> tuple[Tensor, np.ndarray]:
    """Predicted classes and float64 penultimate features of images in [-1, 1]."""
    classes, features = [], []
    for first in range(0, len(images), batch_size):
        h = net.features(images[first : first + batch_size].float())
        classes.append(net.head(h).argmax(1))
        features.append(h.double().numpy())
    return torch.cat(classes), np.concatenate(features)


def save_torchscript(net: MnistClassifier, folder: Path) -> tuple[Path, Path]:
    """The judge as two TorchScript files for `transgan eval`: `--features` (128-d) and `--classifier` (logits)."""
    folder.mkdir(parents=True, exist_ok=True)
    features, logits = folder / "mnist_features.pt", folder / "mnist_logits.pt"
    with warnings.catch_warnings():  # TorchScript is what `eval --features` loads; its deprecation notice is noise
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(net.body.eval()).save(str(features))
        torch.jit.script(net.eval()).save(str(logits))
    return features, logits


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--torchscript", type=Path, help="also write mnist_features.pt / mnist_logits.pt here")
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args()
    started = time.perf_counter()
    net = classifier(cache=None)
    train_seconds = time.perf_counter() - started
    held_images, held_labels = load_mnist(TRAIN_STOP, 10000)
    predicted, _ = predict(net, held_images)
    accuracy = (predicted == held_labels).float().mean().item()
    report = {"held_out_accuracy": accuracy, "train_seconds": round(train_seconds, 1)}
    if args.torchscript:
        report["torchscript"] = [str(path) for path in save_torchscript(net, args.torchscript)]
    print(json.dumps(report))
    if args.json_out:
        args.json_out.write_text(json.dumps(report))
