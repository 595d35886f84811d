"""Export a transgan generator to ONNX (dynamic batch/height/width, metadata, optional fp16) and check parity."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from transgan import __version__
from transgan.checkpoint import ModelFile
from transgan.errors import TransganError
from transgan.export.fast import optimize_for_cpu
from transgan.export.fp16 import convert_to_fp16
from transgan.models import open_model
from transgan.nets.test_time import check_mode, describe
from transgan.nets.test_time import test_time as at_test_time

# The torch.export-based exporter (dynamo=True) writes opset 18 natively; it cannot go lower (no Pad adapter).
MIN_OPSET = 18
METADATA_KEY = "transgan"  # the full metadata as JSON; the other metadata_props are readable copies
FP32_TOLERANCE = 1e-4  # max abs difference on outputs in [-1, 1]
# fp16 weights and activations round at 2**-11 relative; over ~20 layers this measured up to ~6e-3 on
# resnet_9blocks and mobile_resnet at 256x256 (outputs in [-1, 1], i.e. < 1/255 in 8-bit pixels).
FP16_TOLERANCE = 2e-2


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how close ONNX Runtime came to PyTorch."""

    path: Path
    opset: int
    precision: str
    dynamic: list[str]
    inputs: list[str]
    max_abs_diff: float
    tolerance: float
    metadata: dict[str, Any]

    def summary(self) -> str:
        shape = "dynamic " + "/".join(self.dynamic) if self.dynamic else "static shape"
        mode = self.metadata.get("test_time_note")
        graph = "CPU rewrites (--for-gpu: plain graph)" if self.metadata.get("rewrites") else "plain graph"
        return (
            f"wrote {self.path} (opset {self.opset}, {self.precision}, {shape}, {graph}"
            f"{', ' + mode if mode else ''}); "
            f"ONNX Runtime vs PyTorch max abs diff {self.max_abs_diff:.2e} (tolerance {self.tolerance:.0e})"
        )


class SamplerGraph(nn.Module):
    """(noise, class) -> images for a conditional sampler, noise -> images for an unconditional one."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(noise, labels)


def _translator_sample(net: nn.Module, info: dict[str, Any], static_shape: tuple[int, int] | None, batch: int | None):
    multiple = info["size_multiple"]
    if static_shape is not None:
        height, width = static_shape
        if height % multiple or width % multiple:
            raise TransganError(f"--static-shape {height}x{width}: {info['arch']} needs multiples of {multiple}")
    else:
        # Unequal sides and batch 2 keep torch.export from tying H to W or specialising batch 1.
        height = multiple * math.ceil(64 / multiple)
        width = height + multiple
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch or 2, info["input_nc"], height, width, generator=generator) * 2 - 1
    dims = {} if batch else {0: torch.export.Dim.DYNAMIC}
    if static_shape is None:
        dims.update({2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC})
    names = [{0: "batch", 2: "height", 3: "width"}[axis] for axis in dims]
    return (x,), ["input"], ({**dims},), names


def _sampler_sample(info: dict[str, Any], batch: int | None):
    generator = torch.Generator().manual_seed(0)
    n = batch or 2
    noise = torch.randn(n, info["latent_dim"], generator=generator)
    dims = {} if batch else {0: torch.export.Dim.DYNAMIC}
    if info["num_classes"]:
        labels = torch.arange(n) % info["num_classes"]
        return (noise, labels), ["noise", "class"], (dims, dims), ["batch"] if dims else []
    return (noise,), ["noise"], (dims,), ["batch"] if dims else []


def _torch_export(module: nn.Module, inputs: tuple, names: list[str], dynamic_shapes: tuple, opset: int):
    # The exporter logs its progress and deprecation notes through warnings and logging: keep the CLI quiet.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                inputs,
                dynamo=True,
                opset_version=opset,
                input_names=names,
                output_names=["output"],
                dynamic_shapes=dynamic_shapes if any(dynamic_shapes) else None,
                optimize=True,
                verbose=False,
                report=False,
            )
        except Exception as error:  # torch.export raises many types; the first line says what failed
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise TransganError(f"ONNX export of {type(module).__name__} failed: {first_line}") from error
    return program.model_proto


def set_metadata(proto: onnx.ModelProto, info: dict[str, Any]) -> None:
    """The full metadata as JSON under 'transgan', plus one readable entry per plain field."""
    del proto.metadata_props[:]
    entries = {METADATA_KEY: json.dumps(info)}
    entries.update({key: str(value) for key, value in info.items() if isinstance(value, (str, int, float))})
    entries["normalization"] = json.dumps(info["normalization"])
    entries["class_names"] = json.dumps(info["class_names"])
    onnx.helper.set_model_props(proto, entries)
    proto.producer_name, proto.producer_version = "transgan", __version__


def onnx_parity(proto: onnx.ModelProto, module: nn.Module, inputs: tuple, names: list[str]) -> float:
    """Max abs difference between ONNX Runtime (CPU) and PyTorch on `inputs`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {name: value.numpy() for name, value in zip(names, inputs)}
    (ours,) = session.run(None, feeds)
    with torch.no_grad():
        expected = module(*inputs).float().numpy()
    if ours.shape != expected.shape:
        raise TransganError(f"ONNX output shape {ours.shape} differs from PyTorch's {expected.shape}")
    return float(np.abs(ours.astype(np.float32) - expected).max())


def export_onnx(
    model: str | Path | ModelFile | nn.Module,
    out_path: str | Path,
    direction: str | None = None,
    fp16: bool = False,
    opset: int = MIN_OPSET,
    static_shape: tuple[int, int] | None = None,
    batch: int | None = None,
    tolerance: float | None = None,
    for_cpu: bool = False,
    test_time: str | None = None,
) -> ExportReport:
    """Export the generator of `model` (run dir, model file, pretrained name, ModelFile or built network).

    Height, width and batch are dynamic unless `static_shape` (H, W) or `batch` fix them. After writing,
    ONNX Runtime runs a sample and the result must match PyTorch within `tolerance`, else TransganError.
    `for_cpu` writes the graph rewritten for CPU runtimes (Winograd 3x3 convs, see export/fast.py); GPU
    runtimes do better with the plain graph. Parity is always checked against the original network.
    `test_time` ('reference' or 'eval', default: the model file's own) is how the graph normalises: in
    'reference' mode batch norm uses each image's own statistics (exported as InstanceNormalization with
    the batch norm's scale and shift); test-time dropout is left out of the graph either way, and the
    metadata says so ('test_time_note').
    """
    if opset < MIN_OPSET:
        raise TransganError(f"--opset {opset}: transgan exports with opset {MIN_OPSET} or newer")
    if batch is not None and batch < 1:
        raise TransganError(f"--batch {batch}: must be at least 1")
    if for_cpu and fp16:
        raise TransganError("--for-cpu and --fp16 do not go together: CPUs run the rewritten graph in fp32")
    if isinstance(model, nn.Module):
        model = ModelFile.from_networks({"G": model})
    elif not isinstance(model, ModelFile):
        model = open_model(model)
    net, direction = model.generator(direction)
    generator_info = model.info(direction)
    mode = check_mode(test_time or generator_info.test_time)
    info = {**generator_info.as_dict(), "test_time": mode}
    note = describe(net, mode, dropout=False)
    if note:
        info["test_time_note"] = note
    with at_test_time(net.float(), mode, dropout=False):
        return _export(net, info, out_path, fp16, opset, static_shape, batch, tolerance, for_cpu)


def _export(
    net: nn.Module,
    info: dict[str, Any],
    out_path: str | Path,
    fp16: bool,
    opset: int,
    static_shape: tuple[int, int] | None,
    batch: int | None,
    tolerance: float | None,
    for_cpu: bool,
) -> ExportReport:
    if info["kind"] == "translator":
        module = net
        inputs, names, dynamic_shapes, dynamic = _translator_sample(net, info, static_shape, batch)
    else:
        if static_shape is not None:
            raise TransganError(f"--static-shape: {info['arch']} makes {info['image_size']}px images from noise")
        module = SamplerGraph(net).eval()
        inputs, names, dynamic_shapes, dynamic = _sampler_sample(info, batch)
    exported, info["rewrites"] = optimize_for_cpu(module) if for_cpu else (module, [])
    proto = _torch_export(exported, inputs, names, dynamic_shapes, opset)
    if fp16:
        proto = convert_to_fp16(proto)
    info["precision"] = "fp16" if fp16 else "fp32"
    info["inputs"] = names
    set_metadata(proto, info)

    tolerance = tolerance if tolerance is not None else (FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
    diff = onnx_parity(proto, module, inputs, names)
    if not diff <= tolerance:  # also catches NaN
        raise TransganError(
            f"ONNX export of {info['arch']} does not match PyTorch: max abs diff {diff:.3g} > tolerance {tolerance:g}"
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename, so an interrupted export never leaves a truncated file under the final name.
    partial = out_path.with_name(f".{out_path.name}.partial")
    onnx.save(proto, str(partial))
    os.replace(partial, out_path)
    return ExportReport(out_path, opset, info["precision"], dynamic, names, diff, tolerance, info)
