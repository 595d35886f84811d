"""`transgan eval ...`: FID/KID/precision-recall/IS between image folders, paired L1/PSNR/SSIM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Measure generated images: FID (and KID, precision/recall, IS) against real ones, or paired L1/PSNR/SSIM.",
    no_args_is_help=True,
)


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _report(results: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(results))
        return
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in results.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    Console().print(table)


@app.command()
def fid(
    real_dir: Annotated[Path, typer.Argument(help="real images (folder, searched recursively) or a statistics .npz")],
    fake_dir: Annotated[Path, typer.Argument(help="generated images (folder, searched recursively)")],
    kid: Annotated[bool, typer.Option("--kid", help="also the Kernel Inception Distance (mean, std)")] = False,
    pr: Annotated[bool, typer.Option("--pr", help="also precision and recall (k=3 nearest neighbours)")] = False,
    inception_score: Annotated[bool, typer.Option("--is", help="also the Inception Score of the fake images")] = False,
    features: Annotated[
        str, typer.Option(help="'inception', or a TorchScript / transgan model file to take features from")
    ] = "inception",
    inception_weights: Annotated[
        Path | None,
        typer.Option(help="FID Inception weights file (default: $TRANSGAN_INCEPTION_WEIGHTS, else download)"),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 50,
    device: Annotated[str, typer.Option(help="'auto', 'cpu', 'cuda', 'cuda:1', ...")] = "auto",
    cache_stats: Annotated[
        Path | None, typer.Option(help=".npz to store the real images' features in and reuse next time")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
) -> None:
    """FID between real and generated images (Inception-v3 pool features, as torch-fidelity and pytorch-fid)."""
    from transgan.metrics import compare_folders, load_extractor

    device = _device(device)
    extractor = load_extractor(features, inception_weights, device)
    results = compare_folders(
        real_dir,
        fake_dir,
        extractor,
        kid=kid,
        pr=pr,
        inception=inception_score,
        batch_size=batch_size,
        device=device,
        cache=cache_stats,
    )
    _report(results, as_json, f"{fake_dir} vs {real_dir}")


@app.command()
def paired(
    pred_dir: Annotated[Path, typer.Argument(help="predicted images")],
    target_dir: Annotated[Path, typer.Argument(help="ground-truth images with the same file names")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
) -> None:
    """Mean L1, PSNR and SSIM between images matched by file name (extension ignored)."""
    from transgan.metrics import paired_metrics

    _report(paired_metrics(pred_dir, target_dir), as_json, f"{pred_dir} vs {target_dir}")
