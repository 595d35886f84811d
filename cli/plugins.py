"""`transgan plugins`: every registered network, task and loss with the package it comes from, and broken plugins."""

from __future__ import annotations

import json
import warnings
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from transgan.registry import REGISTRIES, PluginWarning, plugin_failures


def plugin_report() -> dict[str, Any]:
    """Registered names (built-ins and plugins) and the plugins that failed to load, as plain data."""
    with warnings.catch_warnings():
        # The failures are part of this report: no separate warning lines for them.
        warnings.simplefilter("ignore", PluginWarning)
        entries = [
            {
                "kind": kind,
                "name": entry.name,
                "package": entry.origin.package,
                "version": entry.origin.version,
                "plugin": entry.origin.plugin,
                "entry_point": entry.origin.target,
                **({"role": entry.info["role"]} if "role" in entry.info else {}),
            }
            for kind, registry in REGISTRIES.items()
            for entry in registry.entries()
        ]
    errors = [
        {
            "kind": failure.kind,
            "group": failure.group,
            "plugin": failure.origin.plugin,
            "entry_point": failure.origin.target,
            "package": failure.origin.package,
            "version": failure.origin.version,
            "reason": failure.reason,
            "message": str(failure),
        }
        for failure in plugin_failures()
    ]
    return {"entries": entries, "errors": errors}


def plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the networks, tasks and losses (built-in and from plugins) with their package, and broken plugins."""
    report = plugin_report()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console = Console()
    # Kind, name and origin fit 80 columns; the entry point itself is in --json.
    table = Table("kind", "name", "origin", title="registered")
    for row in report["entries"]:
        built_in = " (built-in)" if row["plugin"] is None else ""
        table.add_row(row["kind"], row["name"], f"{row['package']} {row['version']}{built_in}")
    console.print(table)
    if report["errors"]:
        # One unwrapped line each: error messages are long and people copy them into bug reports.
        console.print("plugins that failed to load (skipped):", style="bold red")
        for row in report["errors"]:
            console.print(row["message"], markup=False, highlight=False, soft_wrap=True)


def register(root: typer.Typer) -> None:
    root.command("plugins")(plugins_command)
