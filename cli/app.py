"""The `transgan` Typer app: one sub-command per verb; errors become one line, never a traceback."""

from __future__ import annotations

import sys
import warnings

import typer
from rich.console import Console

from transgan import __version__
from transgan.errors import TransganError

app = typer.Typer(
    name="transgan",
    help="Image translation and generation with GANs: train, convert, export, translate, generate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"transgan {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
) -> None:
    """transgan: image translation and generation with GANs."""


def build_app() -> typer.Typer:
    from transgan.cli import bench, convert, export, generate, plugins, pretrained, serve, train, translate
    from transgan.cli import eval as eval_cli

    app.add_typer(train.app, name="train")  # its task commands are made on first use: --help loads no plugin
    generate.register(app)
    for module in (convert, export, translate, bench, serve):
        module.register(app)
    app.add_typer(eval_cli.app, name="eval")
    pretrained.register(app)
    plugins.register(app)
    return app


def _report_plugin_warnings(errors: Console) -> None:
    # A plugin that failed to load is one line on stderr, not Python's warning format with a source line.
    from transgan.registry import PluginWarning

    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, PluginWarning):
            errors.print(f"plugin error: {message}", markup=False, soft_wrap=True)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning


def main() -> None:
    errors = Console(stderr=True, highlight=False)
    _report_plugin_warnings(errors)
    try:
        build_app()()
    except TransganError as error:
        errors.print(f"error: {error}", markup=False, soft_wrap=True)
        # 2: a mistake to fix; stops that saved a checkpoint say so with their own status (130 Ctrl-C, 75 preempted).
        sys.exit(getattr(error, "exit_code", 2))
