"""Training health: the failure signatures of GAN training, read from the logged metrics."""

from __future__ import annotations

import statistics
from typing import Any

WINDOW = 5  # logged rows looked at together


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [row[key] for row in rows if key in row]


def diagnose(rows: list[dict[str, Any]]) -> list[str]:
    """Warnings for the last WINDOW logged rows (empty when training looks healthy).

    - discriminator wins: D loss near 0 while the G loss is large and not moving;
    - mode collapse: the spread of generated samples falls far below that of real samples;
    - oscillation: the G loss swings by more than its own mean from row to row.
    """
    recent = rows[-WINDOW:]
    if len(recent) < WINDOW:
        return []
    warnings = []
    loss_d = _series(recent, "loss/D")
    loss_g = _series(recent, "loss/G")
    if len(loss_d) == WINDOW and len(loss_g) == WINDOW:
        g_mean = statistics.fmean(loss_g)
        if max(loss_d) < 0.05 and g_mean > 3.0 and statistics.pstdev(loss_g) < 0.1 * g_mean:
            warnings.append(
                f"discriminator wins: D loss {statistics.fmean(loss_d):.3f} while G loss sits at {g_mean:.2f}; "
                "try a lower D learning rate, label smoothing, spectral norm or a gradient penalty"
            )
        swings = [abs(b - a) for a, b in zip(loss_g, loss_g[1:])]
        if g_mean > 0 and statistics.fmean(swings) > g_mean:
            warnings.append(
                f"oscillation: G loss swings by {statistics.fmean(swings):.2f} around {g_mean:.2f}; "
                "try lower learning rates or more D steps per G step"
            )
    diversity = _series(recent, "health/diversity")
    if len(diversity) == WINDOW and max(diversity) < 0.1:
        warnings.append(
            f"mode collapse: generated samples vary {max(diversity):.0%} as much as real ones; "
            "try --mode-seeking 1 (cgan), hinge loss with a spectral-norm D, a lower G learning rate "
            "or restart from a checkpoint"
        )
    return warnings
