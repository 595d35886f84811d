"""`transgan pretrained list|download`: the models of pretrained/index.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from transgan.errors import TransganError

app = typer.Typer(help="Pretrained models: list them, download and convert the reference's releases.")


@app.command("list")
def list_command() -> None:
    """List the pretrained models, where they come from, and whether they are here already."""
    from transgan.models import cache_dir, pretrained_index

    table = Table("name", "task", "arch", "source", "here")
    for name, entry in sorted(pretrained_index().items()):
        here = "shipped" if "file" in entry else ("yes" if (cache_dir() / f"{name}.safetensors").is_file() else "no")
        table.add_row(name, entry.get("task", ""), entry.get("arch", ""), entry.get("url", "transgan"), here)
    Console().print(table)


@app.command("download")
def download_command(
    name: Annotated[str, typer.Argument(help="a name from `transgan pretrained list`")],
    url: Annotated[Optional[str], typer.Option(help="download from this address instead (a mirror)")] = None,
) -> None:
    """Download a released reference checkpoint (resumable), check it, and convert it to a model file."""
    from transgan.pretrained_download import fetch_pretrained

    path: Path = fetch_pretrained(name, url=url)
    typer.echo(f"{name} ready: {path}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="pretrained")


__all__ = ["TransganError", "app", "register"]
