"""Inference engines behind one interface: PyTorch eager and ONNX Runtime (TensorRT, CUDA or CPU)."""

from __future__ import annotations

import copy
import ctypes
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from transgan import __version__
from transgan.checkpoint import ModelFile
from transgan.errors import TransganError
from transgan.inference.compiled import open_compiled
from transgan.inference.torch_engine import PRECISIONS, Engine, TorchEngine
from transgan.models import cache_dir, model_digest, model_label, open_model
from transgan.nets.test_time import DEFAULT_SEED, check_mode

__all__ = ["PRECISIONS", "Engine", "TorchEngine", "OnnxEngine", "SizedEngine", "open_engine", "resolve_device"]

ENGINES = ("auto", "torch", "onnx", "tensorrt", "compiled")


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA device is usable, else 'mps' where torch reports Apple's Metal backend, else
    'cpu'; asking for a device that is not there is one clear line."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = mps is not None and mps.is_available()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TransganError(f"--device {device}: no CUDA device is available here; use --device auto or cpu")
    if device == "mps" and not has_mps:
        raise TransganError("--device mps: no Apple MPS device is available here (macOS on Apple silicon); use cpu")
    if device not in ("cpu", "mps") and not device.startswith("cuda"):
        raise TransganError(f"--device {device}: use auto, cpu, cuda, cuda:N or mps")
    return device


def _tensorrt_loadable() -> bool:
    """Whether the TensorRT runtime library loads: asking ORT for its EP without it prints a noisy error."""
    for name in ("libnvinfer.so.10", "libnvinfer.so"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    try:
        import tensorrt  # noqa: F401  (the pip wheel ships the library and loads it on import)

        return True
    except ImportError:
        return False


def onnx_providers(device: str, tensorrt: bool = False) -> list[Any]:
    """Execution providers to try for `device`, best first; GPU ones only where a CUDA device exists."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers: list[Any] = []
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        if tensorrt and "TensorrtExecutionProvider" in available and _tensorrt_loadable():
            cache = cache_dir() / "tensorrt"
            cache.mkdir(parents=True, exist_ok=True)
            options = {"device_id": index, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
            providers.append(("TensorrtExecutionProvider", options))
        if "CUDAExecutionProvider" in available:
            # HEURISTIC: cuDNN's exhaustive search costs ~0.4 s per new input shape (measured on an H100 for
            # resnet_9blocks at 256x256), paid again for every image size in a folder; steady state is equal.
            providers.append(("CUDAExecutionProvider", {"device_id": index, "cudnn_conv_algo_search": "HEURISTIC"}))
    providers.append("CPUExecutionProvider")
    return providers


class OnnxEngine(Engine):
    """ONNX Runtime: TensorRT/CUDA with IO binding on GPU, the CPU provider otherwise."""

    name = "onnx"

    def __init__(self, path: str | Path, device: str = "cpu", tensorrt: bool = False, threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        self.device = device
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: provider fallbacks are reported by us, once
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        # No spin-waiting between ops: on a small CPU spinning threads would take the cores that decode and
        # encode images next to the model.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        ort.set_default_logger_severity(3)
        wanted = onnx_providers(device, tensorrt)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=wanted)
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise TransganError(f"{self.path}: ONNX Runtime cannot load it ({first_line})") from error
        self.providers = self.session.get_providers()
        if device.startswith("cuda") and "CUDAExecutionProvider" not in self.providers:
            raise TransganError(
                f"--device {device}: ONNX Runtime's CUDA provider did not start (onnxruntime-gpu, CUDA and cuDNN "
                "versions must match); use --device cpu or --engine torch"
            )
        self.name = "tensorrt" if self.providers[0] == "TensorrtExecutionProvider" else "onnx"
        self.replans_per_shape = device.startswith("cuda")
        self.info = read_onnx_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.precision = self.info.get("precision", "fp32")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name

    def describe(self) -> str:
        return f"{self.name} ({self.providers[0]}) on {self.device} ({self.precision}{self._mode_note()})"

    def _feeds(self, batch: np.ndarray, labels: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {self.input_names[0]: np.ascontiguousarray(batch, dtype=np.float32)}
        if len(self.input_names) > 1:
            if labels is None:
                raise TransganError(f"{self.path}: this generator is class-conditional: pass class labels")
            feeds[self.input_names[1]] = np.ascontiguousarray(labels, dtype=np.int64)
        return feeds

    def run(self, batch: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        feeds = self._feeds(batch, labels)
        if not self.device.startswith("cuda"):
            return self.session.run([self.output_name], feeds)[0]
        # IO binding: inputs are copied to the GPU once and the output stays there until the single copy back.
        binding = self.session.io_binding()
        index = int(self.device.split(":")[1]) if ":" in self.device else 0
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        binding.bind_output(self.output_name, "cuda", index)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def run_tensor(self, batch: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """CUDA tensors in, CUDA tensor out, bound by pointer: no host copies at all (GPU only)."""
        if not self.device.startswith("cuda"):
            labels_np = None if labels is None else labels.cpu().numpy()
            return torch.from_numpy(self.run(batch.cpu().numpy(), labels_np))
        batch = batch.to(self.device, torch.float32).contiguous()
        binding = self.session.io_binding()
        index = batch.device.index or 0
        binding.bind_input(self.input_names[0], "cuda", index, np.float32, list(batch.shape), batch.data_ptr())
        if labels is not None and len(self.input_names) > 1:
            labels = labels.to(self.device, torch.int64).contiguous()
            binding.bind_input(self.input_names[1], "cuda", index, np.int64, list(labels.shape), labels.data_ptr())
        # The output goes straight into a torch tensor we allocate, so it never leaves the GPU.
        output = torch.empty(self._output_shape(batch.shape), dtype=torch.float32, device=batch.device)
        binding.bind_output(self.output_name, "cuda", index, np.float32, list(output.shape), output.data_ptr())
        self.session.run_with_iobinding(binding)
        return output

    def _output_shape(self, input_shape: torch.Size) -> tuple[int, ...]:
        if self.info["kind"] == "sampler":
            return (input_shape[0], self.info["output_nc"], self.info["image_size"], self.info["image_size"])
        return (input_shape[0], self.info["output_nc"], input_shape[2], input_shape[3])


def read_onnx_metadata(props: dict[str, str], source: Path | str) -> dict[str, Any]:
    """The transgan metadata written by `export_onnx`; a clear error for foreign ONNX files."""
    if "transgan" not in props:
        raise TransganError(f"{source}: an ONNX file without transgan metadata; export it with `transgan export`")
    return json.loads(props["transgan"])


class SizedEngine(Engine):
    """ONNX Runtime on a graph exported for one image size at batch 1; inputs of other sizes run on `fallback`.

    A static graph with the CPU rewrites exports in seconds where the dynamic one takes half a minute (measured on
    2 cores for resnet_9blocks, see transgan.export.onnx), so `--engine auto` can afford it for a folder's size.
    """

    def __init__(self, graph: OnnxEngine, size: tuple[int, int], fallback: Engine):
        self.graph, self.size, self.fallback = graph, tuple(size), fallback
        self.name, self.info, self.device, self.precision = graph.name, graph.info, graph.device, graph.precision

    def describe(self) -> str:
        height, width = self.size
        return f"{self.graph.describe()} for {height}x{width} images; other sizes: {self.fallback.describe()}"

    def run(self, batch: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
        if tuple(batch.shape[2:]) != self.size:
            return self.fallback.run(batch, labels)
        return np.concatenate([self.graph.run(batch[i : i + 1]) for i in range(len(batch))])

    def close(self) -> None:
        self.graph.close()
        self.fallback.close()


def exported_onnx_path(
    model: ModelFile,
    direction: str | None,
    for_cpu: bool = False,
    test_time: str | None = None,
    static_shape: tuple[int, int] | None = None,
) -> Path:
    """Where the cached export of `model` with these options lives (it may not exist yet)."""
    # The transgan version is part of the key: a newer exporter may write a better graph.
    digest = hashlib.sha256((model_digest(model) + __version__).encode()).hexdigest()[:16]
    flavour = ("-cpu" if for_cpu else "") + (f"-{test_time}" if test_time else "")
    flavour += f"-{static_shape[0]}x{static_shape[1]}b1" if static_shape else ""
    return cache_dir() / "onnx" / f"{model_label(model)}-{digest}-{direction or 'default'}{flavour}.onnx"


def exported_onnx(
    model: ModelFile,
    direction: str | None,
    for_cpu: bool = False,
    test_time: str | None = None,
    static_shape: tuple[int, int] | None = None,
) -> Path:
    """An ONNX export of `model`, cached by content so the slow export runs once per model and options.

    `for_cpu`: the graph rewritten for CPU runtimes (see transgan.export.fast); `test_time` ('reference' or 'eval',
    default the file's own) as in `export_onnx`; `static_shape` (H, W): a graph for that size at batch 1.
    """
    from transgan.export.onnx import export_onnx  # onnx is imported only where a graph is written

    cached = exported_onnx_path(model, direction, for_cpu, test_time, static_shape)
    if not cached.is_file():
        batch = 1 if static_shape else None
        export_onnx(model, cached, direction, for_cpu=for_cpu, test_time=test_time, static_shape=static_shape,
                    batch=batch)  # fmt: skip
    return cached


def torch_engine(
    model: ModelFile,
    device: str = "cpu",
    precision: str = "fp32",
    direction: str | None = None,
    test_time: str | None = None,
    compile: bool = False,
    seed: int | None = DEFAULT_SEED,
    for_cpu: bool = False,
    copy_net: bool = False,
) -> TorchEngine:
    """PyTorch eager on `model`'s generator; `for_cpu` runs a copy with the CPU rewrites (transgan.export.fast),
    `copy_net` a plain copy (engines that share one ModelFile must not change each other's network)."""
    net, direction = model.generator(direction)
    info = model.info(direction).as_dict()
    info["test_time"] = test_time or info["test_time"]
    if for_cpu:
        from transgan.export.fast import optimize_for_cpu  # torch only; loaded where a rewrite is asked for

        net, info["rewrites"] = optimize_for_cpu(net)
    elif copy_net:
        net = copy.deepcopy(net)
    # The rewritten convs reshape their input: in channels_last every reshape is a copy (measured 3x slower).
    return TorchEngine(net, info, device, precision, channels_last=not for_cpu, compile=compile, seed=seed)


def open_engine(
    model_spec: str | Path | ModelFile,
    engine: str = "auto",
    device: str = "auto",
    precision: str = "fp32",
    direction: str | None = None,
    compile: bool = False,
    threads: int = 0,
    test_time: str | None = None,
    seed: int | None = DEFAULT_SEED,
    int8: bool = False,
    calibrate: str | Path | None = None,
    min_psnr: float | None = None,
) -> Engine:
    """An engine for MODEL (run dir, .safetensors, pretrained name, a ModelFile or an exported .onnx file).

    engine 'auto' runs an .onnx file with ONNX Runtime and anything else with PyTorch; 'onnx' on a model
    file exports it first (cached). 'tensorrt' is ONNX Runtime with the TensorRT provider first (GPU).
    `test_time` ('reference' or 'eval') overrides the model file's own test-time mode; `seed` seeds the
    torch engine's test-time dropout (ONNX graphs have none). An .onnx file keeps the mode it was exported with.
    'compiled' is torch.compile (transgan.inference.compiled). `int8` (onnx, CPU): a model file is exported int8,
    calibrated on the folder `calibrate` and refused below `min_psnr` dB (transgan.export.int8, cached).
    `compile` (torch.compile of the eager engine) goes with 'torch' only.
    """
    if engine not in ENGINES:
        raise TransganError(f"--engine {engine}: use one of {', '.join(ENGINES)}")
    if test_time is not None:
        check_mode(test_time)
    device = resolve_device(device)
    is_onnx = not isinstance(model_spec, ModelFile) and Path(model_spec).suffix.lower() == ".onnx"
    if is_onnx and not Path(model_spec).is_file():
        raise TransganError(f"{model_spec}: no such file")
    if engine == "auto":
        engine = "onnx" if is_onnx else "torch"
    if compile and engine != "torch":
        raise TransganError(f"--compile goes with --engine torch, not {engine} (for torch.compile: --engine compiled)")
    if int8 and (engine != "onnx" or device != "cpu"):
        raise TransganError("--int8 runs with --engine onnx on --device cpu (ONNX Runtime's int8 CPU kernels)")
    if is_onnx and engine in ("torch", "compiled"):
        raise TransganError(f"{model_spec}: an ONNX file runs with --engine onnx, not {engine}")
    model = None if is_onnx else open_model(model_spec)  # the one lookup and read of a name, folder or file
    if engine == "torch":
        return torch_engine(model, device, precision, direction, test_time, compile, seed)
    if engine == "compiled":
        return open_compiled(model, device, precision, direction, test_time, seed=seed)
    if model is None:
        path = Path(model_spec)
    elif int8:
        from transgan.export.int8_cache import exported_int8
        from transgan.export.options import check_min_psnr

        if calibrate is None:
            raise TransganError("--int8 on a model file needs --calibrate DIR: images to calibrate and measure on")
        path = exported_int8(model, calibrate, direction, check_min_psnr(min_psnr), test_time)
    else:
        # On CPU the export carries the CPU rewrites (Winograd convs...); GPU providers get the plain graph.
        path = exported_onnx(model, direction, for_cpu=device == "cpu", test_time=test_time)
    result = OnnxEngine(path, device, tensorrt=engine == "tensorrt", threads=threads)
    if is_onnx and direction is not None and result.info.get("direction") not in (None, direction):
        raise TransganError(f"{model_spec} translates {result.info['direction']}, not {direction}")
    if is_onnx and test_time is not None and result.info.get("test_time", "eval") != test_time:
        raise TransganError(
            f"{model_spec} was exported in {result.info.get('test_time', 'eval')} test-time mode; export it again "
            f"with{'' if test_time == 'eval' else 'out'} --eval"
        )
    if int8 and result.precision != "int8":
        raise TransganError(f"{model_spec} is {result.precision}; write an int8 graph with `transgan export --int8`")
    if precision != "fp32" and result.precision != precision:
        raise TransganError(
            f"--precision {precision}: this ONNX file is {result.precision}; export one with "
            f"`transgan export MODEL OUT.onnx{' --fp16' if precision == 'fp16' else ''}`"
        )
    return result
