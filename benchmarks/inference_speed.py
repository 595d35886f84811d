"""Inference speed on this machine: model throughput per engine, and end-to-end folder translation vs a plain loop.

    python benchmarks/inference_speed.py [--images 50] [--bf16-timeout 120] [--device cpu] > speed.json

Needs ../shared/data (the 50 horses of horse2zebra/testA and the GAN Compression checkpoint). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import transgan
from transgan.convert import load_gan_compression_checkpoint
from transgan.export.onnx import export_onnx
from transgan.inference.bench import benchmark
from transgan.inference.engines import open_engine
from transgan.inference.pipeline import from_network, to_network, translate_folder
from transgan.nets import build_network

DATA = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def plain_loop(model: Path, images: list[Path], out: Path, device: str) -> dict:
    """The baseline: for each image decode, eager fp32 forward at batch 1, encode; nothing overlaps."""
    net = transgan.load(model, device=device)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for path in images:
        pixels = np.asarray(Image.open(path).convert("RGB"))[None]
        with torch.no_grad():
            output = net(torch.from_numpy(to_network(pixels, 0.5, 0.5)).to(device)).cpu().numpy()
        Image.fromarray(from_network(output, 0.5, 0.5)[0]).save(out / path.name)
    seconds = time.perf_counter() - start
    return {"images": len(images), "seconds": round(seconds, 2), "images_per_s": round(len(images) / seconds, 3)}


def bench_in_child(model: Path, precision: str, batch: int, timeout: float) -> dict:
    """One `transgan bench` configuration in a child process, given up after `timeout` seconds.

    torch bf16 on a CPU without AVX512-BF16/AMX is emulated and can take minutes per image.
    """
    command = ["transgan", "bench", str(model), "--engine", "torch", "--precision", precision, "--device", "cpu",
               "--batch-size", str(batch), "--iterations", "1", "--warmup", "0", "--json"]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"engine": f"torch on cpu ({precision})", "batch_size": batch,
                "skipped": f"one forward took more than {timeout:.0f} s (no native bf16 on this CPU)"}  # fmt: skip
    return json.loads(done.stdout)[0]


def pipeline(engine, folder: Path, out: Path, batch_size: int) -> dict:
    summary = translate_folder(engine, folder, out, batch_size=batch_size, overwrite=True)
    return {
        "engine": engine.describe(),
        "batch_size": batch_size,
        "images": summary.translated,
        "seconds": round(summary.seconds, 2),
        "images_per_s": round(summary.images_per_second, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50, help="how many of the 50 horses to translate")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16-timeout", type=float, default=120, help="give up on a torch bf16 run after S seconds")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="transgan-bench-"))
    os.environ.setdefault("TRANSGAN_CACHE", str(work / "cache"))
    horses = sorted((DATA / "horse2zebra" / "testA").glob("*.png"))[: args.images]
    folder = work / "horses"
    folder.mkdir()
    for path in horses:
        shutil.copy(path, folder / path.name)

    torch.manual_seed(0)  # random init is fine for speed: the work per image does not depend on the weights
    full = transgan.save(build_network("resnet_9blocks", ngf=64), work / "resnet_9blocks.safetensors",
                         task="cyclegan", directions={"AtoB": "G"})  # fmt: skip
    checkpoint = DATA / "gan_compression_horse2zebra" / "latest_net_G.pth"
    mobile_net = load_gan_compression_checkpoint(checkpoint, channels="16_16_32_16_32_32_16_16")
    mobile = transgan.save(mobile_net, work / "mobile_resnet.safetensors", task="cyclegan", directions={"AtoB": "G"})
    full_onnx = export_onnx(full, work / "resnet_9blocks.onnx").path
    mobile_onnx = export_onnx(mobile, work / "mobile_resnet.onnx").path

    results: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "note": "shared machine: other jobs ran at the same time, figures are indicative",
        },
        "model_256x256": [],
    }
    for engine_name, model in [("torch", full), ("onnx", full_onnx)]:
        engine = open_engine(model, engine=engine_name, device=args.device)
        for batch in (1, 8):
            row = benchmark(engine, batch, (256, 256), warmup=1, iterations=3 if batch == 1 else 1)
            results["model_256x256"].append({"model": "resnet_9blocks ngf64", **row})
    for batch in (1, 8):
        row = bench_in_child(full, "bf16", batch, args.bf16_timeout)
        results["model_256x256"].append({"model": "resnet_9blocks ngf64", **row})
    mobile_engine = open_engine(mobile_onnx, device=args.device)
    for batch in (1, 8):
        row = benchmark(mobile_engine, batch, (256, 256), warmup=1, iterations=5)
        results["model_256x256"].append({"model": "mobile_resnet (GAN Compression)", **row})

    loop_full = plain_loop(full, horses, work / "loop_full", args.device)
    loop_mobile = plain_loop(mobile, horses, work / "loop_mobile", args.device)
    full_engine = open_engine(full_onnx, device=args.device)
    e2e_full = pipeline(full_engine, folder, work / "out_full", batch_size=1)
    e2e_mobile = pipeline(mobile_engine, folder, work / "out_mobile", batch_size=1)
    results["end_to_end_50_horses"] = {
        "plain_loop_resnet_9blocks": loop_full,
        "plain_loop_mobile_resnet": loop_mobile,
        "pipeline_resnet_9blocks": e2e_full,
        "pipeline_mobile_resnet": e2e_mobile,
        "speedup_full_vs_plain_loop": round(e2e_full["images_per_s"] / loop_full["images_per_s"], 2),
        "speedup_mobile_vs_full_pipeline": round(e2e_mobile["images_per_s"] / e2e_full["images_per_s"], 2),
        "targets": {"speedup_full_vs_plain_loop": 1.5, "speedup_mobile_vs_full_pipeline": 10},
    }
    print(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
