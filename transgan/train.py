"""The library entry point of `transgan train`: config -> dataset -> task -> trainer -> model file."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from transgan import distributed
from transgan.config import TrainConfig, from_dict, load_toml, to_dict
from transgan.errors import TransganError
from transgan.registry import TASKS
from transgan.trainer import GANTrainer, TrainingInterrupted


def build_trainer(task_name: str, task_config: Any, train_config: TrainConfig) -> GANTrainer:
    """Seed everything, then build the dataset, the task's networks and the trainer (in that order, so the
    same seed gives the same initial weights)."""
    task_class = TASKS.get(task_name)
    torch.manual_seed(train_config.seed)
    random.seed(train_config.seed)
    dataset = task_class.build_dataset(task_config)
    task = task_class(task_config, dataset)
    run_config = {"task": task_name, "train": to_dict(train_config), "model": to_dict(task_config)}
    return GANTrainer(task, train_config, run_config)


def train(task_name: str, task_config: Any, train_config: TrainConfig) -> Path:
    """Train a new run; returns the path of its model file. Under torchrun, every process calls this."""
    return _fit(task_name, task_config, train_config, resume=False)


def _fit(task_name: str, task_config: Any, train_config: TrainConfig, resume: bool) -> Path:
    success = False
    try:
        path = build_trainer(task_name, task_config, train_config).fit(resume=resume)
        success = True
        return path
    except TrainingInterrupted:
        success = True  # a clean stop: the checkpoint is written and no collective is left half done
        raise
    finally:
        distributed.shutdown(success)  # leaves the process group the trainer joined (if it did)


def load_run_config(run_dir: Path) -> tuple[str, Any, TrainConfig]:
    """Task name and configs stored in a run directory (what `--resume` continues with)."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise TransganError(f"--resume {run_dir}: not a transgan run directory (no config.toml)")
    stored = load_toml(path)
    task_class = TASKS.get(stored["task"])
    task_config = from_dict(task_class.config_class, stored.get("model", {}), f"{path} [model]")
    train_config = from_dict(TrainConfig, stored.get("train", {}), f"{path} [train]")
    return stored["task"], task_config, train_config


def resume(run_dir: Path, **overrides: Any) -> Path:
    """Continue a run from its newest checkpoint; `overrides` (e.g. steps=N) change the stored train config."""
    import dataclasses

    task_name, task_config, train_config = load_run_config(run_dir)
    changes = {k: v for k, v in overrides.items() if v is not None}
    train_config = dataclasses.replace(train_config, out=str(run_dir), **changes)
    return _fit(task_name, task_config, train_config, resume=True)
