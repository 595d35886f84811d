"""`transgan train TASK ...`: one command per registered task, its options made from the task's config."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from transgan.cli.options import dataclass_parameters, given

from transgan.config import TrainConfig, from_dict, load_toml
from transgan.errors import TransganError
from transgan.registry import TASKS

app = typer.Typer(
    help="Train a model: transgan train TASK \\[OPTIONS]. Ctrl-C saves a checkpoint.", no_args_is_help=True
)


def run_train_command(task_name: str, values: dict[str, Any]) -> None:
    """Layer the options (defaults < --config file < command line), then train or resume."""
    from transgan.train import resume, train  # imported here: `transgan --help` stays light

    task_class = TASKS.get(task_name)
    if values.get("resume") is not None:
        run_dir = values["resume"]
        unexpected = sorted(set(given(values, task_class.config_class)) | set(given(values, TrainConfig)) - {"steps"})
        if unexpected:
            names = ", ".join("--" + name.replace("_", "-") for name in unexpected)
            raise TransganError(f"--resume continues with the run's stored config; only --steps may change ({names})")
        path = resume(run_dir, steps=values.get("steps"))
    else:
        stored = load_toml(values["config"]) if values.get("config") else {}
        unknown = sorted(set(stored) - {"task", "train", "model"})
        if unknown:
            raise TransganError(f"{values['config']}: unknown section {', '.join(unknown)}; use [train] and [model]")
        if stored.get("task", task_name) != task_name:
            raise TransganError(f"{values['config']} is a config for task '{stored['task']}', not '{task_name}'")
        model = {**stored.get("model", {}), **given(values, task_class.config_class)}
        train_options = {**stored.get("train", {}), **given(values, TrainConfig)}
        task_config = from_dict(task_class.config_class, model, "model options")
        train_config = from_dict(TrainConfig, train_options, "train options")
        path = train(task_name, task_config, train_config)
    typer.echo(f"model written to {path}")


def make_command(task_name: str, task_class: type) -> Any:
    def command(**values: Any) -> None:
        run_train_command(task_name, values)

    shared = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[Optional[Path], typer.Option(help="TOML file with \\[train] and \\[model] sections")],
        ),
        inspect.Parameter(
            "resume",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[Optional[Path], typer.Option(help="continue the run in this directory")],
        ),
    ]
    parameters = (
        dataclass_parameters(task_class.config_class, f"{task_name} options")
        + dataclass_parameters(TrainConfig, "training options")
        + shared
    )
    command.__signature__ = inspect.Signature(parameters)
    command.__doc__ = (task_class.__doc__ or task_name).strip().splitlines()[0]
    return command


def register_task_commands() -> None:
    for entry in TASKS.entries():
        overlap = {f.name for f in dataclasses.fields(entry.obj.config_class)} & {
            f.name for f in dataclasses.fields(TrainConfig)
        }
        if overlap:
            raise TransganError(f"task '{entry.name}' config repeats training options: {', '.join(sorted(overlap))}")
        app.command(entry.name)(make_command(entry.name, entry.obj))
