"""Find a model from what the user typed: a run directory, a model file or a pretrained name."""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from transgan.checkpoint import ModelFile, read_model
from transgan.errors import TransganError


def pretrained_index() -> dict[str, dict[str, Any]]:
    """name -> entry of pretrained/index.json (arch, task, file or url, sha256, card...)."""
    return json.loads(resources.files("transgan.pretrained").joinpath("index.json").read_text())


def cache_dir() -> Path:
    """Where downloaded pretrained models go: $TRANSGAN_CACHE or ~/.cache/transgan."""
    return Path(os.environ.get("TRANSGAN_CACHE", Path.home() / ".cache" / "transgan"))


def pretrained_path(name: str) -> Path:
    """The model file of pretrained model `name`: shipped in the package, or downloaded into the cache."""
    index = pretrained_index()
    if name not in index:
        known = ", ".join(sorted(index)) or "none"
        raise TransganError(f"'{name}' is neither a file, a run directory nor a pretrained model ({known})")
    entry = index[name]
    if "file" in entry:
        return Path(str(resources.files("transgan.pretrained").joinpath(entry["file"])))
    cached = cache_dir() / f"{name}.safetensors"
    if not cached.is_file():
        raise TransganError(
            f"pretrained model '{name}' is not downloaded yet: run `transgan pretrained download {name}`"
        )
    return cached


def resolve_model_path(spec: str | Path) -> Path:
    """The model file meant by `spec`: a file as is, a run directory's model.safetensors, or a pretrained name."""
    path = Path(spec)
    if path.is_dir():
        model = path / "model.safetensors"
        if not model.is_file():
            raise TransganError(f"{path}: a folder without model.safetensors (is it a finished or checkpointed run?)")
        return model
    if path.is_file():
        return path
    if path.suffix or os.sep in str(spec):
        raise TransganError(f"{path}: no such file or run directory")
    return pretrained_path(str(spec))


def open_model(spec: str | Path | ModelFile, device: str = "cpu") -> ModelFile:
    """All networks and metadata of the model meant by `spec` (see resolve_model_path), read once.

    A ModelFile is returned as it is: every step after the first (autotune, engines, export) takes the one
    ModelFile, whose `source` and `digest` key the caches, so the file is neither looked up nor read again.
    """
    if isinstance(spec, ModelFile):
        return spec
    return read_model(resolve_model_path(spec), device)


def model_label(model: ModelFile) -> str:
    """A short name for files derived from `model` (cached exports, tuning results): its file's stem."""
    return model.source.stem if model.source is not None else str(model.meta.get("primary") or "model")


def model_digest(model: ModelFile) -> str:
    """The sha256 of the model file's bytes; in-memory models hash their weights and metadata instead."""
    if model.digest is not None:
        return model.digest
    digest = hashlib.sha256(json.dumps(model.meta, sort_keys=True, default=str).encode())
    for name, net in sorted(model.networks.items()):
        for key, value in net.state_dict().items():
            digest.update(f"{name}.{key}".encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
