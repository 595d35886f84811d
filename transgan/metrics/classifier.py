"""Accuracy of a user classifier on class-conditional samples: does 'generate class k' give class k?"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from transgan.errors import TransganError
from transgan.metrics.features import list_images, read_image


@dataclass
class ClassifierAccuracy:
    """Overall accuracy, accuracy and sample count per class index."""

    overall: float
    per_class: dict[int, float] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)


@torch.no_grad()
def classifier_accuracy(
    classifier: Callable[[Tensor], Tensor],
    images: Tensor,
    labels: Tensor,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> ClassifierAccuracy:
    """Share of `images` whose argmax of `classifier(images)` equals `labels`, overall and per class.

    Images are passed as given (in whatever range the classifier expects), in batches on `device`.
    """
    labels = torch.as_tensor(labels).long().cpu()
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise TransganError(
            f"classifier accuracy needs one label per image, got {images.shape[0]} images and {labels.shape[0]} labels"
        )
    predicted = torch.cat([classifier(batch.to(device)).argmax(dim=1).cpu() for batch in images.split(batch_size)])
    correct = predicted == labels
    per_class, counts = {}, {}
    for k in labels.unique().tolist():
        mask = labels == k
        counts[k] = int(mask.sum())
        per_class[k] = float(correct[mask].double().mean())
    return ClassifierAccuracy(float(correct.double().mean()), per_class, counts)


def classifier_accuracy_folder(
    folder: str | Path,
    classifier: Callable[[Tensor], Tensor],
    class_names: list[str],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    mode: str = "RGB",
) -> ClassifierAccuracy:
    """Accuracy on samples stored as folder/<class name>/*.png; the label is the index in `class_names`.

    The classifier receives uint8 (N, C, H, W) batches, like a feature extractor (wrap a float network
    with transgan.metrics.FloatInput).
    """
    folder = Path(folder)
    images, labels = [], []
    for index, name in enumerate(class_names):
        if not (folder / name).is_dir():
            continue  # a class that was not generated is simply absent from the report
        for path in list_images(folder / name):
            images.append(torch.from_numpy(read_image(path, mode)).permute(2, 0, 1))
            labels.append(index)
    if not images:
        raise TransganError(f"{folder} has no subfolder named after a class ({', '.join(class_names[:5])}, ...)")
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) > 1:
        raise TransganError(f"images under {folder} have different sizes {sorted(sizes)[:3]}; resize them to one")
    return classifier_accuracy(classifier, torch.stack(images), torch.tensor(labels), batch_size, device)
