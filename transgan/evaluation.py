"""Evaluate a generator on held-out data: translate or generate, then FID/KID/precision-recall, paired metrics."""

from __future__ import annotations

import math
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from transgan.checkpoint import ModelFile
from transgan.config import EvalOptions
from transgan.errors import TransganError
from transgan.inference.engines import TorchEngine
from transgan.inference.pipeline import decode, encode, translate_folder
from transgan.inference.sampling import generate
from transgan.metrics import (
    Extractor,
    classifier_accuracy,
    compute_features,
    compute_folder_features,
    extractor_name,
    feature_statistics,
    list_images,
    load_extractor,
    load_features,
    paired_metrics,
    real_statistics,
    save_features,
    score_features,
    to_uint8,
)
from transgan.nets.test_time import check_mode
from transgan.nets.test_time import test_time as at_test_time

METRICS = ("fid", "kid", "pr", "paired")
FEATURE_METRICS = frozenset({"fid", "kid", "pr"})
# What training logs under eval/: scores only, not the image counts.
LOGGED = ("fid", "kid", "kid_std", "precision", "recall", "l1", "psnr", "ssim", "accuracy")
# Folder pairs accepted as translation test data: ours (A/, B/) and the reference's unaligned layout.
DOMAIN_FOLDERS = (("A", "B"), ("testA", "testB"))


def parse_metrics(text: str, flag: str = "--eval-metrics") -> frozenset[str]:
    """A comma-separated metric list ('fid,kid,pr,paired') as a set; unknown names raise."""
    names = {name.strip().lower() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(METRICS))
    if unknown or not names:
        raise TransganError(f"{flag} {text!r}: use a comma-separated list of {', '.join(METRICS)}")
    return frozenset(names)


# ---------------------------------------------------------------------------------------------- data
def translation_folders(data: str | Path, direction: str | None) -> tuple[Path, Path]:
    """(inputs, targets) of translation test data DIR/A and DIR/B (or testA/testB), swapped for BtoA."""
    root = Path(data)
    for a, b in DOMAIN_FOLDERS:
        if (root / a).is_dir() and (root / b).is_dir():
            return (root / b, root / a) if direction == "BtoA" else (root / a, root / b)
    raise TransganError(
        f"--data {root}: a translation model is evaluated on a folder with A/ and B/ sub-folders "
        "(inputs and targets; the same file names pair them for L1/PSNR/SSIM)"
    )


def _by_stem(folder: Path) -> dict[str, Path]:
    return {path.relative_to(folder).with_suffix("").as_posix(): path for path in list_images(folder)}


def has_pairs(data: str | Path, direction: str | None = None) -> bool:
    """Whether translation test data holds pairs: an input and a target with the same relative name."""
    inputs, targets = translation_folders(data, direction)
    return bool(_by_stem(inputs).keys() & _by_stem(targets).keys())


def _is_class_dataset(path: Path) -> bool:
    # Sources only the class-dataset readers understand: a .zip of class folders, a folder of MNIST idx files.
    from transgan.data.classes import find_idx

    if path.suffix == ".npz":  # an .npz is a zip archive too
        return False
    return (path.is_file() and zipfile.is_zipfile(path)) or (path.is_dir() and bool(find_idx(path)))


def check_reference(data: str | Path, needs_features: bool) -> None:
    """Fail early on a reference that cannot serve: missing, without images, or a .npz lacking features."""
    path = Path(data)
    if path.suffix == ".npz" and path.is_file():
        if needs_features and load_features(path)["features"] is None:
            raise TransganError(f"{path} holds only mean and covariance; KID and precision/recall need images")
    elif not _is_class_dataset(path):
        list_images(path)  # raises one line for a missing or empty folder


def reference_statistics(
    data: str | Path,
    extractor: Extractor,
    *,
    image_size: int,
    channels: int,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """Statistics of real images for generated samples: a folder or .npz (real_statistics), or a .zip / MNIST
    idx folder read like training data at the generator's size and channels."""
    path = Path(data)
    if not _is_class_dataset(path):
        return real_statistics(path, extractor, batch_size, device, cache)
    from transgan.data.classes import class_dataset

    dataset = class_dataset(path, image_size, channels=channels)
    info = {"extractor": extractor_name(extractor), "folder": str(path.resolve()), "count": len(dataset)}
    if cache is not None and Path(cache).is_file():
        stats = load_features(cache)
        if all(stats.get(key) == value for key, value in info.items()) and stats["features"] is not None:
            return stats

    def batches() -> Iterator[Tensor]:
        for first in range(0, len(dataset), batch_size):
            items = [dataset[(i, i)]["image"] for i in range(first, min(first + batch_size, len(dataset)))]
            yield to_uint8(torch.stack(items))

    features = compute_features(batches(), extractor, batch_size, device)
    if cache is not None:
        save_features(cache, features, **info)
    mu, sigma = feature_statistics(features)
    return {"mu": mu, "sigma": sigma, "features": features, **info}


# ---------------------------------------------------------------------------------------------- translators
def _first_inputs(inputs: Path, n: int, work: Path) -> Path:
    """`inputs` itself, or a folder of links to its first `n` images (relative paths kept, so names still pair)."""
    files = list_images(inputs)
    if n >= len(files):
        return inputs
    subset = work / "inputs"
    for path in files[:n]:
        link = subset / path.relative_to(inputs)
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(path.resolve())
        except OSError:  # file systems without symlinks
            shutil.copyfile(path, link)
    return subset


def _resized_copy(folder: Path, size: int, out: Path) -> Path:
    """Every image of `folder` scaled like `--resize` scales the inputs, as PNG: targets must match outputs."""
    for path in list_images(folder):
        encode(decode(path, 3, size), (out / path.relative_to(folder)).with_suffix(".png"))
    return out


def evaluate_translator(
    engine: TorchEngine,
    data: str | Path,
    *,
    extractor: Extractor | None,
    metrics: frozenset[str],
    n: int,
    batch_size: int,
    device: str | torch.device,
    resize: int | None = None,
    out_dir: str | Path | None = None,
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """Translate the first `n` inputs of DIR/A (DIR/B for BtoA) into PNGs, then compare them with the targets:
    L1/PSNR/SSIM by file name ('paired') and FID/KID/precision-recall against the whole target folder."""
    inputs, targets = translation_folders(data, engine.info.get("direction"))
    if out_dir is not None and Path(out_dir).is_dir() and any(Path(out_dir).iterdir()):
        # Every image in the folder is measured: leftovers of another run would be counted too.
        raise TransganError(f"--out {out_dir}: not empty; give a new or empty folder for the translated images")
    with tempfile.TemporaryDirectory(prefix="transgan-eval-") as scratch:
        work = Path(scratch)
        out = Path(out_dir) if out_dir is not None else work / "outputs"
        summary = translate_folder(
            engine, _first_inputs(inputs, n, work), out, batch_size=batch_size, resize=resize, overwrite=True, png=True
        )
        if summary.translated == 0:
            raise TransganError(f"--data {data}: none of the inputs in {inputs} could be read")
        if resize:
            targets, cache = _resized_copy(targets, resize, work / "targets"), None  # a fresh copy: nothing to reuse
        results: dict[str, Any] = {"images": summary.translated}
        if summary.unreadable:
            results["unreadable"] = len(summary.unreadable)
        if "paired" in metrics:
            scores = paired_metrics(out, targets)
            results.update({key: scores[key] for key in ("pairs", "l1", "psnr", "ssim")})
        if metrics & FEATURE_METRICS:
            stats = real_statistics(targets, extractor, batch_size, device, cache)
            fake = compute_folder_features(out, extractor, batch_size, device)
            results.update(score_features(stats, fake, kid="kid" in metrics, pr="pr" in metrics))
    return results


# ---------------------------------------------------------------------------------------------- samplers
def class_counts(n: int, num_classes: int) -> list[int]:
    """`n` samples spread over classes as evenly as possible (the first n % K classes get one more)."""
    if num_classes == 0:
        return [n]
    return [n // num_classes + (k < n % num_classes) for k in range(num_classes)]


@torch.no_grad()
def evaluate_sampler(
    G: nn.Module,
    data: str | Path,
    *,
    extractor: Extractor | None,
    metrics: frozenset[str],
    n: int,
    batch_size: int,
    device: str | torch.device,
    seed: int = 0,
    truncation: float | None = None,
    classifier: Callable[[Tensor], Tensor] | None = None,
    class_names: list[str] | None = None,
    out_dir: str | Path | None = None,
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """Generate `n` samples balanced over classes (chunks of `batch_size`, seeds derived from `seed`), then
    FID/KID/precision-recall against `data` and, with a classifier, the share classified as requested."""
    if "paired" in metrics:
        raise TransganError("paired metrics (L1/PSNR/SSIM) need a translation model; drop 'paired'")
    if n < 2:
        raise TransganError(f"--n {n}: FID needs at least 2 samples")
    if extractor is not None:
        check_reference(data, needs_features=bool(metrics & {"kid", "pr"}))  # before minutes of sampling
    num_classes = int(getattr(G, "num_classes", 0))
    features, logits, labels = [], [], []
    chunk_index = 0
    for k, count in enumerate(class_counts(n, num_classes)):
        for first in range(0, count, batch_size):
            size = min(batch_size, count - first)
            # One seed per chunk: the same --seed and --batch-size give the same samples at every evaluation.
            samples = generate(G, [k] if num_classes else None, size, seed * 1_000_003 + chunk_index, truncation)
            if samples.shape[-1] != G.image_size:  # a growing G (ProGAN) before its last stage: shown at full size
                samples = F.interpolate(samples, size=(G.image_size, G.image_size), mode="nearest")
            images = to_uint8(samples)
            chunk_index += 1
            if out_dir is not None:
                _save_samples(images, Path(out_dir), class_names[k] if num_classes and class_names else None, first)
            if extractor is not None:
                features.append(compute_features(images, extractor, batch_size, device))
            if classifier is not None:
                logits.append(classifier(images.to(device)).float().cpu())
            labels.append(torch.full((size,), k))
    results: dict[str, Any] = {"samples": n}
    if extractor is not None and metrics & FEATURE_METRICS:
        stats = reference_statistics(
            data,
            extractor,
            image_size=G.image_size,
            channels=G.channels,
            batch_size=batch_size,
            device=device,
            cache=cache,
        )
        results.update(score_features(stats, np.concatenate(features), kid="kid" in metrics, pr="pr" in metrics))
    if classifier is not None:
        if not num_classes:
            raise TransganError("--classifier needs a class-conditional model; this one is unconditional")
        # The logits are already computed: the 'classifier' handed on just passes them through.
        accuracy = classifier_accuracy(lambda x: x, torch.cat(logits), torch.cat(labels), batch_size)
        results["accuracy"] = accuracy.overall
        results["accuracy_worst_class"] = min(accuracy.per_class.values())
    return results


def _save_samples(images: Tensor, out: Path, class_name: str | None, first: int) -> None:
    from PIL import Image

    folder = out / class_name if class_name else out
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(folder / f"{first + i:05d}.png")


# ---------------------------------------------------------------------------------------------- both
def evaluate_model(
    model: ModelFile,
    data: str | Path,
    *,
    extractor: Extractor | None = None,
    metrics: frozenset[str] = frozenset({"fid"}),
    n: int = 10000,
    direction: str | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    seed: int = 0,
    truncation: float | None = None,
    resize: int | None = None,
    classifier: Callable[[Tensor], Tensor] | None = None,
    out_dir: str | Path | None = None,
    cache: str | Path | None = None,
    test_time: str | None = None,
) -> dict[str, Any]:
    """Translate (pix2pix, cyclegan) or generate (cgan) with `model`, then measure against `data`.

    Translators: `data` holds A/ and B/; samplers: real images (folder, .npz statistics, .zip or MNIST
    idx folder). `extractor` is needed for fid/kid/pr; `classifier` (samplers) maps uint8 images to logits.
    The generator runs the test-time way `test_time` ('reference' or 'eval'; default: the model's own),
    `seed` seeding its test-time dropout too; its modes are restored afterwards (live training networks).
    """
    if n < 1:
        raise TransganError(f"--n {n}: must be at least 1")
    if metrics & FEATURE_METRICS and extractor is None:
        raise TransganError("FID, KID and precision/recall need a feature extractor (--features)")
    net, direction = model.generator(direction)
    info = model.info(direction).as_dict()
    info["test_time"] = check_mode(test_time or info["test_time"])
    if info["kind"] == "translator":
        # channels_last stays off: during training `net` is the live generator, whose layout must not change.
        with TorchEngine(net, info, str(device), "fp32", channels_last=False, seed=seed) as engine:
            return evaluate_translator(
                engine,
                data,
                extractor=extractor,
                metrics=metrics,
                n=n,
                batch_size=batch_size,
                device=device,
                resize=resize,
                out_dir=out_dir,
                cache=cache,
            )
    with at_test_time(net, info["test_time"], seed):
        return evaluate_sampler(
            net,
            data,
            extractor=extractor,
            metrics=metrics,
            n=n,
            batch_size=batch_size,
            device=device,
            seed=seed,
            truncation=truncation,
            classifier=classifier,
            class_names=model.class_names,
            out_dir=out_dir,
            cache=cache,
        )


class TrainingEvaluator:
    """`--eval-every`: checked and set up when training starts (so a missing extractor fails before step 1),
    then called on rank 0 between steps; returns `eval/<metric>` values to log."""

    def __init__(self, options: EvalOptions, model_now: Callable[[], ModelFile], device: torch.device, run_dir: Path):
        self.model_now, self.device = model_now, device
        self.metrics = parse_metrics(options.metrics)
        self.data, self.n = options.data, options.n
        if not self.data:
            raise TransganError("--eval-every needs --eval-data DIR: held-out images to evaluate on")
        if self.n < 2:
            raise TransganError(f"--eval-n {self.n}: evaluate on at least 2 images")
        info = model_now().info()
        direction = info.direction
        if info.kind == "translator":
            list_images(translation_folders(self.data, direction)[1])  # targets: a missing folder fails now
            if "paired" in self.metrics and not has_pairs(self.data, direction):
                raise TransganError(
                    f"--eval-metrics paired: no file in {self.data}'s input folder has a namesake among the targets"
                )
        elif "paired" in self.metrics:
            raise TransganError("--eval-metrics paired needs a translation task (pix2pix, cyclegan)")
        else:
            check_reference(self.data, needs_features=bool(self.metrics & {"kid", "pr"}))
        self.extractor = None
        if self.metrics & FEATURE_METRICS:
            weights = options.inception_weights or None
            self.extractor = load_extractor(options.features, weights, device, flag_prefix="eval-")
        # Reference features are computed at the first evaluation and reused, across resumes too.
        self.cache = Path(run_dir) / "eval" / "reference.npz"

    def __call__(self) -> dict[str, float]:
        # evaluate_model gives the live networks back in their training modes.
        results = evaluate_model(
            self.model_now(), self.data, extractor=self.extractor, metrics=self.metrics, n=self.n,
            device=self.device, cache=self.cache,
        )  # fmt: skip
        return {f"eval/{key}": float(results[key]) for key in LOGGED if key in results and math.isfinite(results[key])}
