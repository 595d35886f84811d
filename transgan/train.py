"""The library entry point of `transgan train`: run config -> seed -> dataset -> task -> trainer -> model file."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

from transgan import distributed
from transgan.config import TrainConfig
from transgan.errors import TransganError
from transgan.registry import TASKS
from transgan.run_config import RunConfig
from transgan.run_files import RunFiles
from transgan.stopping import TrainingInterrupted
from transgan.trainer import GANTrainer


def build(run: RunConfig, resume: bool = False) -> GANTrainer:
    """Seed everything, then build the dataset, the task's networks and the trainer (in that order, so the
    same seed gives the same initial weights). A new run with --init-from loads its weights before the trainer
    exists, so the EMA copies it makes start from them."""
    task_class = TASKS.get(run.task)
    torch.manual_seed(run.train.seed)
    random.seed(run.train.seed)
    dataset = task_class.build_dataset(run.model)
    task = task_class(run.model, dataset)
    if run.train.init_from and not resume:
        run = _init_from(task, run)
    return GANTrainer(task, run)


def _init_from(task: Any, run: RunConfig) -> RunConfig:
    """Load --init-from into the task's networks, print the table once, record the source's hash."""
    from transgan.init_from import initialise, table

    layout = task.model_file_kwargs()
    layout.setdefault("primary", task.inference_networks()[0] if task.inference_networks() else None)
    source, digest, reports = initialise(task.networks, layout, run.train.init_from, run.train.init_from_sha256)
    if int(os.environ.get("RANK", "0")) == 0:
        print(table(source, digest, reports))
    return run.with_train(init_from_sha256=digest)


def build_trainer(task_name: str, task_config: Any, train_config: TrainConfig) -> GANTrainer:
    """A trainer for a new run of `task_name` (see build)."""
    return build(RunConfig(task_name, task_config, train_config))


def fit(run: RunConfig, resume: bool = False) -> Path:
    """Train (or continue) `run`; returns the path of its model file. Under torchrun, every process calls this."""
    success = False
    try:
        path = build(run, resume).fit(resume=resume)
        success = True
        return path
    except TrainingInterrupted:
        success = True  # a clean stop: the checkpoint is written and no collective is left half done
        raise
    finally:
        distributed.shutdown(success)  # leaves the process group the trainer joined (if it did)


def train(task_name: str, task_config: Any, train_config: TrainConfig) -> Path:
    """Train a new run; returns the path of its model file."""
    return fit(RunConfig(task_name, task_config, train_config))


def stored_run(run_dir: str | Path, where: str = "--resume") -> RunConfig:
    """The configuration kept in a run directory."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise TransganError(f"{where} {run_dir}: not a transgan run directory (no config.toml)")
    return RunConfig.read(path)


def holds_run(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a run that can be continued: its config and at least one checkpoint."""
    return (Path(run_dir) / "config.toml").is_file() and RunFiles(Path(run_dir), 0, None, "min").latest() is not None


def resume(run_dir: str | Path, **overrides: Any) -> Path:
    """Continue a run from its newest checkpoint; `overrides` (e.g. steps=N) may change what --resume allows."""
    changes = {key: value for key, value in overrides.items() if value is not None}
    run = stored_run(run_dir).resumed_with({}, changes).with_train(out=str(run_dir))
    return fit(run, resume=True)


def plan_run(
    task: str, resume_option: str | None, file: str | Path | None, model_options: dict, train_options: dict
) -> tuple[RunConfig, bool]:
    """What `transgan train` does with its options: (the run config, whether it continues a checkpoint).

    - `--resume DIR`: the run stored in DIR, with the options given again (equal ones accepted, see
      RunConfig.resumed_with);
    - `--resume auto`: the same for --out when it holds a run, else a new run;
    - no --resume: a new run; an --out that holds a run is refused rather than overwritten.
    """
    if resume_option is not None and resume_option != "auto" and train_options.get("init_from"):
        raise TransganError(
            f"--init-from with --resume {resume_option}: --resume continues a run from its own checkpoint, "
            "--init-from starts a new one from other weights; give one of them"
        )
    if resume_option is not None and resume_option != "auto":
        run_dir = Path(resume_option)
        stored = stored_run(run_dir)
        if stored.task != task:
            raise TransganError(f"--resume {run_dir}: a {stored.task} run, not {task}")
        out = train_options.get("out")
        if out is not None and Path(out).resolve() != run_dir.resolve():
            raise TransganError(f"--resume {run_dir} with --out {out}: a resumed run stays in its directory")
        given = RunConfig.layered(task, file, model_options, train_options)  # a --config file must agree too
        given_model = _given(given.model, model_options, file, "model")
        given_train = _given(given.train, train_options, file, "train")
        return stored.resumed_with(given_model, given_train).with_train(out=str(run_dir)), True
    new = RunConfig.layered(task, file, model_options, train_options)
    out = Path(new.train.out)
    if holds_run(out):
        if resume_option != "auto":
            raise TransganError(
                f"--out {out} holds a run with checkpoints; continue it with --resume auto (or --resume {out}), "
                "or give another --out"
            )
        stored = stored_run(out, "--resume auto:")
        if stored.task != task:
            raise TransganError(f"--resume auto: {out} holds a {stored.task} run, not {task}")
        given_model = _given(new.model, model_options, file, "model")
        given_train = _given(new.train, train_options, file, "train")
        return stored.resumed_with(given_model, given_train, "--resume auto").with_train(out=str(out)), True
    return new, False


def _given(config: Any, options: dict, file: str | Path | None, section: str) -> dict:
    """The options the user set (command line or --config file), with their resolved values."""
    from transgan.config import load_toml, to_dict

    names = set(options) | (set(load_toml(file).get(section, {})) if file else set())
    values = to_dict(config)
    return {name: values[name] for name in names if name in values}
