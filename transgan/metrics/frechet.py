"""Frechet distance (FID) and Kernel Inception Distance (KID) between two sets of features, in float64."""

from __future__ import annotations

import numpy as np

from transgan.errors import TransganError
from transgan.metrics.features import feature_statistics


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    # Symmetric square root through eigh; tiny negative eigenvalues from rounding are clipped to zero.
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(values.clip(min=0))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians.

    Tr((S1 S2)^(1/2)) is computed as the sum of square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2),
    a symmetric PSD matrix with the same spectrum: this stays real and stable where scipy's sqrtm of the
    non-symmetric product needs an epsilon fix for singular covariances (fewer samples than dimensions).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise TransganError(
            f"feature statistics do not match: mean {mu1.shape} / {mu2.shape}, covariance {sigma1.shape} / "
            f"{sigma2.shape} (were both computed with the same feature extractor?)"
        )
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt_product = np.sqrt(np.linalg.eigvalsh((middle + middle.T) / 2).clip(min=0)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """Frechet distance between the Gaussians fitted to two (N, D) feature arrays."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0):
    """(gamma <x, y> + coef0)^degree with gamma = 1 / D by default: the KID kernel."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0):
    """Unbiased estimate of the squared MMD between samples x (m, D) and y (n, D) with the polynomial kernel."""
    m, n = x.shape[0], y.shape[0]
    k_xx = polynomial_kernel(x, x, degree, gamma, coef0)
    k_yy = polynomial_kernel(y, y, degree, gamma, coef0)
    k_xy = polynomial_kernel(x, y, degree, gamma, coef0)
    # Unbiased: the diagonal k(x_i, x_i) terms are left out of the within-set means.
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kernel_inception_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): mean and std of the unbiased MMD^2 over random subsets.

    Subsets are drawn without replacement, as in torch-fidelity; `subset_size` shrinks to the smaller set
    when a set has fewer samples.
    """
    x, y = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise TransganError(f"KID needs two (N, D) feature arrays of one D, got {x.shape} and {y.shape}")
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise TransganError(f"KID needs at least 2 samples in each set, got {x.shape[0]} and {y.shape[0]}")
    rng = np.random.default_rng(seed)
    scores = [
        mmd2_unbiased(
            x[rng.choice(x.shape[0], size, replace=False)],
            y[rng.choice(y.shape[0], size, replace=False)],
            degree,
            gamma,
            coef0,
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(scores)), float(np.std(scores))
