"""int8 graphs kept in the transgan cache, keyed by model, calibration folder and bound; measured refusals too."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from transgan import __version__
from transgan.checkpoint import ModelFile
from transgan.export.int8 import Int8Refused, export_int8
from transgan.export.onnx import METADATA_KEY
from transgan.export.options import DEFAULT_MIN_PSNR, check_min_psnr
from transgan.images import scan_images
from transgan.models import cache_dir, model_digest, model_label, open_model


def folder_fingerprint(folder: Path) -> str:
    """What identifies a calibration folder's content cheaply: relative names, sizes and modification times."""
    listing = scan_images(folder)
    entries = []
    for path in listing.files:
        stat = path.stat()
        entries.append(f"{path.relative_to(listing.folder).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def int8_cache_paths(
    model: ModelFile, calibrate: str | Path, direction: str | None, min_psnr: float, test_time: str | None
) -> tuple[Path, Path]:
    """(the cached int8 graph, the cached refusal) for these options: what `exported_int8` reads and writes."""
    parts = [model_digest(model).encode(), __version__.encode(), folder_fingerprint(Path(calibrate)).encode()]
    parts.append(json.dumps([direction, check_min_psnr(min_psnr), test_time]).encode())
    digest = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    cached = cache_dir() / "onnx" / f"{model_label(model)}-{digest}-{direction or 'default'}-int8.onnx"
    return cached, cached.with_suffix(".refused.json")


def exported_int8(
    model: str | Path | ModelFile,
    calibrate: str | Path,
    direction: str | None = None,
    min_psnr: float | None = DEFAULT_MIN_PSNR,
    test_time: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Path:
    """The int8 export of `model` (a ModelFile, or what transgan.models resolves), cached by model, calibration
    folder and bound.

    A measured refusal (Int8Refused: PSNR below the bound) is cached as well, so it is reported again at once
    instead of re-measured; mistakes in the options (a bound that is not a positive number, an empty folder) are
    checked first and never cached.
    """
    min_psnr = check_min_psnr(min_psnr)
    model = open_model(model)
    cached, refused = int8_cache_paths(model, calibrate, direction, min_psnr, test_time)
    if cached.is_file():
        return cached
    if refused.is_file():
        raise Int8Refused(json.loads(refused.read_text())["error"])
    try:
        export_int8(model, cached, calibrate, direction, min_psnr, test_time=test_time, on_progress=on_progress)
    except Int8Refused as error:
        refused.parent.mkdir(parents=True, exist_ok=True)
        refused.write_text(json.dumps({"error": str(error)}))
        raise
    return cached


def int8_info(path: str | Path) -> dict[str, Any]:
    """The int8 section of an exported graph's transgan metadata (empty for fp32/fp16 graphs)."""
    model = onnx.load(str(path), load_external_data=False)
    props = {prop.key: prop.value for prop in model.metadata_props}
    return json.loads(props.get(METADATA_KEY, "{}")).get("int8", {})
