"""Image folders to feature arrays: the FID Inception-v3 (torch-fidelity), injectable extractors, .npz caches."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from torch import Tensor, nn

from transgan.errors import TransganError
from transgan.images import list_images, read_pixels

WEIGHTS_ENV = "TRANSGAN_INCEPTION_WEIGHTS"
# The TF 'pt_inception-2015-12-05' graph ported to PyTorch by torch-fidelity (also what torchmetrics' FID loads).
# Kept here rather than read from torch-fidelity so the weights can be located without importing it.
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_NAME = "inception-v3-compat"
# What a bad, foreign or half-written weights / program file raises while being opened.
LOAD_ERRORS = (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile)

# An extractor maps a uint8 batch (N, C, H, W) to features (N, D), or to a tuple of such arrays.
Extractor = Callable[[Tensor], Any]


# ---------------------------------------------------------------------------------------------- image files
def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """One image as uint8 (H, W, C) in `mode` ('RGB' or 'L'), decoded by transgan.images' rules."""
    if mode not in ("RGB", "L"):
        raise TransganError(f"image mode {mode!r}: use 'RGB' or 'L'")
    return read_pixels(path, 3 if mode == "RGB" else 1)


def to_uint8(images: Tensor) -> Tensor:
    """Network images in [-1, 1] to uint8 in [0, 255], rounded as an 8-bit PNG of them would be."""
    return ((images.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _batches(files: list[Path], batch_size: int, mode: str) -> Iterator[Tensor]:
    # Images of one batch are stacked, so a batch ends early where the image size changes.
    pending: list[np.ndarray] = []
    for path in files:
        array = read_image(path, mode)
        if pending and (array.shape != pending[0].shape or len(pending) == batch_size):
            yield torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2)
            pending = []
        pending.append(array)
    if pending:
        yield torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------- features
def _outputs_to_numpy(outputs: Any) -> list[np.ndarray]:
    parts = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return [part.detach().float().reshape(part.shape[0], -1).cpu().numpy() for part in parts]


@torch.no_grad()
def compute_features(
    images: Tensor | Iterator[Tensor], extractor: Extractor, batch_size: int = 50, device: str | torch.device = "cpu"
) -> np.ndarray | tuple[np.ndarray, ...]:
    """Features of images: a uint8 (N, C, H, W) tensor, a float one in [-1, 1], or an iterator of batches.

    Float images are quantised to uint8 first, so generated samples are measured as their saved PNGs
    would be. The result is float32 (N, D), or a tuple of such arrays when the extractor returns a tuple.
    """
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    collected: list[list[np.ndarray]] = []
    for batch in batches:
        if batch.dtype != torch.uint8:
            batch = to_uint8(batch)
        collected.append(_outputs_to_numpy(extractor(batch.to(device))))
    if not collected:
        raise TransganError("no images to compute features of")
    arrays = tuple(np.concatenate(parts) for parts in zip(*collected))
    return arrays[0] if len(arrays) == 1 else arrays


def compute_folder_features(
    folder: str | Path,
    extractor: Extractor,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    mode: str = "RGB",
) -> np.ndarray | tuple[np.ndarray, ...]:
    """Features of every image under `folder`, read with PIL in `mode`; see compute_features. Inside
    `sharded_extraction(shard)` the processes of a torchrun or --nproc job share the work."""
    files = list_images(folder)
    compute = lambda part: compute_features(_batches(part, batch_size, mode), extractor, batch_size, device)  # noqa: E731
    if _SHARD is None or not _SHARD.active:
        return compute(files)
    from transgan.inference.sharding import features_work_dir, shared_features

    identity = (extractor_name(extractor), getattr(extractor, "__name__", ""), mode, batch_size)
    return shared_features(files, compute, _SHARD, features_work_dir(Path(folder), files, *identity), batch_size)


_SHARD: Any = None  # the transgan.inference.sharding.Shard of this process while sharded_extraction() is on


@contextmanager
def sharded_extraction(shard: Any) -> Iterator[None]:
    """Within it, compute_folder_features computes this process's share of each folder and gathers the others'
    (`transgan eval` under torchrun or --nproc); everything else extracts alone."""
    global _SHARD
    previous, _SHARD = _SHARD, shard
    try:
        yield
    finally:
        _SHARD = previous


def extractor_name(extractor: Extractor) -> str:
    """The name recorded in feature caches: an extractor's `name` attribute, else its class name."""
    owner = getattr(extractor, "__self__", extractor)  # a bound method such as features_and_logits
    return str(getattr(owner, "name", type(owner).__name__))


class FloatInput(nn.Module):
    """Wraps a network that takes float images in [-1, 1] (a TorchScript file, a transgan model) as an extractor.

    The uint8 batch is scaled to [-1, 1], converted to the network's channel count (1 <-> 3), and its
    output flattened to (N, D).
    """

    def __init__(self, net: nn.Module, channels: int | None = None, name: str | None = None):
        super().__init__()
        self.net = net
        self.channels = channels if channels is not None else _input_channels(net)
        self.name = name or type(net).__name__

    def forward(self, images: Tensor) -> Tensor:
        x = images.float() / 127.5 - 1.0
        if self.channels == 1 and x.shape[1] == 3:
            x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        elif self.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x).flatten(1)


def _input_channels(net: nn.Module) -> int | None:
    # The first 4-D weight is the first convolution: its second dimension is the input channel count.
    for param in net.parameters():
        if param.dim() == 4:
            return int(param.shape[1])
    return None


# ---------------------------------------------------------------------------------------------- Inception
def resolve_inception_weights(path: str | Path | None = None, flag_prefix: str = "") -> Path:
    """The Inception weights file: `path`, else $TRANSGAN_INCEPTION_WEIGHTS, else torch hub's cache (downloading)."""
    how_to = (
        f"download {INCEPTION_URL} on a machine with network and pass --{flag_prefix}inception-weights PATH "
        f"(or set {WEIGHTS_ENV}=PATH), or pass --{flag_prefix}features PATH for another feature extractor"
    )
    given = path or os.environ.get(WEIGHTS_ENV)
    if given:
        given = Path(given).expanduser()
        if not given.is_file():
            raise TransganError(f"Inception weights {given} not found; {how_to}")
        return given
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(INCEPTION_URL).path).name
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(INCEPTION_URL, str(cached), progress=False)
    except (OSError, RuntimeError, ValueError) as error:  # no network, proxy, disk: all end in one instruction
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TransganError(
            f"no Inception weights for FID and they could not be downloaded ({reason}); {how_to}"
        ) from error
    return cached


class InceptionExtractor(nn.Module):
    """The FID Inception-v3: uint8 RGB (N, 3, H, W) -> 2048-d pool features, resized to 299 like TF 1.x."""

    name = INCEPTION_NAME

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, images: Tensor) -> Tensor:
        return self.net(self._rgb(images))[0]

    def features_and_logits(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Pool features and the unbiased 1008-way logits used by the Inception Score, in one pass."""
        return self.net(self._rgb(images))

    @staticmethod
    def _rgb(images: Tensor) -> Tensor:
        if images.dtype != torch.uint8:
            images = to_uint8(images)
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def inception_extractor(
    weights: str | Path | None = None, device: str | torch.device = "cpu", flag_prefix: str = ""
) -> InceptionExtractor:
    """The standard FID feature extractor (torch-fidelity's port of the TF Inception), on `device`, in eval mode."""
    path = resolve_inception_weights(weights, flag_prefix)
    # torch-fidelity unpickles the file; opening it here first with weights_only=True refuses code in it,
    # and a look at the classifier's shape rejects another network's weights before building Inception.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        fc = state.get("fc.weight") if isinstance(state, dict) else None
        if fc is None or tuple(fc.shape) != (1008, 2048):
            raise ValueError("no 'fc.weight' of shape (1008, 2048)")
        del state
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        net = FeatureExtractorInceptionV3(INCEPTION_NAME, ["2048", "logits_unbiased"], str(path))
    except ImportError:
        raise TransganError("Inception features need torch-fidelity: pip install torch-fidelity") from None
    except LOAD_ERRORS as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TransganError(
            f"{path} is not the FID Inception weights file ({reason}); expected {INCEPTION_URL}"
        ) from error
    return InceptionExtractor(net).to(device).eval()


# ---------------------------------------------------------------------------------------------- statistics
def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of (N, D) features, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise TransganError(f"statistics need at least 2 feature vectors, got array of shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def save_features(path: str | Path, features: np.ndarray, **info: str | int) -> None:
    """Write features with their mean 'mu' and covariance 'sigma' (the pytorch-fid keys) and info to .npz."""
    mu, sigma = feature_statistics(features)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, features=np.asarray(features, dtype=np.float32), mu=mu, sigma=sigma, **info)
    os.replace(tmp, path)  # a crash mid-write never leaves a half cache behind


def load_features(path: str | Path) -> dict[str, Any]:
    """A statistics .npz (ours or pytorch-fid's 'mu'/'sigma'): 'mu', 'sigma', 'features' (or None) and info."""
    try:
        with np.load(path, allow_pickle=False) as data:
            loaded = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise TransganError(f"cannot read statistics file {path}: {error}") from None
    if "mu" not in loaded or "sigma" not in loaded:
        raise TransganError(f"statistics file {path} has no 'mu' and 'sigma' arrays")
    loaded.setdefault("features", None)
    for key, value in list(loaded.items()):
        if isinstance(value, np.ndarray) and value.ndim == 0:
            loaded[key] = value.item()  # info strings and counts come back as Python scalars
    return loaded


def load_extractor(
    spec: str, inception_weights: str | Path | None = None, device: str | torch.device = "cpu", flag_prefix: str = ""
):
    """'inception', or a transgan model (.safetensors), torch.export (.pt2) or TorchScript file, as an extractor.

    Errors name the options --{flag_prefix}features and --{flag_prefix}inception-weights ('eval-' in training).
    """
    if spec == "inception":
        return inception_extractor(inception_weights, device, flag_prefix)
    path = Path(spec)
    if not path.is_file():
        raise TransganError(
            f"--{flag_prefix}features {spec}: neither 'inception' nor an existing TorchScript or transgan model file"
        )
    if path.suffix == ".safetensors":
        from transgan.checkpoint import load  # imported here: metrics need no network code for Inception

        net = load(path, device=device)
    elif path.suffix == ".pt2":
        try:
            net = torch.export.load(str(path)).module()  # exported in eval mode; it cannot be switched
        except LOAD_ERRORS as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise TransganError(f"--{flag_prefix}features {path}: not a torch.export program ({reason})") from None
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but still loads
                net = torch.jit.load(str(path), map_location=device).eval()
        except LOAD_ERRORS as error:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise TransganError(f"--{flag_prefix}features {path}: not a TorchScript file ({reason})") from None
    # No .eval() on the wrapper: an exported program refuses train()/eval(); each net above is in eval mode.
    return FloatInput(net, name=path.name).to(device)
