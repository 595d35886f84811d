"""Improved precision and recall (Kynkaanniemi et al. 2019): k-NN balls around feature vectors as manifolds."""

from __future__ import annotations

import numpy as np
import torch

from transgan.errors import TransganError


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # float64 and the direct formula: points placed exactly on a ball's edge must not flip with rounding.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def knn_radii(features: np.ndarray, k: int = 3, batch_size: int = 1024) -> np.ndarray:
    """Distance from each vector to its k-th nearest neighbour in the same set (itself excluded)."""
    points = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    if points.shape[0] <= k:
        raise TransganError(f"precision/recall with k={k} needs more than {k} samples per set, got {points.shape[0]}")
    # The k+1-th smallest distance skips the zero distance of each point to itself.
    radii = [_distances(chunk, points).kthvalue(k + 1, dim=1).values for chunk in points.split(batch_size)]
    return torch.cat(radii).numpy()


def manifold_coverage(queries: np.ndarray, manifold: np.ndarray, radii: np.ndarray, batch_size: int = 1024) -> float:
    """Fraction of `queries` that lie inside at least one ball (manifold[i], radii[i])."""
    points = torch.as_tensor(np.asarray(manifold), dtype=torch.float64)
    radius = torch.as_tensor(radii, dtype=torch.float64)
    inside = [
        (_distances(chunk, points) <= radius).any(dim=1)
        for chunk in torch.as_tensor(np.asarray(queries), dtype=torch.float64).split(batch_size)
    ]
    return float(torch.cat(inside).double().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, batch_size: int = 1024) -> tuple[float, float]:
    """(precision, recall): fake samples inside the real manifold, real samples inside the fake manifold."""
    real, fake = np.asarray(real), np.asarray(fake)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise TransganError(f"precision/recall needs two (N, D) arrays of one D, got {real.shape} and {fake.shape}")
    precision = manifold_coverage(fake, real, knn_radii(real, k, batch_size), batch_size)
    recall = manifold_coverage(real, fake, knn_radii(fake, k, batch_size), batch_size)
    return precision, recall
