"""Import state dicts saved by the reference pytorch-CycleGAN-and-pix2pix (and by the official CUT code, whose
generators and PatchGANs add blur-pool filters) into transgan's own networks."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transgan.errors import TransganError
from transgan.nets import build_network, network_options
from transgan.registry import NETWORKS

StateDict = dict[str, torch.Tensor]
RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def read_state_dict(path: str | Path) -> StateDict:
    """A plain tensor dict from a `.pth` file, read without unpickling code (`weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise TransganError(f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own message suggests weights_only=False, which would run code from the file: never do that.
        raise TransganError(
            f"{path}: not a plain PyTorch state dict (it is not a .pth file, or it holds pickled objects "
            "other than tensors, which transgan does not load)"
        ) from error
    except Exception as error:  # torch raises many types for damaged files (zip, EOF, runtime...)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise TransganError(f"{path}: not a readable PyTorch state dict ({first_line})") from error
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise TransganError(f"{path}: expected a state dict of tensors (as saved by networks.py), found {type(state)}")
    return dict(state)


def strip_module_prefix(state: StateDict) -> StateDict:
    """Drop the `module.` prefix that nn.DataParallel adds to every key."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return dict(state)


def fit_norm_state(state: StateDict, net: nn.Module) -> StateDict:
    """Make the norm tensors of `state` match `net`'s norms.

    Checkpoints saved with PyTorch < 0.4 carry running_mean/var (and later num_batches_tracked) for
    InstanceNorm layers that neither use nor keep them: drop those. They also lack BatchNorm's
    num_batches_tracked, which only matters for momentum=None: fill it with 0.
    """
    state = dict(state)
    for name, module in net.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.InstanceNorm2d) and not module.track_running_stats:
            for stat in RUNNING_STATS:
                state.pop(prefix + stat, None)
        elif isinstance(module, nn.BatchNorm2d) and prefix + "running_mean" in state:
            state.setdefault(prefix + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return state


def _ints_after(state: StateDict, pattern: str) -> list[int]:
    """Sorted distinct integers captured by `pattern` (one group) over the keys."""
    found = {int(match.group(1)) for key in state if (match := re.fullmatch(pattern, key))}
    return sorted(found)


def _conv_weights(state: StateDict, pattern: str) -> list[tuple[int, torch.Tensor]]:
    """(index, weight) of the 4-D weights whose key matches `pattern` (one group: the layer index)."""
    weights = [(int(m.group(1)), value) for key, value in state.items() if (m := re.fullmatch(pattern, key))]
    return sorted((index, value) for index, value in weights if value.dim() == 4)


def infer_resnet(state: StateDict) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if "model.1.weight" in state:
        config["input_nc"] = state["model.1.weight"].shape[1]
        config["ngf"] = state["model.1.weight"].shape[0]
        config["norm"] = "batch" if "model.2.weight" in state else "instance"
    convs = _conv_weights(state, r"model\.(\d+)\.weight")
    if convs:
        config["output_nc"] = convs[-1][1].shape[0]
    blocks = _ints_after(state, r"model\.(\d+)\.conv_block\..*")
    if blocks:
        # CUT's generators keep their blur filters: 3x3 ones down (Downsample), 4x4 ones up (Upsample).
        filters = [value.shape[-1] for key, value in state.items() if re.fullmatch(r"model\.\d+\.filt", key)]
        config["antialias"], config["antialias_up"] = 3 in filters, 4 in filters
        config["n_blocks"] = len(blocks)
        # Block layout: [pad] conv norm relu [dropout] [pad] conv norm; 'zero' padding has no pad modules.
        convs = [index for index, _ in _conv_weights(state, rf"model\.{blocks[0]}\.conv_block\.(\d+)\.weight")]
        if len(convs) == 2:
            config["padding"] = "zero" if convs[0] == 0 else "reflect"
            config["dropout"] = convs[1] - convs[0] == (4 if convs[0] == 0 else 5)
    return config


def infer_unet(state: StateDict) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if "model.model.0.weight" in state and "model.model.3.weight" in state:
        config["input_nc"] = state["model.model.0.weight"].shape[1]
        config["ngf"] = state["model.model.0.weight"].shape[0]
        config["output_nc"] = state["model.model.3.weight"].shape[1]  # ConvTranspose2d: (in, out, k, k)
        config["norm"] = "batch" if "model.model.1.model.2.weight" in state else "instance"
        # Every level nests one more `.model`; the generator and the outermost level account for two.
        config["num_downs"] = max(key.split(".").count("model") for key in state) - 1
        # Dropout has no tensors to read it from: take the reference's default for U-Nets (pix2pix trains
        # with dropout unless --no_dropout), which matters in the reference test-time mode (dropout on).
        config["dropout"] = True
    return config


def infer_patchgan(state: StateDict, first_norm_key: str = "model.3.weight") -> dict[str, Any]:
    """The reference's PatchGAN: widths from the convs; batch norm when the first norm layer has a weight."""
    config: dict[str, Any] = {}
    convs = _conv_weights(state, r"model\.(\d+)\.weight")
    if convs:
        config["input_nc"] = convs[0][1].shape[1]
        config["ndf"] = convs[0][1].shape[0]
        config["n_layers"] = len(convs) - 2
        config["norm"] = "batch" if first_norm_key in state else "instance"
    return config


def infer_antialias_patchgan(state: StateDict) -> dict[str, Any]:
    """CUT's PatchGAN: a Downsample (blur filter, no weights) after the first activation moves its norm to 4."""
    return infer_patchgan(state, first_norm_key="model.4.weight")


def infer_pixel(state: StateDict) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if "net.0.weight" in state:
        config["input_nc"] = state["net.0.weight"].shape[1]
        config["ndf"] = state["net.0.weight"].shape[0]
        config["norm"] = "batch" if "net.3.weight" in state else "instance"
    return config


def infer_mobile_resnet(state: StateDict) -> dict[str, Any]:
    """Per-stage channels from the tensor shapes (see MobileResnetGenerator for the width formulas)."""
    try:
        blocks = _ints_after(state, r"model\.(\d+)\.conv_block\..*")
        hidden = {}  # stage -> hidden width, by the generator's rule: block i uses stage 3 + i * 3 // n_blocks
        for i, block in enumerate(blocks):
            hidden[3 + i * 3 // len(blocks)] = state[f"model.{block}.conv_block.1.conv.2.weight"].shape[0] // 4
        stages = [
            state["model.1.weight"].shape[0],
            state["model.4.weight"].shape[0] // 2,
            state["model.7.weight"].shape[0] // 4,
            hidden[3],
            hidden.get(4, hidden[3]),  # fewer than 3 blocks leave later stages unused
            hidden.get(5, hidden[3]),
            state["model.19.weight"].shape[1] // 2,
            state["model.22.weight"].shape[1],
        ]
        return {
            "input_nc": state["model.1.weight"].shape[1],
            "output_nc": state["model.26.weight"].shape[0],
            "channels": "_".join(str(width) for width in stages),
            "n_blocks": len(blocks),
            "norm": "batch" if "model.2.weight" in state else "instance",
        }
    except (KeyError, IndexError):
        return {}  # not this layout: the strict load below says so in one line


# Network family (the `family` each builder registers) -> shape-based inference of its options.
INFER: dict[str, Callable[[StateDict], dict[str, Any]]] = {
    "resnet": infer_resnet,
    "unet": infer_unet,
    "patchgan": infer_patchgan,
    "patchgan_antialias": infer_antialias_patchgan,
    "pixel": infer_pixel,
    "mobile_resnet": infer_mobile_resnet,
}


def guess_reference_arch(state: StateDict) -> str | None:
    """The registered arch whose layout the keys look like, or None."""
    if any(".conv_block." in key and ".conv." in key for key in state):
        return "mobile_resnet"
    if "model.model.0.weight" in state:
        num_downs = infer_unet(state).get("num_downs")
        return {8: "unet_256", 7: "unet_128"}.get(num_downs, "unet")
    if any(".conv_block." in key for key in state):
        config = infer_resnet(state)
        name = {9: "resnet_9blocks", 6: "resnet_6blocks"}.get(config.get("n_blocks"), "resnet")
        # CUT's default (blur-pool both ways) has its own name; one-sided layouts keep the flags as options.
        both = config.get("antialias") and config.get("antialias_up")
        return f"{name}_antialias" if both and name != "resnet" else name
    if "net.0.weight" in state:
        return "pixel"
    if "model.0.weight" in state and "model.2.filt" in state:
        return "basic_antialias" if infer_antialias_patchgan(state).get("n_layers") == 3 else "n_layers_antialias"
    if "model.0.weight" in state:
        return "basic" if infer_patchgan(state).get("n_layers") == 3 else "n_layers"
    return None


def _describe(arch: str, config: dict[str, Any]) -> str:
    width = next((f" with {key} {config[key]}" for key in ("ngf", "ndf", "channels") if key in config), "")
    return f"a {arch}{width}"


def _mismatch(state: StateDict, expected: StateDict) -> str:
    """What differs between the checkpoint and the network, in a few words."""
    if len(state) != len(expected):
        return f"expected {len(expected)} tensors, found {len(state)}"
    missing = sorted(set(expected) - set(state))
    if missing:
        unexpected = sorted(set(state) - set(expected))
        return f"missing tensor '{missing[0]}', unexpected '{unexpected[0]}'"
    for key, value in expected.items():
        if state[key].shape != value.shape:
            return f"tensor '{key}' has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}"
    return ""


def convert_state_dict(state: StateDict, arch: str | None, source: str = "checkpoint", **config: Any) -> nn.Module:
    """Build `arch` (guessed from the keys when None) with options inferred from the tensor shapes,
    overridden by `config`, and load `state` into it strictly; eval mode."""
    state = strip_module_prefix(state)
    guess = guess_reference_arch(state)
    arch = arch or guess
    if arch is None:
        raise TransganError(f"{source}: the tensor names match no known network; pass the architecture (--arch)")
    family = NETWORKS.entry(arch).info.get("family")
    inferred = INFER[family](state) if family in INFER else {}
    options = network_options(arch)
    resolved = {key: value for key, value in inferred.items() if key in options}
    resolved.update(config)  # explicit options win over inferred ones
    try:
        net = build_network(arch, **resolved)
    except TransganError as error:
        raise TransganError(f"{source}: cannot build {arch} from it: {error}") from error
    state = fit_norm_state(state, net)
    expected = net.state_dict()
    problem = _mismatch(state, expected)
    if problem:
        hint = f"; try --arch {guess}" if guess and guess != arch else ""
        raise TransganError(f"{source} does not look like {_describe(arch, net.transgan_config)}: {problem}{hint}")
    net.load_state_dict(state, strict=True)
    return net.eval()


def convert_reference_state_dict(state_dict: StateDict, arch: str | None, **config: Any) -> nn.Module:
    """A transgan network holding the weights of a reference (pytorch-CycleGAN-and-pix2pix) state dict.

    `arch` is a registry name (resnet_9blocks, unet_256, basic, n_layers, pixel...); None guesses it.
    Widths, channel counts, norm and depth are read from the tensor shapes; `config` overrides them.
    """
    return convert_state_dict(state_dict, arch, "state dict", **config)


def load_reference_checkpoint(path: str | Path, arch: str | None, **config: Any) -> nn.Module:
    """Like `convert_reference_state_dict`, reading the `.pth` at `path` (e.g. latest_net_G_A.pth)."""
    return convert_state_dict(read_state_dict(path), arch, str(path), **config)
