"""`transgan generate MODEL --class K --out grid.png|DIR`: samples (or a class interpolation) from a cgan model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from transgan.errors import TransganError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
ANIMATIONS = (".mp4", ".gif")  # --interpolate only: frame t shows step t of every row


def generate_command(
    model: Annotated[str, typer.Argument(help="model file, run directory or pretrained name (e.g. mnist-cgan)")],
    out: Annotated[Path, typer.Option("--out", help="a grid image (.png/.jpg) or a folder for one PNG per sample")],
    classes: Annotated[
        list[str] | None,
        typer.Option(
            "--class",
            help="class name or index; repeat for several (two with --interpolate); 'all': every class of a "
            "conditional model, one row of --n samples (default 8) per class",
        ),
    ] = None,
    n: Annotated[
        int | None, typer.Option("--n", help="samples per class (default 64), or rows with --interpolate (default 1)")
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            help="seed of the noise: the same seed gives the same images; StyleGAN2 models: sample i uses the "
            "official generate.py's seed S+i (z = numpy RandomState(S+i).randn(1, z_dim))"
        ),
    ] = 0,
    noise_mode: Annotated[
        str | None,
        typer.Option(help="StyleGAN per-pixel noise: const (the model's fixed noise; default), random or none"),
    ] = None,
    truncation: Annotated[
        float | None,
        typer.Option(
            help="less variety, cleaner: resample noise beyond this magnitude (e.g. 0.7); StyleGAN: psi in [0, 1], "
            "w pulled toward the average w"
        ),
    ] = None,
    mix: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--mix",
            metavar="ROW_SEEDS COL_SEEDS",
            help="StyleGAN style-mixing grid: coarse styles from each row seed, the rest from each column seed "
            "(e.g. --mix 1,2,3 4,5,6,7)",
        ),
    ] = None,
    interpolate: Annotated[
        bool,
        typer.Option(
            "--interpolate",
            help="walk from the first --class to the second with fixed noise, or with --space between two random "
            "latents; --out a .png strip, an animated .gif or an .mp4",
        ),
    ] = False,
    space: Annotated[
        str | None,
        typer.Option(
            help="--interpolate between random latents: z (slerp) or w (StyleGAN: lerp between styles); row r "
            "walks from seed+2r to seed+2r+1 (conditional models: one --class). Unconditional models default to z"
        ),
    ] = None,
    steps: Annotated[int, typer.Option(help="images per interpolation row")] = 8,
    nrow: Annotated[int | None, typer.Option(help="grid columns (default: 8, or --n with several classes)")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto")] = "cpu",
) -> None:
    """Generate images of a class from a trained cgan model (or an unconditional one)."""

    from transgan.inference.engines import resolve_device
    from transgan.inference.sampling import class_index, generate, latent_walk
    from transgan.inference.sampling import interpolate as interpolate_classes
    from transgan.models import open_model
    from transgan.nets.test_time import test_time

    if Path(out).suffix.lower() in ANIMATIONS and not interpolate:
        raise TransganError(f"--out {out}: an animation shows an interpolation, one frame per step: add --interpolate")
    if space is not None and not interpolate:
        raise TransganError("--space chooses where --interpolate walks: add --interpolate")
    if nrow is not None and (interpolate or mix):
        # Those layouts are fixed: one row per walk (--steps columns), or the mixing grid's seeds.
        raise TransganError("--nrow sets the columns of a sample grid; --interpolate and --mix lay out their own")
    every_class = "all" in (classes or [])
    if every_class and (len(classes) > 1 or interpolate or mix):
        raise TransganError("--class all draws every class on its own: give no other --class, --interpolate or --mix")
    device = resolve_device(device)
    model_file = open_model(model, device)
    G, names = model_file.primary, model_file.class_names
    mode = model_file.info().test_time
    if every_class and not names:
        raise TransganError(f"{model} is an unconditional model: it has no classes for --class all; leave out --class")
    labels = list(range(len(names))) if every_class else [class_index(names, value) for value in classes or []]
    if labels and not names:
        raise TransganError(f"{model} is an unconditional model: leave out --class")
    if mix:
        if len(labels) > 1:
            raise TransganError("--mix draws one class: give at most one --class")
        from transgan.inference.sampling import style_mixing

        row_seeds, column_seeds = (seed_list(value) for value in mix)
        with test_time(G, mode, seed):
            images = style_mixing(G, row_seeds, column_seeds, labels[0] if labels else None, truncation=truncation)
        written = write_images(images, out, len(column_seeds) + 1, None)
        typer.echo(f"{len(images)} images written to {written}")
        return
    if interpolate and (space is not None or not names):  # a walk between latents
        if len(labels) > 1:
            raise TransganError("--space walks within one class: give at most one --class")
        with test_time(G, mode, seed):
            images = latent_walk(G, space or "z", steps, n or 1, seed, labels[0] if labels else None, truncation)
        columns = steps
    elif interpolate:  # a walk between two classes with fixed noise
        if len(labels) != 2:
            raise TransganError(
                f"--interpolate needs exactly two --class values (or --space z|w and one); this model's classes: "
                f"{', '.join(names)}"
            )
        with test_time(G, mode, seed):
            images = interpolate_classes(G, labels[0], labels[1], steps, n or 1, seed, truncation)
        columns = steps
    else:
        per_class = n or (8 if every_class else 64)
        with test_time(G, mode, seed):
            images = generate(G, labels or None, per_class, seed, truncation, noise_mode)
        columns = nrow or (per_class if len(labels) > 1 else min(per_class, 8))
    written = write_images(images, out, columns, [names[k] for k in labels] if labels and not interpolate else None)
    typer.echo(f"{len(images)} images written to {written}")


def seed_list(text: str) -> list[int]:
    """'1,2,3' -> [1, 2, 3]; anything else is one clear error."""
    try:
        return [int(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise TransganError(f"--mix {text}: give comma-separated whole-number seeds (e.g. 1,2,3)") from None


def write_images(images, out: Path, columns: int, class_names: list[str] | None) -> Path:
    """One grid image when `out` has an image suffix, else one PNG per sample inside the folder `out`."""
    from torchvision.utils import make_grid, save_image

    out = Path(out)
    if out.suffix.lower() == ".mp4":  # --interpolate as a video: frame t shows step t of every row
        from transgan.inference.video import write_interpolation_video

        return write_interpolation_video(images, columns, out)
    if out.suffix.lower() == ".gif":
        from transgan.inference.video import write_interpolation_gif

        return write_interpolation_gif(images, columns, out)
    if out.suffix.lower() in IMAGE_SUFFIXES:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(make_grid(images, nrow=columns, normalize=True, value_range=(-1, 1), pad_value=1.0), out)
        return out
    if out.suffix:
        raise TransganError(f"--out {out}: use an image name ({', '.join(IMAGE_SUFFIXES)}) or a folder")
    if out.exists() and not out.is_dir():
        raise TransganError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    per_class = len(images) // len(class_names) if class_names else len(images)
    for i, image in enumerate(images):
        prefix = f"{class_names[i // per_class]}_" if class_names else ""
        save_image(image, out / f"{prefix}{i % per_class:04d}.png", normalize=True, value_range=(-1, 1))
    return out


def register(app: typer.Typer) -> None:
    """Add `generate` to the root app."""
    app.command("generate")(generate_command)
