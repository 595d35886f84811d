"""Model files (weights + config in one .safetensors): what they hold and answer, atomic writes; no pickle."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as safetensors_load
from safetensors.torch import load_file, save_file
from torch import nn

from transgan import __version__
from transgan.errors import TransganError
from transgan.nets import build_network
from transgan.nets.test_time import check_mode
from transgan.registry import NETWORKS

MODEL_FORMAT = "transgan.model"
CHECKPOINT_FORMAT = "transgan.checkpoint"
# Images enter and leave every network scaled to [-1, 1]: x_net = (x_01 - mean) / std.
DEFAULT_NORMALIZATION = {"mean": 0.5, "std": 0.5}
# Tasks whose models run as the reference's test.py runs them unless a model file says otherwise.
REFERENCE_TEST_TIME_TASKS = frozenset({"pix2pix"})


@dataclass(frozen=True)
class GeneratorInfo:
    """What one generator of a model file is and how to run it: the questions engines, export and evaluation ask.

    kind 'translator' (image -> image: size_multiple, input_nc, output_nc) or 'sampler' (noise [+ class] ->
    image: latent_dim, num_classes, image_size, output_nc). `test_time` is 'reference' (the reference's
    test.py: per-image batch norm, dropout on) or 'eval' (see transgan.nets.test_time).
    """

    kind: str
    task: str | None
    arch: str
    config: dict[str, Any]
    direction: str | None
    normalization: dict[str, float]
    class_names: tuple[str, ...]
    test_time: str
    output_nc: int
    size_multiple: int = 1
    input_nc: int | None = None
    latent_dim: int | None = None
    num_classes: int = 0
    image_size: int | None = None
    transgan_version: str = __version__

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values: what ONNX metadata holds and engines carry as `info`."""
        info: dict[str, Any] = {
            "kind": self.kind,
            "task": self.task,
            "arch": self.arch,
            "config": dict(self.config),
            "direction": self.direction,
            "normalization": dict(self.normalization),
            "class_names": list(self.class_names),
            "test_time": self.test_time,
            "transgan_version": self.transgan_version,
            "output_nc": self.output_nc,
        }
        if self.kind == "translator":
            info.update(size_multiple=self.size_multiple, input_nc=self.input_nc)
        else:
            info.update(latent_dim=self.latent_dim, num_classes=self.num_classes, image_size=self.image_size)
        return info


@dataclass
class ModelFile:
    """What a model file holds: named networks (eval mode) and the metadata to use them."""

    networks: dict[str, nn.Module]
    meta: dict[str, Any] = field(default_factory=dict)
    # The file it was read from and the sha256 of its bytes (None for in-memory models): what caches of exports
    # and engine choices key on, so nothing reads the file again.
    source: Path | None = None
    digest: str | None = None

    @classmethod
    def from_networks(cls, networks: nn.Module | dict[str, nn.Module], **model_file_kwargs: Any) -> ModelFile:
        """The in-memory twin of the file `save(networks, path, **model_file_kwargs)` writes (live networks,
        modes untouched): what evaluation during training measures."""
        networks = {"G": networks} if isinstance(networks, nn.Module) else dict(networks)
        return cls(networks, model_meta(networks, **model_file_kwargs))

    @property
    def primary(self) -> nn.Module:
        return self.networks[self.meta["primary"]]

    @property
    def directions(self) -> dict[str, str]:
        """'AtoB'/'BtoA' -> network name (translation models); empty for others."""
        return dict(self.meta.get("directions") or {})

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names") or [])

    @property
    def test_time(self) -> str:
        """How the generators run at test time: the stored mode, or the default of the task for older files."""
        return self.meta.get("test_time") or default_test_time(self.meta.get("task"))

    def generator(self, direction: str | None = None) -> tuple[nn.Module, str | None]:
        """The generator for `direction` and the direction taken: by default AtoB (or the only direction);
        the primary network for models without directions."""
        directions = self.directions
        if direction is None and directions:
            direction = "AtoB" if "AtoB" in directions else next(iter(directions))
        if direction is None:
            return self.primary, None
        if direction not in directions:
            available = ", ".join(directions) or "none"
            raise TransganError(f"this model cannot translate {direction}; available directions: {available}")
        return self.networks[directions[direction]], direction

    def info(self, direction: str | None = None) -> GeneratorInfo:
        """What the generator for `direction` (see `generator`) is and how it runs."""
        net, direction = self.generator(direction)
        spec = network_spec(net)
        role = NETWORKS.entry(spec["arch"]).info.get("role")
        if role not in ("translator", "sampler"):
            raise TransganError(f"{spec['arch']} is a {role}, not a generator (a translator or a sampler)")
        config = spec["config"]
        common = {
            "kind": role,
            "task": self.meta.get("task"),
            "arch": spec["arch"],
            "config": dict(config),
            "direction": direction,
            "normalization": dict(self.meta.get("normalization") or DEFAULT_NORMALIZATION),
            "class_names": tuple(self.class_names),
            "test_time": self.test_time,
        }
        if role == "translator":
            return GeneratorInfo(
                **common,
                size_multiple=int(getattr(net, "size_multiple", 1)),
                input_nc=int(config.get("input_nc", 3)),
                output_nc=int(config.get("output_nc", 3)),
            )
        return GeneratorInfo(
            **common,
            latent_dim=int(net.latent_dim),
            num_classes=int(net.num_classes),
            image_size=int(getattr(net, "image_size", 0)),
            output_nc=int(getattr(net, "channels", 3)),
        )


def default_test_time(task: str | None) -> str:
    """The test-time mode of a task's models when none is given: pix2pix runs as the reference's test.py runs
    it (batch norm on each image, dropout on); everything else in eval mode."""
    return "reference" if task in REFERENCE_TEST_TIME_TASKS else "eval"


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
    return _checked(tensors, header, path, expected_format)


def _checked(
    tensors: dict[str, torch.Tensor], header: dict[str, str], path: Path, expected_format: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
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


def model_meta(
    networks: dict[str, nn.Module],
    *,
    task: str | None = None,
    primary: str | None = None,
    directions: dict[str, str] | None = None,
    class_names: list[str] | None = None,
    normalization: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
    test_time: str | None = None,
) -> dict[str, Any]:
    """The metadata of a model file holding `networks`: written by `save`, held by `ModelFile.from_networks`.

    `directions` maps 'AtoB'/'BtoA' to network names (translation models); `class_names` is stored for
    conditional generators; `extra` holds task-specific plain values (image size, latent size...);
    `test_time` is 'reference' or 'eval' (default: `default_test_time(task)`).
    """
    primary = primary or next(iter(networks))
    for name in [primary, *(directions or {}).values()]:
        if name not in networks:
            raise TransganError(f"model file: no network '{name}' among {', '.join(networks)}")
    return {
        "version": __version__,
        "task": task,
        "primary": primary,
        "networks": {name: network_spec(net) for name, net in networks.items()},
        "directions": dict(directions or {}),
        "class_names": list(class_names or []),
        "normalization": dict(normalization or DEFAULT_NORMALIZATION),
        "extra": dict(extra or {}),
        "test_time": check_mode(test_time or default_test_time(task)),
    }


def save(networks: nn.Module | dict[str, nn.Module], path: str | Path, **model_file_kwargs: Any) -> Path:
    """Write a model file: the weights of one or more networks plus all that `load` needs to rebuild them.

    Keywords (task, primary, directions, class_names, normalization, extra, test_time): see `model_meta`.
    """
    if isinstance(networks, nn.Module):
        networks = {"G": networks}
    meta = model_meta(networks, **model_file_kwargs)
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
    if not path.is_file():
        raise TransganError(f"{path}: no such file")
    try:  # one read of the file: its bytes give the tensors, the header and the digest
        data = path.read_bytes()
        tensors = safetensors_load(data)
        header_size = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise TransganError(f"{path}: not a readable safetensors file ({error})") from error
    tensors, meta = _checked(tensors, header, path, MODEL_FORMAT)
    networks = networks_from_tensors(meta["networks"], tensors, path)
    for net in networks.values():
        net.to(device).eval()
    return ModelFile(networks, meta, source=path, digest=hashlib.sha256(data).hexdigest())


def load(path: str | Path, name: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The network rebuilt from a model file alone, in eval mode (the primary one unless `name` is given)."""
    model = read_model(path, device)
    if name is None:
        return model.primary
    if name not in model.networks:
        raise TransganError(f"{path}: no network '{name}'; it holds {', '.join(model.networks)}")
    return model.networks[name]
