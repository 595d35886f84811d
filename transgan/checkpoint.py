"""Model files (weights + config in one .safetensors) and atomic safetensors writes; no pickle."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from transgan import __version__
from transgan.errors import TransganError
from transgan.nets import build_network

MODEL_FORMAT = "transgan.model"
CHECKPOINT_FORMAT = "transgan.checkpoint"
# Images enter and leave every network scaled to [-1, 1]: x_net = (x_01 - mean) / std.
DEFAULT_NORMALIZATION = {"mean": 0.5, "std": 0.5}


@dataclass
class ModelFile:
    """What a model file holds: named networks (eval mode) and the metadata to use them."""

    networks: dict[str, nn.Module]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def primary(self) -> nn.Module:
        return self.networks[self.meta["primary"]]

    def for_direction(self, direction: str) -> nn.Module:
        """The generator that translates in `direction` ('AtoB' or 'BtoA')."""
        directions = self.meta.get("directions") or {}
        if direction not in directions:
            available = ", ".join(directions) or "none"
            raise TransganError(f"this model cannot translate {direction}; available directions: {available}")
        return self.networks[directions[direction]]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names") or [])


def write_safetensors_atomic(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: a killed write never leaves a
    half-written file under `path`, so the previous version stays loadable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared or strided storage; a contiguous CPU copy of each tensor is always safe.
    plain = {key: value.detach().to("cpu").contiguous().clone() for key, value in tensors.items()}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(plain, temporary, metadata=metadata)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def copy_atomic(source: Path, destination: Path) -> None:
    """Copy through a temporary file and a rename, so `destination` is always a whole file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def read_safetensors(path: Path, expected_format: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and the decoded `transgan` metadata of a file we wrote; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise TransganError(f"{path}: no such file")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise TransganError(f"{path}: not a readable safetensors file ({error})") from error
    if header.get("format") != expected_format:
        found = header.get("format", "no transgan metadata")
        raise TransganError(f"{path}: expected a {expected_format} file, found {found}")
    return tensors, json.loads(header["transgan"])


def network_spec(net: nn.Module) -> dict[str, Any]:
    """Arch name and config of a network made by `build_network`."""
    if not hasattr(net, "transgan_arch"):
        raise TransganError(
            f"{type(net).__name__} was not built by transgan.nets.build_network, so it has no config to save"
        )
    return {"arch": net.transgan_arch, "config": net.transgan_config}


def save(
    networks: nn.Module | dict[str, nn.Module],
    path: str | Path,
    *,
    task: str | None = None,
    primary: str | None = None,
    directions: dict[str, str] | None = None,
    class_names: list[str] | None = None,
    normalization: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a model file: the weights of one or more networks plus all that `load` needs to rebuild them.

    `directions` maps 'AtoB'/'BtoA' to network names (translation models); `class_names` is stored for
    conditional generators; `extra` holds task-specific plain values (image size, latent size...).
    """
    if isinstance(networks, nn.Module):
        networks = {"G": networks}
    primary = primary or next(iter(networks))
    meta = {
        "version": __version__,
        "task": task,
        "primary": primary,
        "networks": {name: network_spec(net) for name, net in networks.items()},
        "directions": directions or {},
        "class_names": list(class_names or []),
        "normalization": normalization or DEFAULT_NORMALIZATION,
        "extra": extra or {},
    }
    tensors = {f"{name}.{key}": value for name, net in networks.items() for key, value in net.state_dict().items()}
    path = Path(path)
    write_safetensors_atomic(tensors, {"format": MODEL_FORMAT, "transgan": json.dumps(meta)}, path)
    return path


def networks_from_tensors(
    specs: dict[str, dict[str, Any]], tensors: dict[str, torch.Tensor], source: Path
) -> dict[str, nn.Module]:
    """Rebuild each network from its spec and load its `name.`-prefixed tensors strictly."""
    networks = {}
    for name, spec in specs.items():
        net = build_network(spec["arch"], **spec["config"])
        prefix = f"{name}."
        state = {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0]
            raise TransganError(f"{source}: weights of '{name}' do not fit {spec['arch']}: {first_line}") from error
        networks[name] = net
    return networks


def read_model(path: str | Path, device: str | torch.device = "cpu") -> ModelFile:
    """All networks of a model file, in eval mode on `device`, with their metadata."""
    path = Path(path)
    tensors, meta = read_safetensors(path, MODEL_FORMAT)
    networks = networks_from_tensors(meta["networks"], tensors, path)
    for net in networks.values():
        net.to(device).eval()
    return ModelFile(networks, meta)


def load(path: str | Path, name: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The network rebuilt from a model file alone, in eval mode (the primary one unless `name` is given)."""
    model = read_model(path, device)
    if name is None:
        return model.primary
    if name not in model.networks:
        raise TransganError(f"{path}: no network '{name}'; it holds {', '.join(model.networks)}")
    return model.networks[name]
