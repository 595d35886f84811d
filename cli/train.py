"""`transgan train TASK ...`: one command per registered task, its options made from the task's config."""

from __future__ import annotations

import dataclasses
import inspect
import os
import tempfile
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import typer.main
from transgan.cli.options import dataclass_parameters, given
from typer.core import TyperGroup

from transgan.config import TrainConfig, dump_toml, from_dict, load_toml, to_dict
from transgan.errors import TransganError
from transgan.registry import TASKS, PluginWarning


class TaskGroup(TyperGroup):
    """`transgan train`: one sub-command per registered task, made only when a sub-command is looked up.

    Making them when the app is built would import every task and plugin for `transgan --help`.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        self._add_task_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            self._add_task_commands()
        return super().get_command(ctx, cmd_name)

    def _add_task_commands(self) -> None:
        for name, command in task_commands().items():
            self.commands.setdefault(name, command)


app = typer.Typer(
    cls=TaskGroup,
    help="Train a model: transgan train TASK \\[OPTIONS]. Ctrl-C saves a checkpoint.",
    no_args_is_help=True,
)


def run_train_command(task_name: str, values: dict[str, Any]) -> None:
    """Layer the options (defaults < --config file < command line), then train or resume."""
    from transgan.train import resume, train  # imported here: `transgan --help` stays light
    from transgan.trainer import TrainingInterrupted

    try:
        _run_train_command(task_name, values, resume, train)
    except TrainingInterrupted:
        if int(os.environ.get("RANK", "0")) > 0:  # under torchrun: rank 0 says it, the others stop quietly
            raise typer.Exit(130) from None
        raise


def _run_train_command(task_name: str, values: dict[str, Any], resume: Any, train: Any) -> None:
    task_class = TASKS.get(task_name)
    if values.get("resume") is not None:
        run_dir = values["resume"]
        unexpected = sorted(set(given(values, task_class.config_class)) | set(given(values, TrainConfig)) - {"steps"})
        if unexpected:
            names = ", ".join("--" + name.replace("_", "-") for name in unexpected)
            raise TransganError(f"--resume continues with the run's stored config; only --steps may change ({names})")
        if _launches(values):
            from transgan.train import load_run_config

            steps = ["--steps", str(values["steps"])] if values.get("steps") is not None else []
            device = load_run_config(run_dir)[2].device
            return _launch(values["nproc"], ["train", task_name, "--resume", str(run_dir), *steps], device)
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
        if _launches(values):
            return _launch_new_run(values["nproc"], task_name, task_config, train_config)
        path = train(task_name, task_config, train_config)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun: said once, not by every process
        typer.echo(f"model written to {path}")


def _launches(values: dict[str, Any]) -> bool:
    return values.get("nproc") is not None and values["nproc"] != 1


def _launch(nproc: int, args: list[str], device: str) -> None:
    from transgan.distributed import launch

    launch(nproc, args, device)


def _launch_new_run(nproc: int, task_name: str, task_config: Any, train_config: TrainConfig) -> None:
    """`--nproc N`: the processes read the options resolved here (defaults < --config < command line) from
    a temporary config file, so each one trains with exactly this configuration."""
    with tempfile.TemporaryDirectory(prefix="transgan-launch-") as folder:
        path = Path(folder) / "config.toml"
        dump_toml({"task": task_name, "train": to_dict(train_config), "model": to_dict(task_config)}, path)
        _launch(nproc, ["train", task_name, "--config", str(path)], train_config.device)


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
        inspect.Parameter(
            "nproc",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                Optional[int],
                typer.Option(help="train in N processes on this machine (DDP, one GPU each on CUDA) via torchrun"),
            ],
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


def task_commands() -> dict[str, Any]:
    """A click command per registered task (built-ins and plugins), keyed by task name."""
    holder = typer.Typer()
    training = {f.name for f in dataclasses.fields(TrainConfig)}
    for entry in TASKS.entries():
        overlap = {f.name for f in dataclasses.fields(entry.obj.config_class)} & training
        if overlap:
            message = f"task '{entry.name}' config repeats training options: {', '.join(sorted(overlap))}"
            if not entry.origin.is_plugin:
                raise TransganError(message)
            # A plugin's mistake must not take `transgan train` away from the built-in tasks.
            warnings.warn(f"{entry.origin}: {message}; the task is skipped", PluginWarning, stacklevel=2)
            continue
        holder.command(entry.name)(make_command(entry.name, entry.obj))
    return dict(typer.main.get_group(holder).commands)
