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

from transgan.config import TrainConfig
from transgan.errors import TransganError
from transgan.registry import TASKS, PluginWarning
from transgan.tasks.configs import BUILTIN_TASK_CONFIGS, covers_builtins


class TaskGroup(TyperGroup):
    """`transgan train`: one sub-command per registered task, made only when a sub-command is looked up.

    Making them when the app is built would import every task and plugin for `transgan --help`.
    """

    def list_commands(self, ctx: Any) -> list[str]:
        # Built-ins from their torch-free configs; the task modules load only when one lacks such an entry or a
        # plugin may add tasks (only importing a plugin tells which tasks it registers).
        if covers_builtins(TASKS.builtin_modules) and not TASKS.plugin_entry_points():
            self._add_commands(builtin_task_commands())
        else:
            self._add_commands(task_commands())
        return super().list_commands(ctx)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands:
            # A built-in is made from its torch-free config: `transgan train cyclegan --help` imports no torch.
            known = cmd_name in BUILTIN_TASK_CONFIGS
            self._add_commands(builtin_task_commands([cmd_name]) if known else task_commands())
        return super().get_command(ctx, cmd_name)

    def _add_commands(self, commands: dict[str, Any]) -> None:
        for name, command in commands.items():
            self.commands.setdefault(name, command)


app = typer.Typer(
    cls=TaskGroup,
    help="Train a model: transgan train TASK \\[OPTIONS]. Ctrl-C saves a checkpoint.",
    no_args_is_help=True,
)


def run_train_command(task_name: str, values: dict[str, Any]) -> None:
    """Layer the options (defaults < --config file < command line), then train, resume or launch processes."""
    from transgan.stopping import TrainingInterrupted  # imported here: `transgan --help` stays light
    from transgan.train import fit, plan_run

    task_class = TASKS.get(task_name)
    model_options = given(values, task_class.config_class)
    train_options = given(values, TrainConfig)
    resume_option = None if values.get("resume") is None else str(values["resume"])
    run, resuming = plan_run(task_name, resume_option, values.get("config"), model_options, train_options)
    if values.get("nproc") is not None and values["nproc"] != 1:
        return _launch(values["nproc"], task_name, run, resuming)
    try:
        path = fit(run, resume=resuming)
    except TrainingInterrupted as stopped:
        if int(os.environ.get("RANK", "0")) > 0:  # under torchrun: rank 0 says it, the others stop quietly
            raise typer.Exit(stopped.exit_code) from None
        raise
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun: said once, not by every process
        typer.echo(f"model written to {path}")


def _launch(nproc: int, task_name: str, run: Any, resuming: bool) -> None:
    """`--nproc N`: the processes read the options resolved here from a temporary config file, so each one
    trains with exactly this configuration; a resumed run continues from its own directory."""
    from transgan.distributed import launch

    if resuming:  # with the options a resume may change (--steps, ...), which the run directory does not hold
        train = run.train
        changed = ["--max-minutes", str(train.max_minutes), "--num-workers", str(train.num_workers)]
        changed += ["--steps", str(train.steps)] if train.steps is not None else []
        return launch(nproc, ["train", task_name, "--resume", train.out, *changed], train.device)
    with tempfile.TemporaryDirectory(prefix="transgan-launch-") as folder:
        path = Path(folder) / "config.toml"
        run.write(path)
        launch(nproc, ["train", task_name, "--config", str(path)], run.train.device)


def make_command(task_name: str, config_class: type, summary: str) -> Any:
    """The click command of a task: its config's options, the training options, --config/--resume/--nproc."""

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
            annotation=Annotated[
                Optional[str],
                typer.Option(
                    help="continue the run in this directory; 'auto': continue --out if it holds a run, else start "
                    "(for job scripts and torchrun restarts). Options given again must equal the stored ones"
                ),
            ],
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
        dataclass_parameters(config_class, f"{task_name} options")
        + dataclass_parameters(TrainConfig, "training options")
        + shared
    )
    command.__signature__ = inspect.Signature(parameters)
    command.__doc__ = summary
    return command


def task_summary(task_class: type, task_name: str) -> str:
    """The first line of a task class's docstring: its command's help."""
    return (task_class.__doc__ or task_name).strip().splitlines()[0]


def _commands_of(holder: typer.Typer) -> dict[str, Any]:
    return dict(typer.main.get_group(holder).commands)


def builtin_task_commands(names: list[str] | None = None) -> dict[str, Any]:
    """Click commands of built-in tasks (all, or `names`) made from their torch-free configs alone."""
    holder = typer.Typer()
    for name in names if names is not None else sorted(BUILTIN_TASK_CONFIGS):
        entry = BUILTIN_TASK_CONFIGS[name]
        holder.command(name)(make_command(name, entry.config_class(), entry.summary))
    return _commands_of(holder)


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
        holder.command(entry.name)(
            make_command(entry.name, entry.obj.config_class, task_summary(entry.obj, entry.name))
        )
    return _commands_of(holder)
