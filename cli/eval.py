"""`transgan eval ...`: FID/KID/precision-recall/IS between folders, paired L1/PSNR/SSIM, a model on test data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from transgan.errors import TransganError

app = typer.Typer(
    help="Measure images: FID (KID, precision/recall, IS) against real ones, paired L1/PSNR/SSIM, or a model on data.",
    no_args_is_help=True,
)


# Options shared by `eval fid` and `eval model`, declared once.
KidOption = Annotated[bool, typer.Option("--kid", help="also the Kernel Inception Distance (mean, std)")]
PrOption = Annotated[bool, typer.Option("--pr", help="also precision and recall (k=3 nearest neighbours)")]
InceptionWeightsOption = Annotated[
    Path | None,
    typer.Option(help="FID Inception weights file (default: $TRANSGAN_INCEPTION_WEIGHTS, else download)"),
]


def _device(name: str) -> str:
    from transgan.inference.engines import resolve_device  # the one --device rule (and error) of inference

    return resolve_device(name)


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
    kid: KidOption = False,
    pr: PrOption = False,
    inception_score: Annotated[bool, typer.Option("--is", help="also the Inception Score of the fake images")] = False,
    features: Annotated[
        str, typer.Option(help="'inception', or a TorchScript / transgan model file to take features from")
    ] = "inception",
    inception_weights: InceptionWeightsOption = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 50,
    device: Annotated[str, typer.Option(help="'auto', 'cpu', 'cuda', 'cuda:1', ...")] = "auto",
    cache_stats: Annotated[
        Path | None, typer.Option(help=".npz to store the real images' features in and reuse next time")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
    nproc: Annotated[
        int | None, typer.Option(min=1, help="extract features in N processes on this machine (or run under torchrun)")
    ] = None,
    context: typer.Context = None,
) -> None:
    """FID between real and generated images (Inception-v3 pool features, as torch-fidelity and pytorch-fid)."""
    from transgan.cli.translate import same_command_without_nproc

    from transgan.inference.sharding import current_shard, run_shards, shard_device
    from transgan.metrics import compare_folders, load_extractor
    from transgan.metrics.features import sharded_extraction

    if nproc is not None and nproc > 1:  # the processes wait for each other's features: a failure stops all
        say = lambda line: typer.echo(line, err=True)  # noqa: E731
        raise typer.Exit(run_shards(nproc, same_command_without_nproc(context), say, together=True))
    shard = current_shard()
    device = shard_device(device, shard)
    extractor = load_extractor(features, inception_weights, device)
    # Every process reads a --cache-stats file that is there (they must agree on what to compute); one writes it.
    cache = cache_stats if shard.rank == 0 or (cache_stats is not None and cache_stats.is_file()) else None
    with sharded_extraction(shard):
        results = compare_folders(
            real_dir,
            fake_dir,
            extractor,
            kid=kid,
            pr=pr,
            inception=inception_score,
            batch_size=batch_size,
            device=device,
            cache=cache,
        )
    if shard.rank == 0:  # every process has the result; one reports it
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


@app.command("model")
def model_command(
    model: Annotated[str, typer.Argument(help="model file, run directory or pretrained name (e.g. mnist-cgan)")],
    data: Annotated[
        Path,
        typer.Option(
            "--data", help="translation: folder with A/ and B/; generation: real images, a stats .npz, .zip or MNIST"
        ),
    ],
    n: Annotated[
        int, typer.Option("--n", min=1, help="images to generate, or inputs to translate (the first N)")
    ] = 10000,
    kid: KidOption = False,
    pr: PrOption = False,
    no_fid: Annotated[
        bool, typer.Option("--no-fid", help="skip feature metrics (translation: L1/PSNR/SSIM only, no extractor)")
    ] = False,
    features: Annotated[
        str, typer.Option(help="'inception', or a TorchScript / .pt2 / transgan model file to take features from")
    ] = "inception",
    inception_weights: InceptionWeightsOption = None,
    classifier: Annotated[
        Path | None,
        typer.Option(
            help="generation: a classifier (TorchScript / .pt2 / model file) whose logits give class accuracy"
        ),
    ] = None,
    direction: Annotated[str | None, typer.Option(help="translation: AtoB or BtoA (default AtoB)")] = None,
    resize: Annotated[
        int | None, typer.Option(min=1, help="translation: scale inputs and targets so the shorter side is N first")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of the noise (generation) or of test-time dropout (translation)")] = 0,
    eval_mode: Annotated[
        bool, typer.Option("--eval", help="run the generator in eval mode (pix2pix default: the reference's way)")
    ] = False,
    truncation: Annotated[float | None, typer.Option(help="generation: resample noise beyond this magnitude")] = None,
    out: Annotated[Path | None, typer.Option(help="keep the translated / generated images in this folder")] = None,
    cache_stats: Annotated[
        Path | None, typer.Option(help=".npz to store the real images' features in and reuse next time")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 50,
    device: Annotated[str, typer.Option(help="'auto', 'cpu', 'cuda', 'cuda:1', ...")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of a table")] = False,
) -> None:
    """Translate DIR/A (pix2pix, cyclegan) or generate N samples balanced over classes (cgan), then measure them."""
    from transgan.evaluation import evaluate_model, has_pairs
    from transgan.metrics import load_extractor
    from transgan.models import open_model

    device = _device(device)
    model_file = open_model(model, device)
    info = model_file.info(direction)
    picked, translator = info.direction, info.kind == "translator"
    metrics = set() if no_fid else {"fid"} | ({"kid"} if kid else set()) | ({"pr"} if pr else set())
    if translator and has_pairs(data, picked):
        metrics.add("paired")  # paired test data: also L1/PSNR/SSIM against the targets
    if not metrics:
        raise TransganError(f"--no-fid leaves nothing to measure: {data} holds no input/target pairs")
    extractor = load_extractor(features, inception_weights, device) if metrics - {"paired"} else None
    judge = load_extractor(str(classifier), None, device) if classifier is not None else None
    results = evaluate_model(
        model_file,
        data,
        extractor=extractor,
        metrics=frozenset(metrics),
        n=n,
        direction=picked,
        batch_size=batch_size,
        device=device,
        seed=seed,
        truncation=truncation,
        resize=resize,
        classifier=judge,
        out_dir=out,
        cache=cache_stats,
        test_time="eval" if eval_mode else None,
    )
    _report(results, as_json, f"{model} on {data}")
