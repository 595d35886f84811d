"""Sampling from class-conditional (or unconditional) generators: `transgan generate`, evaluation, benchmarks.

It needs only the sampler API of a generator network (`sample_latent`, `num_classes`, a forward of (z, labels)),
so inference and evaluation code use it without importing the cgan training task.
"""

from __future__ import annotations

import torch
from torch import nn

from transgan.errors import TransganError


def class_index(class_names: list[str], name_or_index: str | int) -> int:
    """The index of a class given by name or by number; unknown ones raise an error listing the classes."""
    value = str(name_or_index)
    if value in class_names:
        return class_names.index(value)
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(class_names):
        return int(value)
    known = ", ".join(class_names) if class_names else "none (an unconditional model: leave out --class)"
    raise TransganError(f"class '{value}' is not in this model; its classes: {known}")


def generator_of(G: nn.Module) -> nn.Module:
    if not hasattr(G, "sample_latent"):
        raise TransganError(f"this model's network ({type(G).__name__}) is not a sampler; use a model of task 'cgan'")
    return G


@torch.no_grad()
def generate(
    G: nn.Module, labels: list[int] | None, n: int, seed: int = 0, truncation: float | None = None
) -> torch.Tensor:
    """`n` images (in [-1, 1]) for each label in `labels` (class-major order); labels None: `n` unconditional."""
    G = generator_of(G)
    if n < 1:
        raise TransganError(f"--n {n}: must be at least 1")
    if G.num_classes and not labels:
        raise TransganError("this model is class-conditional: pass --class NAME_OR_INDEX")
    device = next(G.parameters()).device
    z = G.sample_latent(n * max(len(labels or []), 1), torch.Generator().manual_seed(seed), truncation)
    y = torch.tensor(labels).repeat_interleave(n) if G.num_classes else None
    return G(z.to(device), None if y is None else y.to(device)).float().cpu()


@torch.no_grad()
def interpolate(
    G: nn.Module,
    first: int | None,
    second: int | None,
    steps: int,
    rows: int = 1,
    seed: int = 0,
    truncation: float | None = None,
) -> torch.Tensor:
    """rows x steps images walking from class `first` to `second` with fixed noise (conditional models), or
    from one noise vector to another (unconditional models, first/second None)."""
    G = generator_of(G)
    if steps < 2:
        raise TransganError(f"--steps {steps}: an interpolation needs at least 2 steps")
    device = next(G.parameters()).device
    t = torch.linspace(0, 1, steps)
    generator = torch.Generator().manual_seed(seed)
    if G.num_classes:
        z = G.sample_latent(rows, generator, truncation).repeat_interleave(steps, 0)
        eye = torch.eye(G.num_classes)
        mix = (1 - t)[:, None] * eye[first] + t[:, None] * eye[second]
        return G(z.to(device), mix.repeat(rows, 1).to(device)).float().cpu()
    start, end = G.sample_latent(rows, generator, truncation), G.sample_latent(rows, generator, truncation)
    z = start[:, None] + t[None, :, None] * (end - start)[:, None]
    return G(z.flatten(0, 1).to(device)).float().cpu()
