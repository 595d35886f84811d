"""RunConfig: what a run is (task name, the task's options, the training options), read and written as the
run directory's config.toml, checked once, and compared option by option when a run is resumed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transgan.config import TrainConfig, dump_toml, from_dict, load_toml, to_dict
from transgan.errors import TransganError

SECTIONS = ("task", "train", "model")
# Options a resumed run may change: they decide how long it goes on and how it reports, never what it
# computes (the data order does not depend on the number of loader workers).
RESUME_MAY_CHANGE = frozenset({"steps", "max_minutes", "progress", "num_workers"})


def task_config_class(task: str) -> type:
    """The config dataclass of registered task `task` (imports the task, and plugins, on first use)."""
    from transgan.registry import TASKS

    return TASKS.get(task).config_class


@dataclass(frozen=True)
class RunConfig:
    """A training run's whole configuration; `model` is an instance of the task's config class."""

    task: str
    model: Any
    train: TrainConfig

    @classmethod
    def build(
        cls, task: str, model_options: dict[str, Any], train_options: dict[str, Any], where: str = "options"
    ) -> RunConfig:
        """From plain option dicts (defaults fill the rest); unknown or ill-typed options raise one line."""
        model = from_dict(task_config_class(task), model_options, f"{where} [model]")
        return cls(task, model, from_dict(TrainConfig, train_options, f"{where} [train]"))

    @classmethod
    def read(cls, path: str | Path) -> RunConfig:
        """A config.toml with a task name, [train] and [model] (what a run directory keeps)."""
        stored = load_toml(path)
        unknown = sorted(set(stored) - set(SECTIONS))
        if unknown:
            raise TransganError(f"{path}: unknown section {', '.join(unknown)}; use task, [train] and [model]")
        if "task" not in stored:
            raise TransganError(f'{path}: no task name (task = "pix2pix", ...)')
        return cls.build(stored["task"], stored.get("model", {}), stored.get("train", {}), str(path))

    @classmethod
    def layered(
        cls, task: str, file: str | Path | None, model_options: dict[str, Any], train_options: dict[str, Any]
    ) -> RunConfig:
        """Defaults < a --config file < options given on the command line."""
        stored = load_toml(file) if file else {}
        unknown = sorted(set(stored) - set(SECTIONS))
        if unknown:
            raise TransganError(f"{file}: unknown section {', '.join(unknown)}; use [train] and [model]")
        if stored.get("task", task) != task:
            raise TransganError(f"{file} is a config for task '{stored['task']}', not '{task}'")
        model = {**stored.get("model", {}), **model_options}
        train = {**stored.get("train", {}), **train_options}
        return cls.build(task, model, train, str(file) if file else "options")

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "train": to_dict(self.train), "model": to_dict(self.model)}

    def write(self, path: str | Path) -> None:
        dump_toml(self.to_dict(), path)

    def with_train(self, **changes: Any) -> RunConfig:
        """A copy with some training options changed."""
        return dataclasses.replace(self, train=dataclasses.replace(self.train, **changes))

    def resumed_with(
        self, model_options: dict[str, Any], train_options: dict[str, Any], where: str = "--resume"
    ) -> RunConfig:
        """This stored run, continued with the options given again on the command line.

        People re-run the same command with --resume added: options equal to the stored ones are accepted,
        those in RESUME_MAY_CHANGE are taken, and any other that differs is refused, naming both values.
        """
        given = RunConfig.build(self.task, {**to_dict(self.model), **model_options}, {})
        stored_model = to_dict(self.model)
        differ = [
            f"--{name.replace('_', '-')} {value!r} (stored: {stored_model[name]!r})"
            for name, value in to_dict(given.model).items()
            if value != stored_model[name]
        ]
        stored_train = to_dict(self.train)
        new_train = to_dict(dataclasses.replace(self.train, **train_options))
        changes = {}
        for name, value in new_train.items():
            if name == "out" or value == stored_train[name]:
                continue
            if name in RESUME_MAY_CHANGE:
                changes[name] = value
            else:
                differ.append(f"--{name.replace('_', '-')} {value!r} (stored: {stored_train[name]!r})")
        if differ:
            raise TransganError(
                f"{where}: the run was trained with other options: {'; '.join(differ)}. Drop them to continue "
                f"the run as it was; only {', '.join('--' + n.replace('_', '-') for n in sorted(RESUME_MAY_CHANGE))} "
                "may change"
            )
        return self.with_train(**changes)
