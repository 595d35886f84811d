"""What a run leaves on disk besides its logs: step checkpoints (exact resume state), the model file, the best
checkpoint and model by --best-metric, and the learning curves. Writes are atomic; a failed write (full disk,
no permission) stops the run with one line and leaves the previous files intact."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transgan.checkpoint import copy_atomic
from transgan.errors import TransganError
from transgan.logs import plot_learning_curves
from transgan.training_state import (
    TrainingCheckpoint,
    list_checkpoints,
    prune_checkpoints,
    read_training_checkpoint,
    save_training_checkpoint,
)


class WriteFailed(TransganError):
    """A checkpoint or model file could not be written; the previous ones are intact."""


class RunFiles:
    """The files of one run directory, written by rank 0."""

    def __init__(self, run_dir: Path, keep_last: int, best_metric: str | None, best_mode: str):
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.model_path = self.run_dir / "model.safetensors"
        self.keep_last, self.best_metric, self.best_mode = keep_last, best_metric, best_mode
        self.best_value: float | None = None  # the best --best-metric so far, carried across resumes

    def update_best(self, logged: dict[str, float]) -> bool:
        """Count the latest logged values; True when they hold a new best (or equal) --best-metric value."""
        value = logged.get(self.best_metric) if self.best_metric else None
        if value is None or not math.isfinite(value):
            return False
        better = min if self.best_mode == "min" else max
        self.best_value = value if self.best_value is None else better(self.best_value, value)
        return value == self.best_value

    def write_checkpoint(self, step: int, state: dict[str, Any], write_model: Callable[[Path], None], best: bool):
        """The step checkpoint (`state` as save_training_checkpoint takes it), then the model file, the best
        copies when `best`, pruning and curves: in that order, so a failure never removes a good file."""
        path = self.checkpoint_dir / f"step_{step:08d}.safetensors"
        self._write(path, lambda: save_training_checkpoint(path, **state))
        self.write_model(write_model)
        if best:  # copies that pruning never removes
            best_checkpoint = self.checkpoint_dir / "best.safetensors"
            self._write(best_checkpoint, lambda: copy_atomic(path, best_checkpoint))
            best_model = self.run_dir / "model_best.safetensors"
            self._write(best_model, lambda: copy_atomic(self.model_path, best_model))
        prune_checkpoints(self.checkpoint_dir, self.keep_last)
        plot_learning_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png")

    def write_model(self, write_model: Callable[[Path], None]) -> Path:
        """model.safetensors, written by `write_model(path)`."""
        self._write(self.model_path, lambda: write_model(self.model_path))
        return self.model_path

    def _write(self, path: Path, write: Callable[[], None]) -> None:
        try:
            write()
        except OSError as error:
            kept = self.latest()
            previous = f"the last complete checkpoint is {kept}" if kept else "no earlier checkpoint exists"
            reason = error.strerror or str(error)
            raise WriteFailed(
                f"could not write {path} ({reason}); training stopped and {previous}; free space or fix "
                f"permissions, then continue with --resume {self.run_dir}"
            ) from error

    def latest(self) -> Path | None:
        """The newest step checkpoint, if any."""
        found = list_checkpoints(self.checkpoint_dir)
        return found[-1][1] if found else None

    def read_latest(self, where: str) -> TrainingCheckpoint:
        """The newest checkpoint, for --resume; one line when there is none."""
        path = self.latest()
        if path is None:
            raise TransganError(f"{where}: no checkpoint in {self.checkpoint_dir}")
        return read_training_checkpoint(path)
