"""Read NVIDIA's StyleGAN2-ADA snapshots (network-snapshot-*.pkl) without running the code they carry.

An official snapshot pickles each network as a call to its persistence module's reconstructor, whose record
holds the complete Python source of the network module, which the official loader executes. Here a restricted
unpickler allows only the few globals the format uses (the reconstructor becomes "return the record", tensors
are rebuilt from their nested torch archives read with torch.load(weights_only=True)); any other global is
refused with one line naming it. The records' parameters and buffers become state dicts for transgan's own
StyleGAN2 networks, built from the records' constructor arguments; `module_src` is never executed.
"""

from __future__ import annotations

import io
import pickle
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from transgan.errors import TransganError
from transgan.nets import build_network

NETWORK_KEYS = ("G", "G_ema", "D")
FILTER = [1, 3, 3, 1]


class PersistentRecord(dict):
    """The meta dict of one pickled persistent object (type, version, module_src, class_name, state)."""


class EasyDict(dict):
    """Stands in for dnnlib.util.EasyDict: a plain dict."""


def _reconstruct(meta: dict) -> PersistentRecord:
    return PersistentRecord(meta)


def _load_storage(payload: bytes) -> Any:
    # The nested archive is a legacy torch.save of one storage: read as safely as the outer file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        storage = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise TransganError(f"a tensor payload holds {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None) -> torch.Tensor:
    if hooks:
        raise TransganError("a pickled tensor carries backward hooks; refused")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        empty = torch.empty((0,), dtype=storage.dtype)
        return empty.set_(storage._untyped_storage, offset, size, stride).clone()


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool = False, hooks=None) -> torch.Tensor:
    if hooks:
        raise TransganError("a pickled parameter carries backward hooks; refused")
    return data


def _numpy_scalar(dtype: np.dtype, data: bytes) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise TransganError("a pickled numpy scalar of object type; refused")
    return np.frombuffer(data, dtype=dtype)[0].item()


ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,  # protocol 3 (2021 snapshots) pickles sets as a call
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): np.dtype,
    ("dnnlib.util", "EasyDict"): EasyDict,
}


class SnapshotUnpickler(pickle.Unpickler):
    """Unpickles only what an official snapshot needs; everything else is refused before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise TransganError(
            f"refused to load {module}.{name}: an official StyleGAN2-ADA snapshot holds only networks and tensors "
            "(this file would run other code)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise TransganError("refused: the pickle uses persistent ids (not an official StyleGAN2-ADA snapshot)")


def read_snapshot(path: str | Path) -> dict[str, Any]:
    """The snapshot's top-level dict, networks as PersistentRecords; never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise TransganError(f"{path}: no such file")
    try:
        with open(path, "rb") as f:
            data = SnapshotUnpickler(f).load()
    except TransganError as error:
        raise TransganError(f"{path}: {error}") from None
    except Exception as error:  # truncated or not a pickle
        raise TransganError(
            f"{path}: not a readable StyleGAN2-ADA snapshot ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(data, dict) or not any(isinstance(data.get(key), PersistentRecord) for key in NETWORK_KEYS):
        raise TransganError(f"{path}: not a StyleGAN2-ADA snapshot (no G, G_ema or D network inside)")
    return data


def record_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of a record and its sub-records, under official module names."""
    state = record.get("state") or {}
    skipped = set(state.get("_non_persistent_buffers_set") or ())
    tensors = {}
    for kind in ("_parameters", "_buffers"):
        for name, value in (state.get(kind) or {}).items():
            if value is not None and name not in skipped:
                tensors[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentRecord):
            tensors.update(record_state_dict(child, f"{prefix}{name}."))
        elif child is not None:
            raise TransganError(f"sub-module {prefix}{name} is not a network record")
    return tensors


def _take(kwargs: dict, key: str, default: Any, allowed: tuple | None = None) -> Any:
    value = kwargs.pop(key, default)
    if allowed is not None and value not in allowed:
        raise TransganError(f"{key}={value!r} is not supported by transgan's StyleGAN2 (supported: {allowed})")
    return value


def _refuse_rest(where: str, kwargs: dict) -> None:
    kwargs.pop("fp16_channels_last", None)  # a memory layout, no effect on the numbers
    kwargs.pop("channels_last", None)
    if kwargs:
        raise TransganError(f"{where} options {sorted(kwargs)} are not supported by transgan's StyleGAN2")


def generator_options(init_kwargs: dict) -> dict[str, Any]:
    """transgan stylegan2_generator options from the official Generator's constructor arguments."""
    kw = dict(init_kwargs)
    mapping, synthesis = dict(kw.pop("mapping_kwargs", {}) or {}), dict(kw.pop("synthesis_kwargs", {}) or {})
    w_dim = kw.pop("w_dim")
    options = dict(latent_dim=kw.pop("z_dim"), w_dim=w_dim, num_classes=kw.pop("c_dim"))
    options.update(image_size=kw.pop("img_resolution"), channels=kw.pop("img_channels"))
    options.update(mapping_layers=mapping.pop("num_layers", 8), mapping_lr_mul=mapping.pop("lr_multiplier", 0.01))
    for key in ("embed_features", "layer_features"):
        _take(mapping, key, None, (None, w_dim))
    _take(mapping, "w_avg_beta", 0.995, (0.995,))
    _take(mapping, "activation", "lrelu", ("lrelu",))
    options.update(channel_base=synthesis.pop("channel_base", 32768), channel_max=synthesis.pop("channel_max", 512))
    options.update(architecture=synthesis.pop("architecture", "skip"))
    options.update(num_fp16_res=synthesis.pop("num_fp16_res", 0), conv_clamp=synthesis.pop("conv_clamp", None))
    _take(synthesis, "resample_filter", FILTER, (FILTER,))
    _take(synthesis, "use_noise", True, (True,))
    _take(synthesis, "activation", "lrelu", ("lrelu",))
    _take(synthesis, "kernel_size", 3, (3,))
    for where, rest in (("Generator", kw), ("mapping_kwargs", mapping), ("synthesis_kwargs", synthesis)):
        _refuse_rest(where, rest)
    return options


def discriminator_options(init_kwargs: dict) -> dict[str, Any]:
    """transgan stylegan2_discriminator options from the official Discriminator's constructor arguments."""
    kw = dict(init_kwargs)
    block, mapping = dict(kw.pop("block_kwargs", {}) or {}), dict(kw.pop("mapping_kwargs", {}) or {})
    epilogue = dict(kw.pop("epilogue_kwargs", {}) or {})
    options = dict(num_classes=kw.pop("c_dim"), image_size=kw.pop("img_resolution"), channels=kw.pop("img_channels"))
    options.update(architecture=kw.pop("architecture", "resnet"), channel_base=kw.pop("channel_base", 32768))
    options.update(channel_max=kw.pop("channel_max", 512), num_fp16_res=kw.pop("num_fp16_res", 0))
    options.update(conv_clamp=kw.pop("conv_clamp", None), cmap_dim=kw.pop("cmap_dim", None) or 0)
    options.update(mapping_layers=mapping.pop("num_layers", 8))
    _take(mapping, "lr_multiplier", 0.01, (0.01,))
    _take(mapping, "activation", "lrelu", ("lrelu",))
    group = _take(epilogue, "mbstd_group_size", 4)
    if group is None:
        raise TransganError("mbstd_group_size None (the whole batch) is not supported; convert with a group size")
    options.update(mbstd_group_size=group, mbstd_channels=epilogue.pop("mbstd_num_channels", 1))
    _take(block, "resample_filter", FILTER, (FILTER,))
    _take(block, "freeze_layers", 0)  # Freeze-D changes training only
    for where, rest in (("Discriminator", kw), ("block_kwargs", block), ("mapping_kwargs", mapping)):
        _refuse_rest(where, rest)
    _refuse_rest("epilogue_kwargs", epilogue)
    return options


def load_official_state(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load an official state dict (official key names) into a transgan StyleGAN2 network, strictly."""
    state = {key: value for key, value in state.items() if not key.endswith("resample_filter")}
    w_avg = getattr(getattr(net, "mapping", None), "w_avg", None)
    if w_avg is not None and w_avg.dim() == 2 and "mapping.w_avg" in state:
        state["mapping.w_avg"] = state["mapping.w_avg"].expand_as(w_avg).clone()  # one average for every class
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise TransganError(f"{source}: the weights do not fit transgan's StyleGAN2 ({first_line})") from None
    return net.eval()


def network_from_record(record: PersistentRecord, source: str) -> nn.Module:
    """A transgan network equal to the official Generator or Discriminator of `record`."""
    state = record.get("state") or {}
    kwargs = state.get("_init_kwargs")
    class_name = record.get("class_name")
    if not isinstance(kwargs, dict) or class_name not in ("Generator", "Discriminator"):
        raise TransganError(f"{source}: a '{class_name}' record without constructor arguments; not convertible")
    if class_name == "Generator":
        net = build_network("stylegan2_generator", **generator_options(kwargs))
    else:
        net = build_network("stylegan2_discriminator", **discriminator_options(kwargs))
    return load_official_state(net, record_state_dict(record), source)


def convert_snapshot(path: str | Path, network: str = "G_ema") -> nn.Module:
    """The snapshot's `network` (G_ema, G or D) as a transgan network, in eval mode."""
    if network not in NETWORK_KEYS:
        raise TransganError(f"--network {network}: use G_ema (the averaged generator), G or D")
    data = read_snapshot(path)
    record = data.get(network)
    if not isinstance(record, PersistentRecord):
        raise TransganError(f"{path}: the snapshot has no '{network}' network")
    return network_from_record(record, f"{path} [{network}]")


def save_converted(net: nn.Module, out: str | Path) -> Path:
    """Write a converted network as a transgan model file (a generator generates, exports and serves as a
    stylegan model; classes are named 0..K-1)."""
    import transgan  # the model-file writer

    if net.transgan_arch == "stylegan2_generator":
        extra = {"latent_dim": net.latent_dim, "image_size": net.image_size, "channels": net.channels}
        names = [str(k) for k in range(net.num_classes)]
        return transgan.save(
            {"G": net}, out, task="stylegan", class_names=names, extra={**extra, "num_classes": len(names)}
        )
    return transgan.save({"D": net}, out, task=None, extra={"image_size": net.image_size, "channels": net.channels})
