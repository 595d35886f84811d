"""`--init-from MODEL`: a new run starts from the weights of another model (a run directory, a model file, a
pretrained name, a reference, GAN Compression or CUT `.pth`, a StyleGAN2-ADA snapshot). Every layer whose
tensors all fit is loaded, the rest keeps its fresh initialisation, and one table says which is which;
optimizers and schedules start fresh."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from transgan.errors import TransganError

StateDict = dict[str, torch.Tensor]
# The reference names its files <epoch>_net_<NAME>.pth (latest_net_G_A.pth, 200_net_D.pth...).
REFERENCE_FILE = re.compile(r"(?:^|_)net_(\w+)\.pth$")


@dataclass
class InitSource:
    """What a MODEL argument holds: networks by the source's own names, and what it was read from."""

    spec: str
    kind: str  # said in the table: "training checkpoint", "model file", "reference .pth" ...
    files: list[Path]
    networks: dict[str, StateDict]
    directions: dict[str, str] = field(default_factory=dict)  # 'AtoB' -> source network (translation models)
    primary: str | None = None

    def sha256(self) -> str:
        """The content hash of what was read (one file: its sha256; several: the hash of their names and hashes)."""
        digests = [(path.name, file_sha256(path)) for path in self.files]
        if len(digests) == 1:
            return digests[0][1]
        return hashlib.sha256("".join(f"{name}\0{digest}\n" for name, digest in digests).encode()).hexdigest()


@dataclass
class NetworkReport:
    """What one network of the new run received: layers (tensor owners) loaded, left new, or not fitting."""

    target: str
    source: str | None
    loaded: int = 0
    loaded_values: int = 0
    new: int = 0
    mismatched: list[str] = field(default_factory=list)  # 'layer (shape here vs shape in the source)'


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- reading a source -------------------------------------------------------------------------------
def read_source(spec: str | Path) -> InitSource:
    """The networks of MODEL: run directory (its newest checkpoint, discriminators included; else its model
    file), training checkpoint, model file, pretrained name, a `.pth` state dict or a folder of reference `.pth`s."""
    from transgan.models import pretrained_path
    from transgan.training_state import list_checkpoints

    path = Path(spec)
    if path.is_dir():
        checkpoints = list_checkpoints(path / "checkpoints")
        if checkpoints:
            return _read_checkpoint(str(spec), checkpoints[-1][1], path / "model.safetensors")
        if (path / "model.safetensors").is_file():
            return _read_model_file(str(spec), path / "model.safetensors")
        pth = sorted(path.glob("latest_net_*.pth"))
        if pth:
            return _read_pth_files(str(spec), pth)
        raise TransganError(f"--init-from {spec}: a folder with no checkpoint, model.safetensors or latest_net_*.pth")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            header = _header(path)
            if header.get("format") == "transgan.checkpoint":
                return _read_checkpoint(str(spec), path, path.parent.parent / "model.safetensors")
            return _read_model_file(str(spec), path)
        if suffix in (".pth", ".pt"):
            return _read_pth_files(str(spec), [path])
        if suffix == ".pkl":
            return _read_snapshot(str(spec), path)
        raise TransganError(
            f"--init-from {spec}: not a model this option reads; give a run directory, a .safetensors model or "
            "checkpoint, a pretrained name, a reference / GAN Compression / CUT .pth or a StyleGAN2-ADA .pkl"
        )
    if path.suffix or "/" in str(spec):
        raise TransganError(f"--init-from {spec}: no such file or run directory")
    return _read_model_file(str(spec), pretrained_path(str(spec)))


def _header(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise TransganError(f"--init-from {path}: not a readable safetensors file ({error})") from error


def _model_layout(model_path: Path) -> tuple[dict[str, str], str | None]:
    """(directions, primary) of a model file, from its header alone; empty when there is none."""
    if not model_path.is_file():
        return {}, None
    header = _header(model_path)
    if header.get("format") != "transgan.model":
        return {}, None
    meta = json.loads(header["transgan"])
    return dict(meta.get("directions") or {}), meta.get("primary")


def _split(tensors: StateDict, prefix: str = "") -> dict[str, StateDict]:
    """{'G.a.weight': t} -> {'G': {'a.weight': t}} for the keys under `prefix`."""
    networks: dict[str, StateDict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            name, _, rest = key[len(prefix) :].partition(".")
            networks.setdefault(name, {})[rest] = value
    return networks


def _read_checkpoint(spec: str, path: Path, model_path: Path) -> InitSource:
    from transgan.training_state import read_training_checkpoint

    # The live networks (not the EMA copies): the weights training continued from; the new run's EMA copies
    # start from them.
    tensors = read_training_checkpoint(path).tensors
    directions, primary = _model_layout(model_path)
    return InitSource(spec, f"training checkpoint {path}", [path], _split(tensors, "net."), directions, primary)


def _read_model_file(spec: str, path: Path) -> InitSource:
    from transgan.checkpoint import MODEL_FORMAT, read_safetensors

    tensors, meta = read_safetensors(path, MODEL_FORMAT)
    directions = dict(meta.get("directions") or {})
    return InitSource(spec, f"model file {path}", [path], _split(tensors), directions, meta.get("primary"))


def _read_pth_files(spec: str, paths: list[Path]) -> InitSource:
    """Reference / GAN Compression state dicts; the network name comes from the file name (latest_net_G_A.pth),
    else from the layout (a generator 'G' or a discriminator 'D')."""
    from transgan.convert.reference import guess_reference_arch, read_state_dict, strip_module_prefix
    from transgan.registry import NETWORKS

    networks: dict[str, StateDict] = {}
    for path in paths:
        state = strip_module_prefix(read_state_dict(path))
        match = REFERENCE_FILE.search(path.name)
        if match:
            name = match.group(1)
        else:
            arch = guess_reference_arch(state)
            name = "D" if arch and NETWORKS.entry(arch).info.get("role") == "discriminator" else "G"
        networks[name] = state
    return InitSource(spec, "state dict " + ", ".join(str(p) for p in paths), list(paths), networks)


def _read_snapshot(spec: str, path: Path) -> InitSource:
    """A StyleGAN2-ADA snapshot (network-snapshot-*.pkl, read without running its code): its G (the weights
    training continued from; G_ema when there is no G) and its D, as transgan's StyleGAN2 networks."""
    from transgan.convert.stylegan_pickle import PersistentRecord, network_from_record, read_snapshot

    data = read_snapshot(path)
    generator = "G" if isinstance(data.get("G"), PersistentRecord) else "G_ema"
    networks = {}
    for key, name in ((generator, "G"), ("D", "D")):
        if isinstance(data.get(key), PersistentRecord):
            networks[name] = network_from_record(data[key], f"{path} [{key}]").state_dict()
    return InitSource(spec, f"StyleGAN2-ADA snapshot {path}", [path], networks, primary="G")


# -- matching and loading ---------------------------------------------------------------------------
def pair_networks(source: InitSource, targets: list[str], layout: dict[str, Any]) -> dict[str, str]:
    """target network -> source network: same names first, then the same translation direction, then a lone
    source network goes to the run's primary generator (or its first discriminator)."""
    pairs = {name: name for name in targets if name in source.networks}
    target_directions = layout.get("directions") or {}
    for direction, source_name in source.directions.items():
        target = target_directions.get(direction)
        if target in targets and target not in pairs and source_name not in pairs.values():
            pairs[target] = source_name
    if not pairs and len(source.networks) == 1:
        (source_name,) = source.networks
        if source_name.startswith("D"):
            target = next((name for name in targets if name.startswith("D")), None)
        else:
            target = layout.get("primary") or next((name for name in targets if name.startswith("G")), None)
        if target is not None:
            pairs[target] = source_name
    return pairs


def _layers(state: StateDict) -> dict[str, list[str]]:
    """Tensor keys grouped by the module owning them (a layer's weight, bias and statistics load together)."""
    layers: dict[str, list[str]] = {}
    for key in state:
        owner = key.rsplit(".", 1)[0] if "." in key else key
        layers.setdefault(owner, []).append(key)
    return layers


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(str(size) for size in tensor.shape) or "scalar"


@torch.no_grad()
def load_fitting(net: nn.Module, state: StateDict, report: NetworkReport) -> None:
    """Copy into `net` every layer of `state` whose tensors all exist with the same shapes; count the rest."""
    from transgan.convert.reference import fit_norm_state

    state = fit_norm_state(state, net)  # legacy norm statistics of reference files
    own = net.state_dict()
    for keys in _layers(own).values():
        present = [key for key in keys if key in state]
        if not present:
            report.new += 1
            continue
        wrong = [key for key in present if state[key].shape != own[key].shape]
        if wrong or len(present) < len(keys):
            key = wrong[0] if wrong else next(key for key in keys if key not in state)
            found = _shape(state[key]) if key in state else "missing"
            report.mismatched.append(f"{report.target}.{key} ({_shape(own[key])} here, {found} in the source)")
            continue
        for key in keys:
            own[key].copy_(state[key])
        report.loaded += 1
        report.loaded_values += sum(own[key].numel() for key in keys if own[key].is_floating_point())


def initialise(
    networks: nn.ModuleDict, layout: dict[str, Any], spec: str | Path, sha256: str = ""
) -> tuple[InitSource, str, list[NetworkReport]]:
    """Load MODEL's fitting weights into `networks` (a task's); returns the source, its sha256 and the reports.

    `layout` is the task's model-file layout (primary, directions); `sha256`, when given, must match the
    source's content (a config.toml that recorded it starts from the same weights or not at all)."""
    source = read_source(spec)
    digest = source.sha256()
    if sha256 and sha256 != digest:
        raise TransganError(
            f"--init-from {spec}: its content hash is {digest}, not the recorded --init-from-sha256 {sha256}; the "
            "file changed since the run was configured (drop --init-from-sha256 to start from it as it is now)"
        )
    pairs = pair_networks(source, list(networks), layout)
    reports = []
    for name, net in networks.items():
        report = NetworkReport(name, pairs.get(name))
        if report.source is None:
            report.new = len(_layers(net.state_dict()))
        else:
            load_fitting(net, source.networks[report.source], report)
        reports.append(report)
    if not any(report.loaded for report in reports):
        examples = [line for report in reports for line in report.mismatched[:1]]
        why = f"e.g. {examples[0]}" if examples else f"it holds {', '.join(source.networks)}"
        raise TransganError(
            f"--init-from {spec}: none of its weights fit this run's networks ({why}); give the options "
            "(--arch, widths, layers) the source was trained with"
        )
    return source, digest, reports


def table(source: InitSource, digest: str, reports: list[NetworkReport]) -> str:
    """The one table a run prints: per network, what was loaded, what is new and what did not fit."""
    lines = [f"init from {source.kind} (sha256 {digest[:16]})"]
    header = ("network", "from", "loaded layers", "values loaded", "new layers", "did not fit")
    rows = [
        (r.target, r.source or "-", str(r.loaded), f"{r.loaded_values:,}", str(r.new), str(len(r.mismatched)))
        for r in reports
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    misfits = [line for report in reports for line in report.mismatched]
    for line in misfits[:8]:
        lines.append(f"  did not fit: {line}")
    if len(misfits) > 8:
        lines.append(f"  ... and {len(misfits) - 8} more layers that did not fit")
    used = {report.source for report in reports}
    left = [name for name in source.networks if name not in used]
    if left:
        lines.append(f"  not used from the source: {', '.join(left)}")
    lines.append("  optimizers and learning-rate schedules start fresh")
    return "\n".join(lines)
