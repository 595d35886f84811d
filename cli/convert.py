"""`transgan convert SRC.pth OUT.safetensors --arch ...`: import a reference or GAN Compression checkpoint, or an
official StyleGAN2-ADA snapshot (`network-snapshot-*.pkl`, read without running the code it carries)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from transgan.errors import TransganError

ARCHS = ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128", "basic", "n_layers", "pixel", "mobile_resnet")
ARCHS += ("resnet_9blocks_antialias", "resnet_6blocks_antialias", "basic_antialias", "n_layers_antialias")  # CUT
DIRECTIONS = ("AtoB", "BtoA")


def convert_command(
    src: Annotated[
        Path, typer.Argument(help="a .pth state dict (e.g. latest_net_G.pth) or a StyleGAN2-ADA snapshot .pkl")
    ],
    out: Annotated[Path, typer.Argument(help="the transgan model file to write (.safetensors)")],
    arch: Annotated[str | None, typer.Option(help=f"{' | '.join(ARCHS)} (default: guessed from the keys)")] = None,
    norm: Annotated[str | None, typer.Option(help="batch, instance or none (default: from the tensors)")] = None,
    ngf: Annotated[int | None, typer.Option(help="generator width (default: from the tensors)")] = None,
    ndf: Annotated[int | None, typer.Option(help="discriminator width (default: from the tensors)")] = None,
    input_nc: Annotated[int | None, typer.Option(help="input channels (default: from the tensors)")] = None,
    output_nc: Annotated[int | None, typer.Option(help="output channels (default: from the tensors)")] = None,
    dropout: Annotated[
        bool | None,
        typer.Option(
            "--dropout/--no-dropout", help="dropout layers (default: resnet from the tensors; unet on, as pix2pix)"
        ),
    ] = None,
    n_layers: Annotated[int | None, typer.Option(help="n_layers discriminator depth")] = None,
    channels: Annotated[
        str | None, typer.Option(help="mobile_resnet widths per stage, like 16_16_32_16_32_32_16_16")
    ] = None,
    direction: Annotated[str, typer.Option(help="the direction this generator translates: AtoB or BtoA")] = "AtoB",
    network: Annotated[
        str, typer.Option(help="StyleGAN2-ADA snapshot: G_ema (the averaged generator), G or D")
    ] = "G_ema",
) -> None:
    """Convert a pytorch-CycleGAN-and-pix2pix, GAN Compression or StyleGAN2-ADA checkpoint into a model file."""
    import transgan

    given = {"norm": norm, "ngf": ngf, "ndf": ndf, "input_nc": input_nc, "output_nc": output_nc}
    given.update({"dropout": dropout, "n_layers": n_layers})
    config: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    if src.suffix == ".pkl":
        if out.suffix != ".safetensors":
            raise TransganError(f"{out}: the output file must end in .safetensors")
        if arch is not None or channels is not None or config:
            raise TransganError(f"{src}: a StyleGAN2-ADA snapshot carries its own architecture; leave out --arch etc.")
        from transgan.convert.stylegan_pickle import convert_snapshot, save_converted

        net = convert_snapshot(src, network)
        path = save_converted(net, out)
        typer.echo(f"wrote {path}: {network} as {net.transgan_arch} {_stylegan_line(net.transgan_config)}")
        return
    from transgan.convert import load_gan_compression_checkpoint, load_reference_checkpoint
    from transgan.registry import NETWORKS

    if arch is not None and arch not in ARCHS:
        raise TransganError(f"--arch {arch}: use one of {', '.join(ARCHS)}")
    if direction not in DIRECTIONS:
        raise TransganError(f"--direction {direction}: use AtoB or BtoA")
    if out.suffix != ".safetensors":
        raise TransganError(f"{out}: the output file must end in .safetensors")
    if network != "G_ema":
        raise TransganError(f"--network {network}: picks a network of a StyleGAN2-ADA snapshot (.pkl), not of {src}")
    if arch == "mobile_resnet" or (arch is None and channels is not None):
        net = load_gan_compression_checkpoint(src, channels=channels, **config)
        mode = "eval"  # GAN Compression tests its generators in eval mode
    else:
        if channels is not None:
            raise TransganError(f"--channels is a mobile_resnet option, not one of {arch}")
        net = load_reference_checkpoint(src, arch, **config)
        mode = "reference"  # the reference's test.py runs its generators as in training unless --eval
    role = NETWORKS.entry(net.transgan_arch).info.get("role")
    if role == "translator":
        extra = {key: net.transgan_config[key] for key in ("input_nc", "output_nc")}
        path = transgan.save(
            {"G": net}, out, task="translation", directions={direction: "G"}, extra=extra, test_time=mode
        )
    else:
        path = transgan.save({"D": net}, out, task=None, extra={"input_nc": net.transgan_config["input_nc"]})
    mode_line = f", test time: {mode}" if role == "translator" else ""
    typer.echo(f"wrote {path}: {net.transgan_arch} {_config_line(net.transgan_config)}{mode_line}")


def _config_line(config: dict[str, Any]) -> str:
    shown = (
        "input_nc",
        "output_nc",
        "ngf",
        "ndf",
        "channels",
        "norm",
        "n_layers",
        "dropout",
        "antialias",
        "antialias_up",
    )
    return " ".join(f"{key}={config[key]}" for key in shown if key in config)


def _stylegan_line(config: dict[str, Any]) -> str:
    shown = ("image_size", "num_classes", "latent_dim", "w_dim", "channel_base", "channel_max", "architecture")
    return " ".join(f"{key}={config[key]}" for key in shown if key in config)


def register(app: typer.Typer) -> None:
    """Add `convert` to the root app."""
    app.command("convert")(convert_command)
