"""Training checkpoints: every tensor of a run (networks, EMA, optimizers, RNG, task state) in one
safetensors file, plain values (config, counters, optimizer hyper-parameters, RNG) in its metadata."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transgan.checkpoint import CHECKPOINT_FORMAT, read_safetensors, write_safetensors_atomic
from transgan.errors import TransganError

CHECKPOINT_PATTERN = re.compile(r"step_(\d+)\.safetensors$")


@dataclass
class TrainingCheckpoint:
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def section(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under `prefix.` with the prefix removed."""
        start = len(prefix) + 1
        return {key[start:]: value for key, value in self.tensors.items() if key.startswith(prefix + ".")}


def _optimizer_tensors(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, plain_state = {}, {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{name}.{param_id}.{key}"] = value
            else:
                plain_state.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain_state": plain_state}


def _restore_optimizer(name: str, optimizer: torch.optim.Optimizer, checkpoint: TrainingCheckpoint) -> None:
    saved = checkpoint.meta["optimizers"][name]
    state: dict[int, dict[str, Any]] = {}
    for key, value in checkpoint.section(f"opt.{name}").items():
        param_id, stat = key.split(".", 1)
        state.setdefault(int(param_id), {})[stat] = value
    for param_id, values in saved["plain_state"].items():
        state.setdefault(int(param_id), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def restore_rng(checkpoint: TrainingCheckpoint) -> None:
    torch.set_rng_state(checkpoint.tensors["rng.torch"])
    cuda_states = checkpoint.section("rng.cuda")
    if cuda_states and torch.cuda.is_available():
        for index, state in cuda_states.items():
            if int(index) < torch.cuda.device_count():
                torch.cuda.set_rng_state(state, int(index))
    version, internal, gauss = checkpoint.meta["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))


def save_training_checkpoint(
    path: Path,
    *,
    networks: dict[str, nn.Module],
    ema: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    scalers: dict[str, torch.amp.GradScaler],
    extra_state: dict[str, torch.Tensor],
    counters: dict[str, Any],
    config: dict[str, Any],
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for prefix, group in (("net", networks), ("ema", ema)):
        for name, net in group.items():
            tensors.update({f"{prefix}.{name}.{k}": v for k, v in net.state_dict().items()})
    optimizer_meta = {}
    for name, optimizer in optimizers.items():
        optimizer_tensors, optimizer_meta[name] = _optimizer_tensors(name, optimizer)
        tensors.update(optimizer_tensors)
    tensors.update({f"task.{k}": v for k, v in extra_state.items()})
    rng_tensors, rng_meta = rng_state()
    tensors.update(rng_tensors)
    meta = {
        "counters": counters,
        "config": config,
        "optimizers": optimizer_meta,
        "scalers": {name: scaler.state_dict() for name, scaler in scalers.items() if scaler.is_enabled()},
        "rng": rng_meta,
    }
    write_safetensors_atomic(tensors, {"format": CHECKPOINT_FORMAT, "transgan": json.dumps(meta)}, path)


def read_training_checkpoint(path: Path) -> TrainingCheckpoint:
    tensors, meta = read_safetensors(path, CHECKPOINT_FORMAT)
    return TrainingCheckpoint(tensors, meta)


def restore_training_checkpoint(
    checkpoint: TrainingCheckpoint,
    *,
    networks: dict[str, nn.Module],
    ema: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    scalers: dict[str, torch.amp.GradScaler],
) -> None:
    """Load every network, EMA copy, optimizer and scaler, then the RNG state (last, so nothing after it
    draws random numbers before training goes on)."""
    for prefix, group in (("net", networks), ("ema", ema)):
        for name, net in group.items():
            tensors = checkpoint.section(f"{prefix}.{name}")
            if prefix == "ema" and not tensors:
                # A run written without EMA (its task's recipe then had none) resumed by one that keeps it: the
                # average starts from the restored weights instead of refusing the checkpoint.
                print(f"the checkpoint has no EMA copy of {name}: the EMA starts from its weights at this step")
                tensors = networks[name].state_dict()
            try:
                net.load_state_dict(tensors, strict=True)
            except RuntimeError as error:
                first_line = str(error).strip().splitlines()[0]
                raise TransganError(f"checkpoint does not fit network '{name}' of this run: {first_line}") from error
    for name, optimizer in optimizers.items():
        _restore_optimizer(name, optimizer, checkpoint)
    for name, scaler in scalers.items():
        if name in checkpoint.meta["scalers"]:
            scaler.load_state_dict(checkpoint.meta["scalers"][name])
    restore_rng(checkpoint)


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the step checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_PATTERN.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def prune_checkpoints(folder: Path, keep_last: int) -> None:
    for _, path in list_checkpoints(folder)[:-keep_last] if keep_last > 0 else []:
        path.unlink(missing_ok=True)
