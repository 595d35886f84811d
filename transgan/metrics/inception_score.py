"""Inception Score (Salimans et al. 2016) from classifier logits: exp E_x KL(p(y|x) || p(y)) over splits."""

from __future__ import annotations

import numpy as np

from transgan.errors import TransganError


def inception_score(logits: np.ndarray, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Mean and std of the Inception Score over `splits` shuffled splits of (N, classes) logits.

    Use InceptionExtractor.features_and_logits for the standard (1008-way, unbiased logits) score, as
    torch-fidelity does.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[0] < splits:
        raise TransganError(f"Inception Score needs at least {splits} samples (one per split), got {len(logits)}")
    logits = logits[np.random.default_rng(seed).permutation(logits.shape[0])]
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))  # log-softmax, stable
    scores = []
    for part in np.array_split(log_p, splits):
        log_marginal = np.log(np.exp(part).mean(axis=0, keepdims=True))
        kl = (np.exp(part) * (part - log_marginal)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
