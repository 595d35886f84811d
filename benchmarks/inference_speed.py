"""Inference speed: model-only rows per engine and end-to-end translation of 50 horses vs a plain loop; prints JSON.

    python benchmarks/inference_speed.py > speed.json                      # CPU, data from ../shared/data
    python benchmarks/inference_speed.py --device cuda --horses DIR --checkpoint PTH   # GPU
    python benchmarks/inference_speed.py --json-out results/inference_cpu.json           # JSON to a file too

resnet_9blocks (ngf 64) is random-initialised: the work per image does not depend on the weights. The compressed
model is the real GAN Compression horse2zebra checkpoint. Without the horses folder, 50 synthetic 256x256 images
are used (noted in the JSON); without the checkpoint, the mobile_resnet rows are left out (noted too).
Variants are interleaved round by round and medians reported, because the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import transgan
from transgan.errors import TransganError
from transgan.export.onnx import export_onnx
from transgan.inference.engines import open_engine
from transgan.inference.pipeline import from_network, to_network, translate_folder
from transgan.nets import build_network

DATA = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FULL, MOBILE = "resnet_9blocks ngf64", "mobile_resnet (GAN Compression horse2zebra)"


def plain_loop(model: Path, images: list[Path], out: Path, device: str) -> float:
    """The baseline, written plainly: for each image decode, eager fp32 forward at batch 1, encode. Seconds."""
    net = transgan.load(model, device=device).eval()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for path in images:
        pixels = np.asarray(Image.open(path).convert("RGB"))[None]
        with torch.no_grad():
            output = net(torch.from_numpy(to_network(pixels, 0.5, 0.5)).to(device)).cpu().numpy()
        Image.fromarray(from_network(output, 0.5, 0.5)[0]).save(out / path.name)
    return time.perf_counter() - start


def pipeline_seconds(engine, folder: Path, out: Path, batch_size: int) -> float:
    summary = translate_folder(engine, folder, out, batch_size=batch_size, overwrite=True)
    return summary.seconds


def time_once(engine, batch: np.ndarray) -> float:
    start = time.perf_counter()
    engine.run(batch)
    if str(engine.device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def model_rows(variants: dict, batches: list[int], rounds: int) -> list[dict]:
    """Each (variant, batch) once per round, rounds interleaved; median latency and images/s."""
    times: dict[tuple[str, int], list[float]] = {}
    inputs = {b: np.random.default_rng(0).uniform(-1, 1, (b, 3, 256, 256)).astype(np.float32) for b in batches}
    # One batch size at a time: a session that sees a new input shape re-plans its kernels (cuDNN algorithm
    # search, TensorRT engines), so alternating shapes would time the planning, not the model.
    for b in batches:
        for engine in variants.values():
            time_once(engine, inputs[b])  # warm-up: allocation, autotuning, TensorRT/cuDNN plans
        for _ in range(rounds):
            for key, engine in variants.items():
                times.setdefault((key, b), []).append(time_once(engine, inputs[b]))
    rows = []
    for (key, b), seconds in times.items():
        median = statistics.median(seconds)
        rows.append({"variant": key, "engine": variants[key].describe(), "batch_size": b,
                     "latency_median_ms": round(median * 1000, 2), "images_per_s": round(b / median, 3),
                     "runs": len(seconds)})  # fmt: skip
    return rows


def bf16_in_child(model: Path, batch: int, timeout: float) -> dict:
    """torch bf16 autocast on CPU in a child process, given up after `timeout` s (emulated without AVX512-BF16)."""
    command = [sys.executable, "-m", "transgan", "bench", str(model), "--engine", "torch", "--precision", "bf16",
               "--device", "cpu", "--batch-size", str(batch), "--iterations", "1", "--warmup", "0",
               "--json"]  # fmt: skip
    row = {"variant": f"{FULL} torch bf16 autocast", "batch_size": batch}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {**row, "skipped": f"one forward took more than {timeout:.0f} s (no native bf16 on this CPU)"}
    except subprocess.CalledProcessError as error:
        return {**row, "skipped": (error.stderr.strip().splitlines() or ["failed"])[-1]}
    result = json.loads(done.stdout)[0]
    return {**row, "engine": result["engine"], "latency_median_ms": result["latency_p50_ms"],
            "images_per_s": result["images_per_s"], "runs": 1}  # fmt: skip


def try_engine(notes: list[str], label: str, *args, **kwargs):
    """open_engine, or None with a note saying why (e.g. no onnxruntime-gpu, no TensorRT on this machine)."""
    try:
        return open_engine(*args, **kwargs)
    except (TransganError, ImportError) as error:
        notes.append(f"{label}: not measured ({str(error).splitlines()[0]})")
        return None


def gpu_onnx_variants(full: Path, mobile: Path | None, work: Path, device: str, full_v: dict, mobile_v: dict,
                      notes: list[str]) -> None:  # fmt: skip
    """ONNX Runtime CUDA (fp32, fp16) and TensorRT (fp16 only: each new shape builds an engine, minutes each)."""
    try:
        files = {tag: export_onnx(full, work / f"full_{tag}.onnx", fp16=tag == "fp16").path for tag in ("fp32", "fp16")}
        mobile_file = export_onnx(mobile, work / "mobile_fp16.onnx", fp16=True).path if mobile else None
    except (TransganError, ImportError) as error:
        notes.append(f"ONNX rows not measured: export failed ({str(error).splitlines()[0]})")
        return
    for tag, kind in (("fp32", "onnx"), ("fp16", "onnx"), ("fp16", "tensorrt")):
        engine = try_engine(notes, f"{FULL} {kind} {tag}", files[tag], engine=kind, device=device)
        if engine is not None and kind == "tensorrt" and engine.name != "tensorrt":
            notes.append(f"{FULL} tensorrt {tag}: TensorRT provider not available here (ORT fell back to CUDA)")
        elif engine is not None:
            full_v[f"onnxruntime {engine.describe()}"] = engine
    if mobile_file is not None:
        engine = try_engine(notes, f"{MOBILE} onnx fp16", mobile_file, engine="onnx", device=device)
        if engine is not None:
            mobile_v[f"onnxruntime {engine.describe()}"] = engine


def input_folder(horses: Path, count: int, work: Path, notes: list[str]) -> list[Path]:
    folder = work / "horses"
    folder.mkdir()
    found = sorted(horses.glob("*.png"))[:count] if horses.is_dir() else []
    if found:
        for path in found:
            shutil.copy(path, folder / path.name)
    else:
        notes.append(f"{horses}: not found; end-to-end rows use {count} synthetic 256x256 PNGs instead")
        rng = np.random.default_rng(0)
        for i in range(count):  # smooth noise: compresses like a photo, not like white noise
            small = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(small).resize((256, 256), Image.Resampling.BICUBIC).save(folder / f"synthetic_{i:03d}.png")
    return sorted(folder.glob("*.png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horses", type=Path, default=DATA / "horse2zebra" / "testA", help="folder of input PNGs")
    parser.add_argument("--checkpoint", type=Path, default=DATA / "gan_compression_horse2zebra" / "latest_net_G.pth")
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds for the model-only rows")
    parser.add_argument("--e2e-rounds", type=int, default=5, help="the images are split into this many rounds")
    parser.add_argument("--bf16-timeout", type=float, default=120)
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="model-only batch sizes (cpu: 1 8)")
    parser.add_argument("--ngf", type=int, default=64, help="resnet_9blocks width (64: the real one)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    batches = args.batch or ([1, 8, 16] if cuda else [1, 8])
    global FULL
    FULL = f"resnet_9blocks ngf{args.ngf}"

    work = Path(tempfile.mkdtemp(prefix="transgan-bench-"))
    os.environ.setdefault("TRANSGAN_CACHE", str(work / "cache"))
    notes: list[str] = ["figures are medians of interleaved rounds; other jobs may share the machine"]
    images = input_folder(args.horses, args.images, work, notes)
    torch.manual_seed(0)
    full = transgan.save(build_network("resnet_9blocks", ngf=args.ngf), work / "resnet_9blocks.safetensors",
                         task="cyclegan", directions={"AtoB": "G"})  # fmt: skip
    mobile = None
    if args.checkpoint.is_file():
        from transgan.convert import load_gan_compression_checkpoint

        net = load_gan_compression_checkpoint(args.checkpoint, channels="16_16_32_16_32_32_16_16")
        mobile = transgan.save(net, work / "mobile_resnet.safetensors", task="cyclegan", directions={"AtoB": "G"})
    else:
        notes.append(f"{args.checkpoint}: not found; mobile_resnet rows left out")

    # Model-only variants. CPU: the ONNX file with CPU rewrites is what `--engine onnx --device cpu` runs.
    full_v: dict = {"torch eager fp32": open_engine(full, engine="torch", device=args.device)}
    mobile_v: dict = {}
    if cuda:
        full_v["torch fp16 autocast"] = open_engine(full, engine="torch", device=args.device, precision="fp16")
        gpu_onnx_variants(full, mobile, work, args.device, full_v, mobile_v, notes)
    else:
        full_v["onnxruntime fp32 plain graph"] = open_engine(export_onnx(full, work / "full.onnx").path, device="cpu")
        full_v["onnxruntime fp32 CPU rewrites"] = open_engine(full, engine="onnx", device="cpu")
        if mobile:
            mobile_v["torch eager fp32"] = open_engine(mobile, engine="torch", device="cpu")
            mobile_v["onnxruntime fp32 CPU rewrites"] = open_engine(mobile, engine="onnx", device="cpu")

    rows = model_rows({f"{FULL} {k}": v for k, v in full_v.items()}, batches, args.rounds)
    if not cuda:
        rows += [bf16_in_child(full, b, args.bf16_timeout) for b in batches]
    rows += model_rows({f"{MOBILE} {k}": v for k, v in mobile_v.items()}, batches, max(args.rounds, 5))

    # End to end: the pipeline runs the best engine per device (measured above: ORT with CPU rewrites on CPU).
    def best(variants: dict, prefix: str):
        mine = [r for r in rows if r["variant"].startswith(prefix) and "images_per_s" in r]
        top = max(mine, key=lambda r: r["images_per_s"])
        return variants[top["variant"][len(prefix) + 1 :]], top["batch_size"]

    full_engine, full_batch = best(full_v, FULL)
    e2e = {"plain_loop_resnet_9blocks": [], "pipeline_resnet_9blocks": [], "pipeline_mobile_resnet": []}
    chunks = [images[i :: args.e2e_rounds] for i in range(args.e2e_rounds)]
    mobile_engine, mobile_batch = best(mobile_v, MOBILE) if mobile else (None, 1)
    for i, chunk in enumerate(chunks):
        folder = work / f"chunk{i}"
        folder.mkdir()
        for path in chunk:
            shutil.copy(path, folder / path.name)
        e2e["plain_loop_resnet_9blocks"].append(plain_loop(full, chunk, work / "loop", args.device) / len(chunk))
        seconds = pipeline_seconds(full_engine, folder, work / "out_full", min(full_batch, len(chunk)))
        e2e["pipeline_resnet_9blocks"].append(seconds / len(chunk))
        if mobile_engine is not None:
            seconds = pipeline_seconds(mobile_engine, folder, work / "out_mobile", min(mobile_batch, len(chunk)))
            e2e["pipeline_mobile_resnet"].append(seconds / len(chunk))
    rate = {k: round(1 / statistics.median(v), 3) for k, v in e2e.items() if v}
    summary = {
        "images": len(images),
        "rounds": args.e2e_rounds,
        "images_per_s": rate,
        "pipeline_resnet_9blocks_engine": f"{full_engine.describe()}, batch {full_batch}",
        "speedup_full_pipeline_vs_plain_loop": round(
            rate["pipeline_resnet_9blocks"] / rate["plain_loop_resnet_9blocks"], 2),
        "targets": {"speedup_full_pipeline_vs_plain_loop": 1.5, "speedup_mobile_vs_full": 10},
    }  # fmt: skip
    if mobile_engine is not None:
        summary["pipeline_mobile_resnet_engine"] = f"{mobile_engine.describe()}, batch {mobile_batch}"
        summary["speedup_mobile_pipeline_vs_full_pipeline"] = round(
            rate["pipeline_mobile_resnet"] / rate["pipeline_resnet_9blocks"], 2
        )
        summary["speedup_mobile_pipeline_vs_full_plain_loop"] = round(
            rate["pipeline_mobile_resnet"] / rate["plain_loop_resnet_9blocks"], 2
        )
    results = {
        "machine": {
            "device": torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine()),
            "cpu_cores": os.cpu_count(),
            "torch": torch.__version__,
            "onnxruntime": _ort_version(),
        },
        "notes": notes,
        "model_256x256": rows,
        "end_to_end": summary,
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text)
    shutil.rmtree(work, ignore_errors=True)


def _ort_version() -> str:
    try:
        import onnxruntime

        return f"{onnxruntime.__version__} ({', '.join(onnxruntime.get_available_providers())})"
    except ImportError:
        return "not installed"


if __name__ == "__main__":
    main()
