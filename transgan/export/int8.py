"""int8 ONNX export: ONNX Runtime static quantization (QDQ), each layer kept in fp32 unless its measured error allows.

Only the CPU execution provider runs these graphs fast: QDQ around a Conv becomes one QLinearConv (u8 activations,
s8 per-channel weights). Which layers go int8 is measured, not assumed: each candidate layer is quantized alone
and its error on the generator's output is measured on calibration images; layers are then taken in order of
work saved per unit of error while the sum of their errors stays within the PSNR bound, the combination is
checked, and the final PSNR against the fp32 graph is measured on held-out images the choice never saw.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from PIL import Image

from transgan.checkpoint import ModelFile
from transgan.errors import TransganError
from transgan.export.onnx import MIN_OPSET, export_onnx, set_metadata
from transgan.export.options import DEFAULT_MIN_PSNR, check_min_psnr
from transgan.images import UnreadableImage, load_image, no_images_error, scan_images

CANDIDATE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Layers are chosen against a bound this much stricter than the user's: the held-out images are not the ones the
# layers were measured on, and errors of several layers do not add exactly.
MARGIN_DB = 1.0
PERCENTILE = 99.999  # activation ranges: min/max lets one outlier pixel stretch the 256 steps over a wide range
MAX_TRIES = 4  # choose and check the combination at most this often before refusing
VERIFY_IMAGES = 8  # calibration images the chosen combination is checked on


class Int8Refused(TransganError):
    """The int8 graph measured below the PSNR bound: a measurement (cached as such), not a mistake in the options."""


@dataclass
class LayerError:
    """One candidate layer quantized alone: its work and the PSNR of the generator's output against fp32."""

    name: str
    op_type: str
    weight_shape: list[int]
    macs: int
    psnr_db: float

    @property
    def mse(self) -> float:
        return 10 ** (-self.psnr_db / 10)


@dataclass
class Int8Report:
    """What `export_int8` wrote, which layers went int8, and how close and fast the result is against fp32."""

    path: Path
    psnr_db: float  # held-out images, pooled squared error, pixels in [0, 1]
    worst_psnr_db: float  # the worst single held-out image
    all_int8_psnr_db: float  # every candidate layer int8: what a plain static quantization would give
    min_psnr: float
    quantized: list[str]
    kept_fp32: list[str]
    layers: list[LayerError]
    calibration_images: int
    held_out_images: int
    size: tuple[int, int]
    fp32_ms: float
    int8_ms: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"wrote {self.path} (int8: {len(self.quantized)} of {len(self.layers)} layers, the rest fp32); "
            f"PSNR vs fp32 {self.psnr_db:.1f} dB on {self.held_out_images} held-out images (worst "
            f"{self.worst_psnr_db:.1f} dB, bound {self.min_psnr:g} dB; every layer int8 would give "
            f"{self.all_int8_psnr_db:.1f} dB); {self.int8_ms:.0f} ms vs {self.fp32_ms:.0f} ms fp32 per "
            f"{self.size[0]}x{self.size[1]} image on this CPU"
        )


def psnr(mse: float) -> float:
    """PSNR in dB of a mean squared error on pixels in [0, 1] (inf for identical images)."""
    return math.inf if mse <= 0 else -10 * math.log10(mse)


def calibration_images(
    folder: str | Path, info: dict[str, Any], size: int | None = 256, limit: int = 40
) -> list[np.ndarray]:
    """Up to `limit` images of `folder` (spread over it) as 1 x C x H x W float32 in the network's range.

    Each image's shorter side is scaled to `size` and the centre cropped to size x size (None: own size,
    cropped to the network's size multiple). Unreadable files are skipped; fewer than two images is an error.
    """
    listing = scan_images(folder)
    if not listing.files:
        raise no_images_error(listing)
    files = listing.files
    if len(files) > limit:  # spread the choice over the folder instead of taking its first (maybe similar) files
        files = [files[round(i * (len(files) - 1) / (limit - 1))] for i in range(limit)]
    multiple = int(info.get("size_multiple") or 1)
    if size is not None and size % multiple:
        raise TransganError(f"--calibrate-size {size}: {info['arch']} needs a multiple of {multiple}")
    norm = info.get("normalization") or {"mean": 0.5, "std": 0.5}
    images = []
    for path in files:
        try:
            image = load_image(path, info["input_nc"])
        except UnreadableImage:
            continue
        images.append(_to_network(_crop(image, size, multiple), float(norm["mean"]), float(norm["std"])))
    if len(images) < 2:
        raise TransganError(
            f"--calibrate {folder}: {len(images)} readable image(s); int8 calibration needs at least 2 "
            "(some to calibrate on, one held out to measure the PSNR)"
        )
    return images


def _crop(image: Image.Image, size: int | None, multiple: int) -> Image.Image:
    if size is not None:
        scale = size / min(image.size)
        image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), 3)
        width = height = size
    else:
        width, height = image.width - image.width % multiple, image.height - image.height % multiple
        if not width or not height:
            raise TransganError(f"an image of {image.width}x{image.height} is smaller than {multiple} pixels")
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def _to_network(image: Image.Image, mean: float, std: float) -> np.ndarray:
    pixels = np.asarray(image, dtype=np.float32) / 255
    pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1)[None])


def split_images(images: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(calibration, held out): every fifth image is held out (at least one), the rest calibrate."""
    held = [i for i in range(len(images)) if i % 5 == 4] or [len(images) - 1]
    return [image for i, image in enumerate(images) if i not in held], [images[i] for i in held]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice through the root logger and prints its calibration progress."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _session(model: str | Path | bytes, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _pixels(output: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    norm = info.get("normalization") or {"mean": 0.5, "std": 0.5}
    return np.clip(output * float(norm["std"]) + float(norm["mean"]), 0, 1)


def output_errors(session, images: list[np.ndarray], references: list[np.ndarray], info: dict) -> list[float]:
    """Mean squared error on pixels in [0, 1] of `session`'s output against `references`, one per image."""
    name = session.get_inputs()[0].name
    errors = []
    for image, reference in zip(images, references):
        output = session.run(None, {name: image})[0]
        errors.append(float(np.mean((_pixels(output, info) - reference) ** 2)))
    return errors


class _Feeds:
    """The calibration images as ONNX Runtime's CalibrationDataReader wants them."""

    def __init__(self, name: str, images: list[np.ndarray]):
        self.feeds = iter([{name: image} for image in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def _quantize(source: Path, target: Path, cache: Path, nodes: list[str] | None, reader: _Feeds | None = None) -> None:
    """QDQ with per-channel s8 weights and u8 activations for `nodes` (None: all candidates), ranges from `cache`."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    with _quiet():
        quantize_static(
            str(source),
            str(target),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(CANDIDATE_OPS),
            nodes_to_quantize=nodes,
            calibrate_method=CalibrationMethod.Percentile,
            calibration_cache_path=str(cache),
            extra_options={"CalibPercentile": PERCENTILE},
        )


def candidate_layers(proto: onnx.ModelProto, shape: tuple[int, ...]) -> list[tuple[str, str, list[int], int]]:
    """(name, op type, weight shape, multiply-adds per image at input `shape`) of each layer int8 could take."""
    weights = {init.name: list(init.dims) for init in proto.graph.initializer}
    spatial = _output_sizes(proto, shape)
    layers = []
    for node in proto.graph.node:
        if node.op_type not in CANDIDATE_OPS or len(node.input) < 2 or node.input[1] not in weights:
            continue
        weight = weights[node.input[1]]
        if node.op_type == "ConvTranspose":  # each input pixel scatters the whole kernel
            positions = spatial.get(node.input[0], 1)
        else:
            positions = spatial.get(node.output[0], 1)
        layers.append((node.name, node.op_type, weight, int(np.prod(weight)) * positions))
    return layers


def _output_sizes(proto: onnx.ModelProto, shape: tuple[int, ...]) -> dict[str, int]:
    """tensor name -> number of output positions (H*W for images) at input `shape`; empty where inference fails."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    del model.graph.value_info[:]  # symbolic sizes from the export would survive inference otherwise
    for dim, value in zip(model.graph.input[0].type.tensor_type.shape.dim, shape):
        dim.dim_value = value
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # an exotic graph: fall back to weight sizes alone
        return {}
    sizes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if len(dims) >= 3 and all(dims):
            sizes[value.name] = int(np.prod(dims[2:]))
    return sizes


def choose_layers(layers: list[LayerError], min_psnr: float, scale: float = 1.0) -> list[LayerError]:
    """Layers in order of work per unit of error, kept while the summed error (times `scale`, how much the
    errors were measured to compound) stays within `min_psnr` + margin."""
    budget = 10 ** (-(min_psnr + MARGIN_DB) / 10) / scale
    chosen, total = [], 0.0
    for layer in sorted(layers, key=lambda item: item.macs / max(item.mse, 1e-20), reverse=True):
        if total + layer.mse <= budget:
            chosen.append(layer)
            total += layer.mse
    return chosen


def _time_ms(sessions: list, image: np.ndarray, rounds: int = 3) -> list[float]:
    """Median ms per run of each session on `image`, interleaved round by round (the machine may be shared)."""
    name = sessions[0].get_inputs()[0].name
    times: list[list[float]] = [[] for _ in sessions]
    for session in sessions:
        session.run(None, {name: image})
    for _ in range(rounds):
        for session, record in zip(sessions, times):
            start = time.perf_counter()
            session.run(None, {name: image})
            record.append(time.perf_counter() - start)
    return [1000 * float(np.median(record)) for record in times]


def export_int8(
    model: str | Path | ModelFile,
    out_path: str | Path,
    calibrate: str | Path,
    direction: str | None = None,
    min_psnr: float = DEFAULT_MIN_PSNR,
    size: int | None = 256,
    max_images: int = 40,
    probe_images: int = 2,
    test_time: str | None = None,
    on_progress: Callable[[str], None] | None = None,
    opset: int = MIN_OPSET,
) -> Int8Report:
    """Write an int8 ONNX graph of `model`'s generator, calibrated on images from the folder `calibrate`.

    Candidate layers (convs, transposed convs, matrix products) are each measured alone on `probe_images`
    calibration images; those that cost the least error per unit of work saved go int8 while the summed
    error keeps the output above `min_psnr` dB against the fp32 graph, the rest stays fp32. The final PSNR is
    measured on held-out images (every fifth): below `min_psnr` the export stops with a TransganError and
    writes nothing (Int8Refused). The graph carries transgan metadata with precision 'int8' and the measured PSNR,
    so OnnxEngine runs it like any export; `opset` is the fp32 graph's (the quantizer keeps it). Translators only.
    """
    say = on_progress or (lambda line: None)
    min_psnr = check_min_psnr(min_psnr)
    if probe_images < 1:
        raise TransganError(f"probe_images {probe_images}: must be at least 1")
    listing = scan_images(calibrate)  # a folder mistake is reported before the slow export
    if not listing.files:
        raise no_images_error(listing)
    if len(listing.files) < 2:
        raise TransganError(f"--calibrate {calibrate}: one image; int8 needs at least 2 (one is held out to measure)")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="transgan-int8-") as work_dir:
        work = Path(work_dir)
        fp32 = export_onnx(model, work / "fp32.onnx", direction=direction, test_time=test_time, opset=opset)
        info = dict(fp32.metadata)
        if info["kind"] != "translator":
            raise TransganError(f"int8 export is for image translators; {info['arch']} is a {info['kind']}")
        images = calibration_images(calibrate, info, size, max_images)
        calibration, held_out = split_images(images)
        probes = calibration[:probe_images]
        reference = _session(fp32.path)
        name = reference.get_inputs()[0].name
        refs = {id(image): _pixels(reference.run(None, {name: image})[0], info) for image in images}

        def errors(session, subset: list[np.ndarray]) -> list[float]:
            return output_errors(session, subset, [refs[id(image)] for image in subset], info)

        # One calibration pass for every candidate (the ranges are cached), also giving the all-int8 graph.
        say(f"calibrating on {len(calibration)} images from {calibrate}")
        cache, everything = work / "ranges.json", work / "all.onnx"
        _quantize(fp32.path, everything, cache, None, _Feeds(name, calibration))
        all_int8 = psnr(float(np.mean(errors(_session(everything), held_out))))

        proto = onnx.load(str(fp32.path))
        layers = []
        candidates = candidate_layers(proto, probes[0].shape)
        if not candidates:
            raise TransganError(f"{info['arch']}: the graph has no layer int8 could run (convs, matrix products)")
        for index, (node, op_type, weight, macs) in enumerate(candidates, 1):
            say(f"measuring layer {index}/{len(candidates)} ({node})")
            _quantize(fp32.path, work / "one.onnx", cache, [node])
            error = float(np.mean(errors(_session(work / "one.onnx"), probes)))
            layers.append(LayerError(node, op_type, weight, macs, round(psnr(error), 2)))

        # Check the combination on more calibration images than the probes, image by image (the error varies a lot
        # between images, and unseen ones vary as much); where the worst image's error exceeds the summed errors
        # of the layers, shrink the error budget by that excess and choose again.
        verify = calibration[:: max(1, len(calibration) // VERIFY_IMAGES)][:VERIFY_IMAGES]
        target, scale = 10 ** (-(min_psnr + MARGIN_DB / 2) / 10), 1.0
        chosen = choose_layers(layers, min_psnr)
        for attempt in range(1, MAX_TRIES + 1):
            if not chosen:
                break
            say(f"checking {len(chosen)} int8 layers together on {len(verify)} calibration images")
            _quantize(fp32.path, work / "chosen.onnx", cache, [layer.name for layer in chosen])
            measured = max(errors(_session(work / "chosen.onnx"), verify))
            if measured <= target or attempt == MAX_TRIES:  # the last try goes to the held-out check as it is
                break
            scale *= max(measured / sum(layer.mse for layer in chosen), 1.05)
            chosen = choose_layers(layers, min_psnr, scale)
        if not chosen:
            best = max(layers, key=lambda layer: layer.psnr_db)
            raise Int8Refused(
                f"int8 export of {info['arch']}: no layer keeps the output above {min_psnr:g} dB against fp32 "
                f"(best single layer {best.name}: {best.psnr_db:.1f} dB); keep fp32, or lower --min-psnr"
            )
        session = _session(work / "chosen.onnx")
        held_errors = errors(session, held_out)
        result, worst = psnr(float(np.mean(held_errors))), psnr(max(held_errors))
        if result < min_psnr:
            raise Int8Refused(
                f"int8 export of {info['arch']}: {result:.1f} dB against fp32 on {len(held_out)} held-out images from "
                f"{calibrate}, below --min-psnr {min_psnr:g}; keep fp32, or lower --min-psnr to accept it"
            )
        fp32_ms, int8_ms = _time_ms([reference, session], held_out[0])

        quantized = [layer.name for layer in chosen]
        kept = [layer.name for layer in layers if layer.name not in quantized]
        info.update(precision="int8", int8_psnr_db=round(result, 2))
        info["int8"] = {
            "psnr_db": round(result, 2),
            "worst_image_psnr_db": round(worst, 2),
            "min_psnr_db": min_psnr,
            "all_layers_int8_psnr_db": round(all_int8, 2),
            "held_out_images": len(held_out),
            "calibration_images": len(calibration),
            "calibration_size": size,
            "calibration": f"percentile {PERCENTILE}, u8 activations, s8 per-channel weights (QDQ)",
            "quantized_layers": quantized,
            "fp32_layers": kept,
        }
        quantized_proto = onnx.load(str(work / "chosen.onnx"))
        set_metadata(quantized_proto, info)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        partial = out_path.with_name(f".{out_path.name}.partial")
        onnx.save(quantized_proto, str(partial))
        os.replace(partial, out_path)
    shape = tuple(held_out[0].shape[2:])
    return Int8Report(
        out_path, result, worst, all_int8, min_psnr, quantized, kept, layers, len(calibration), len(held_out),
        shape, fp32_ms, int8_ms, info,
    )  # fmt: skip
