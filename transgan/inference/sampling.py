"""Sampling from class-conditional (or unconditional) generators: `transgan generate`, evaluation, benchmarks.

It needs only the sampler API of a generator network (`sample_latent`, `num_classes`, a forward of (z, labels)),
so inference and evaluation code use it without importing the cgan training task.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
    G: nn.Module,
    labels: list[int] | None,
    n: int,
    seed: int = 0,
    truncation: float | None = None,
    noise_mode: str | None = None,
) -> torch.Tensor:
    """`n` images (in [-1, 1]) for each label in `labels` (class-major order); labels None: `n` unconditional.

    StyleGAN2 generators (those with `latents_for_seeds`) follow the official generate.py: sample i of each
    class uses seed `seed + i`, z = numpy RandomState(seed + i).randn(1, z_dim), so `--seed S --n 1` gives the
    image the official `--seeds S` gives (with --truncation as its psi and --noise-mode as its noise mode).
    """
    G = generator_of(G)
    if n < 1:
        raise TransganError(f"--n {n}: must be at least 1")
    if G.num_classes and not labels:
        raise TransganError("this model is class-conditional: pass --class NAME_OR_INDEX")
    device = next(G.parameters()).device
    rows = max(len(labels or []), 1)
    if hasattr(G, "latents_for_seeds"):
        z = G.latents_for_seeds([seed + i for i in range(n)], G.latent_dim).repeat(rows, 1)
    else:
        z = G.sample_latent(n * rows, torch.Generator().manual_seed(seed), latent_truncation(G, truncation))
    y = torch.tensor(labels).repeat_interleave(n) if G.num_classes else None
    options = {**style_truncation(G, truncation), **noise_option(G, noise_mode)}
    return G(z.to(device), None if y is None else y.to(device), **options).float().cpu()


def seed_latent(G: nn.Module, seed: int, bound: float | None = None) -> torch.Tensor:
    """The z (1, latent_dim) of one seed: the official generate.py's for StyleGAN2, else sample_latent's."""
    if hasattr(G, "latents_for_seeds"):
        return G.latents_for_seeds([seed], G.latent_dim)
    return G.sample_latent(1, torch.Generator().manual_seed(seed), bound)


def noise_option(G: nn.Module, noise_mode: str | None) -> dict[str, str]:
    """--noise-mode (random, const or none) for StyleGAN generators; None keeps the model's own (const)."""
    if noise_mode is None:
        return {}
    if not hasattr(G, "synthesis"):
        raise TransganError(f"--noise-mode needs a StyleGAN model; this one's generator is {type(G).__name__}")
    if noise_mode not in ("random", "const", "none"):
        raise TransganError(f"--noise-mode {noise_mode}: use random, const or none")
    return {"noise_mode": noise_mode}


def latent_truncation(G: nn.Module, truncation: float | None) -> float | None:
    """--truncation as a bound on z (BigGAN's trick); None for style generators, which truncate in w."""
    return None if hasattr(G, "truncate") else truncation


def style_truncation(G: nn.Module, truncation: float | None) -> dict[str, float]:
    """--truncation as StyleGAN's psi (w pulled toward the average w) for generators that have one."""
    if truncation is None or not hasattr(G, "truncate"):
        return {}
    if not 0.0 <= truncation <= 1.0:
        raise TransganError(f"--truncation {truncation}: a StyleGAN psi lies in [0, 1] (e.g. 0.7; 1 is off)")
    return {"truncation_psi": float(truncation)}


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
    bound, psi = latent_truncation(G, truncation), style_truncation(G, truncation)
    if G.num_classes:
        z = G.sample_latent(rows, generator, bound).repeat_interleave(steps, 0)
        eye = torch.eye(G.num_classes)
        mix = (1 - t)[:, None] * eye[first] + t[:, None] * eye[second]
        return G(z.to(device), mix.repeat(rows, 1).to(device), **psi).float().cpu()
    start, end = G.sample_latent(rows, generator, bound), G.sample_latent(rows, generator, bound)
    z = start[:, None] + t[None, :, None] * (end - start)[:, None]
    return G(z.flatten(0, 1).to(device), **psi).float().cpu()


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of rows a, b (N, D) at fractions t (T,) -> (N, T, D): the walk a Gaussian z
    expects (a straight line passes through norms z never has). Nearly parallel rows fall back to a lerp."""
    unit_a, unit_b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    angle = torch.acos((unit_a * unit_b).sum(-1).clamp(-1.0, 1.0))[:, None, None]  # (N, 1, 1)
    t = t[None, :, None]
    sine = torch.sin(angle)
    straight = sine.abs() < 1e-6
    wa = torch.where(straight, 1 - t, torch.sin((1 - t) * angle) / torch.where(straight, 1.0, sine))
    wb = torch.where(straight, t, torch.sin(t * angle) / torch.where(straight, 1.0, sine))
    return wa * a[:, None] + wb * b[:, None]


@torch.no_grad()
def latent_walk(
    G: nn.Module,
    space: str,
    steps: int,
    rows: int = 1,
    seed: int = 0,
    label: int | None = None,
    truncation: float | None = None,
) -> torch.Tensor:
    """rows x steps images (row-major), each row walking from one random latent to another: in z by slerp, or in
    w by a straight line (StyleGAN's perceptual-path walk) between the two z's mapped (and truncated) w's.
    Row r starts from seed `seed + 2r` and ends at seed `seed + 2r + 1`. Conditional models keep `label`."""
    G = generator_of(G)
    if space not in ("z", "w"):
        raise TransganError(f"--space {space}: use z (slerp between noises) or w (lerp between styles)")
    if space == "w" and not hasattr(G, "mapping"):
        raise TransganError(f"--space w needs a StyleGAN model; this one's generator is {type(G).__name__}")
    if steps < 2:
        raise TransganError(f"--steps {steps}: an interpolation needs at least 2 steps")
    if G.num_classes and label is None:
        raise TransganError("this model is class-conditional: pass one --class NAME_OR_INDEX for the walk")
    device = next(G.parameters()).device
    bound, psi = latent_truncation(G, truncation), style_truncation(G, truncation)
    ends = [seed_latent(G, seed + i, bound) for i in range(2 * rows)]
    start, end = torch.cat(ends[0::2]), torch.cat(ends[1::2])
    t = torch.linspace(0, 1, steps)
    labels = torch.full((rows * steps,), label, dtype=torch.long, device=device) if G.num_classes else None
    if space == "z":
        z = slerp(start, end, t).flatten(0, 1)
        return G(z.to(device), labels, **psi).float().cpu()
    row_labels, truncation_psi = None if labels is None else labels[:rows], psi.get("truncation_psi", 1.0)
    w_start = G.mapping(start.to(device), row_labels, truncation_psi=truncation_psi)
    w_end = G.mapping(end.to(device), row_labels, truncation_psi=truncation_psi)
    fraction = t.to(device)[None, :, None, None]
    ws = torch.lerp(w_start[:, None], w_end[:, None], fraction).flatten(0, 1)  # (rows * steps, num_ws, w_dim)
    return G.synthesis(ws).float().cpu()


@torch.no_grad()
def style_mixing(
    G: nn.Module,
    row_seeds: list[int],
    column_seeds: list[int],
    label: int | None = None,
    crossover: int | None = None,
    truncation: float | None = None,
) -> torch.Tensor:
    """StyleGAN's style-mixing figure, (1 + rows) x (1 + columns) images in row-major order: the top row shows
    each column seed's image, the left column each row seed's; cell (r, c) takes the coarse styles (the first
    `crossover` synthesis inputs, default a quarter of them) from row seed r and the rest from column seed c.
    The top-left corner is blank (-1). Conditional models draw every image of class `label`."""
    if not hasattr(G, "mix"):
        raise TransganError(f"--mix needs a StyleGAN model; this one's generator is {type(G).__name__}")
    if not row_seeds or not column_seeds:
        raise TransganError("--mix ROW_SEEDS COLUMN_SEEDS: give comma-separated seeds for both (e.g. 1,2,3 4,5,6)")
    if G.num_classes and label is None:
        raise TransganError("this model is class-conditional: pass --class NAME_OR_INDEX with --mix")
    device = next(G.parameters()).device
    psi = style_truncation(G, truncation).get("truncation_psi", 1.0)
    seeds = list(row_seeds) + list(column_seeds)
    z = torch.cat([seed_latent(G, seed) for seed in seeds]).to(device)
    labels = torch.full((len(seeds),), label, dtype=torch.long, device=device) if G.num_classes else None
    ws = G.mapping(z, labels, truncation_psi=psi)
    crossover = max(1, G.num_ws // 4) if crossover is None else crossover
    rows, columns = ws[: len(row_seeds)], ws[len(row_seeds) :]
    mixed = G.mix(rows.repeat_interleave(len(column_seeds), 0), columns.repeat(len(row_seeds), 1, 1), crossover)
    singles, cells = G.synthesis(ws).float().cpu(), G.synthesis(mixed).float().cpu()
    blank = torch.full_like(singles[:1], -1.0)
    figure = [blank, singles[len(row_seeds) :]]
    for r in range(len(row_seeds)):
        figure += [singles[r : r + 1], cells[r * len(column_seeds) : (r + 1) * len(column_seeds)]]
    return torch.cat(figure)
