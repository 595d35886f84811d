"""Evaluation: FID/KID/IS/precision-recall over any feature extractor, paired L1/PSNR/SSIM, classifier accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from transgan.errors import TransganError
from transgan.metrics.classifier import ClassifierAccuracy, classifier_accuracy, classifier_accuracy_folder
from transgan.metrics.features import (
    Extractor,
    FloatInput,
    InceptionExtractor,
    compute_features,
    compute_folder_features,
    extractor_name,
    feature_statistics,
    inception_extractor,
    list_images,
    load_extractor,
    load_features,
    read_image,
    resolve_inception_weights,
    save_features,
    to_uint8,
)
from transgan.metrics.frechet import fid_from_features, frechet_distance, kernel_inception_distance, mmd2_unbiased
from transgan.metrics.inception_score import inception_score
from transgan.metrics.paired import l1, paired_metrics, psnr, ssim
from transgan.metrics.precision_recall import precision_recall

__all__ = [
    "ClassifierAccuracy",
    "Extractor",
    "FloatInput",
    "InceptionExtractor",
    "classifier_accuracy",
    "classifier_accuracy_folder",
    "compare_folders",
    "compute_features",
    "compute_folder_features",
    "extractor_name",
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "inception_extractor",
    "inception_score",
    "kernel_inception_distance",
    "l1",
    "list_images",
    "load_extractor",
    "load_features",
    "mmd2_unbiased",
    "paired_metrics",
    "precision_recall",
    "psnr",
    "read_image",
    "real_statistics",
    "resolve_inception_weights",
    "save_features",
    "score_features",
    "ssim",
    "to_uint8",
]


def real_statistics(
    real: str | Path,
    extractor: Extractor,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """'mu', 'sigma', 'features' (None for a pytorch-fid .npz) and 'count' of the reference set.

    `real` is an image folder or a statistics .npz. With `cache`, a folder's features are written there and
    reused while the extractor, the folder and its image count are unchanged.
    """
    real, name = Path(real), extractor_name(extractor)
    if real.suffix == ".npz" and real.is_file():
        stats = load_features(real)
        if stats.get("extractor", name) != name:
            raise TransganError(f"{real} holds {stats['extractor']} features, not {name}; use the same --features")
        stats.setdefault("count", len(stats["features"]) if stats["features"] is not None else 0)
        return stats
    files = list_images(real)
    info = {"extractor": name, "folder": str(real.resolve()), "count": len(files)}
    if cache is not None and Path(cache).is_file():
        stats = load_features(cache)
        if all(stats.get(key) == value for key, value in info.items()) and stats["features"] is not None:
            return stats
    features = compute_folder_features(real, extractor, batch_size, device)
    if cache is not None:
        save_features(cache, features, **info)
    mu, sigma = feature_statistics(features)
    return {"mu": mu, "sigma": sigma, "features": features, **info}


def compare_folders(
    real: str | Path,
    fake: str | Path,
    extractor: Extractor,
    *,
    kid: bool = False,
    pr: bool = False,
    inception: bool = False,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    cache: str | Path | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> dict[str, float]:
    """FID between a reference (folder or .npz) and generated images, plus KID, precision/recall and IS on request.

    `inception=True` adds the Inception Score of the fake images; it needs an InceptionExtractor.
    """
    if inception and not isinstance(extractor, InceptionExtractor):
        raise TransganError("the Inception Score needs Inception features (--features inception)")
    stats = real_statistics(real, extractor, batch_size, device, cache)
    if (kid or pr) and stats["features"] is None:
        raise TransganError(f"{real} holds only mean and covariance; KID and precision/recall need an image folder")
    if inception:
        fake_features, fake_logits = compute_folder_features(fake, extractor.features_and_logits, batch_size, device)
    else:
        fake_features = compute_folder_features(fake, extractor, batch_size, device)
    results = score_features(
        stats, fake_features, kid=kid, pr=pr, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size
    )
    if inception:
        results["inception_score"], results["inception_score_std"] = inception_score(fake_logits)
    return results


def score_features(
    stats: dict[str, Any],
    fake_features: np.ndarray,
    *,
    kid: bool = False,
    pr: bool = False,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> dict[str, float]:
    """FID (and KID, precision/recall) of generated features against reference `stats` (see real_statistics)."""
    if (kid or pr) and stats["features"] is None:
        raise TransganError("the reference holds only mean and covariance; KID and precision/recall need its images")
    results: dict[str, float] = {
        "real_count": int(stats["count"]),
        "fake_count": len(fake_features),
        "fid": frechet_distance(stats["mu"], stats["sigma"], *feature_statistics(fake_features)),
    }
    if kid:
        results["kid"], results["kid_std"] = kernel_inception_distance(
            stats["features"], fake_features, kid_subsets, kid_subset_size
        )
    if pr:
        results["precision"], results["recall"] = precision_recall(stats["features"], fake_features)
    return results
