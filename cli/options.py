"""Typer options generated from config dataclasses, so each default is declared once, in the config."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape


def _option_type(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def dataclass_parameters(config_class: type, panel: str) -> list[inspect.Parameter]:
    """One keyword parameter per field, `--field-name`, default None (= not given on the command line),
    so values from the command line, a --config file and the defaults can be layered."""
    hints = typing.get_type_hints(config_class)
    parameters = []
    for field in dataclasses.fields(config_class):
        kind = _option_type(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        default = field.default if field.default is not dataclasses.MISSING else None
        shown = "" if default is None else f" [default: {default}]"
        flags = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        option = typer.Option(
            *flags, help=escape(field.metadata.get("help", "") + shown), rich_help_panel=panel, show_default=False
        )
        parameters.append(
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[Optional[kind], option]
            )
        )
    return parameters


def given(values: dict[str, Any], config_class: type) -> dict[str, Any]:
    """The fields of `config_class` that were given (not None) in `values`."""
    names = {field.name for field in dataclasses.fields(config_class)}
    return {key: value for key, value in values.items() if key in names and value is not None}
