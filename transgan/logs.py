"""Run logs: metrics.jsonl, TensorBoard events, learning-curve PNGs, sample grids and the progress bar."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torchvision.utils import make_grid, save_image


class RunLogger:
    """Writes one JSON object per logged step to metrics.jsonl (and TensorBoard when enabled)."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, enabled: bool = True):
        self.run_dir = run_dir
        self.enabled = enabled  # False on DDP ranks other than 0
        self.metrics_path = run_dir / "metrics.jsonl"
        self.tensorboard = enabled and tensorboard
        self._writer = None  # opened at the first write: a trainer that never logs leaves no files

    @property
    def writer(self):
        """The TensorBoard writer (None when TensorBoard is off)."""
        if self.tensorboard and self._writer is None:
            # Imported here: TensorBoard's import is slow and only training needs it.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        return self._writer

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def save_grid(self, step: int, images: torch.Tensor, nrow: int) -> Path | None:
        if not self.enabled:
            return None
        path = self.run_dir / "samples" / f"step_{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        grid = make_grid(images.float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1))
        save_image(grid, path)
        if self.writer is not None:
            self.writer.add_image("samples", grid, step)
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a line cut by a crash is ignored (it was the last one being written)."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop rows logged after `last_step`: a resumed run logs those steps again."""
    rows = [row for row in read_metrics(path) if row["step"] <= last_step]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def plot_learning_curves(metrics_path: Path, out_path: Path) -> Path | None:
    """One panel per metric group (losses, D scores, gradient norms, lr, speed) against step."""
    rows = read_metrics(metrics_path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on training machines
    import matplotlib.pyplot as plt

    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted({k for row in rows for k in row if k != "step"}):
        groups[key.split("/")[0]].append(key)
    figure, axes = plt.subplots(len(groups), 1, figsize=(8, 2.6 * len(groups)), squeeze=False)
    for axis, (group, keys) in zip(axes[:, 0], groups.items()):
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
            if points:
                axis.plot(*zip(*points), label=key)
        axis.set_title(group)
        axis.legend(fontsize="small")
    axes[-1, 0].set_xlabel("step")
    figure.tight_layout()
    figure.savefig(out_path, dpi=80)
    plt.close(figure)
    return out_path


def make_progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not enabled,
    )
