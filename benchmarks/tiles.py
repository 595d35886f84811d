"""Tiled vs whole-image translation of a large mosaic of real horse photos: difference, peak memory, speed.

Each run is its own subprocess, so its peak resident memory (getrusage maxrss) is its own. Writes the JSON to
--out and the amplified difference images (and the mosaic) next to it.

    python benchmarks/tiles.py --out results/tiles.json [--size 2048] [--tile 512] [--big 6000x4000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HORSES = Path(__file__).resolve().parents[2] / "shared" / "data" / "horse2zebra" / "testA"


def mosaic(height: int, width: int, cell: int = 256) -> np.ndarray:
    """H x W x 3 uint8 of horse photos side by side (cycling through testA in name order)."""
    photos = sorted(HORSES.glob("*.png"))
    if not photos:
        raise SystemExit(f"no horse photos under {HORSES}")
    canvas = np.zeros((height, width, 3), np.uint8)
    index = 0
    for y in range(0, height, cell):
        for x in range(0, width, cell):
            photo = Image.open(photos[index % len(photos)]).convert("RGB").resize((cell, cell))
            canvas[y : y + cell, x : x + cell] = np.asarray(photo)[: height - y, : width - x]
            index += 1
    return canvas


def child(args: argparse.Namespace) -> None:
    """One translation in this process: prints seconds and peak memory; writes the float output as .npy."""
    import torch

    torch.set_num_threads(args.threads)
    from transgan.inference.pipeline import pad_to_multiple, to_network
    from transgan.inference.tiles import open_translator

    engine = open_translator(args.model, args.tile or None, args.max_memory, engine="torch", device="cpu")
    pixels = np.asarray(Image.open(args.image).convert("RGB"))
    batch = to_network(pad_to_multiple(pixels, int(engine.info["size_multiple"]))[None], 0.5, 0.5)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    output = engine.run(batch)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    loaded, peak = before.ru_maxrss * 1024, after.ru_maxrss * 1024
    # CPU time of this process: on a machine shared with other work it varies far less than wall time.
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if args.save:
        np.save(args.save, output[0, :, : pixels.shape[0], : pixels.shape[1]])
    how = getattr(engine, "last", None)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss": peak, "rss_before_run": loaded,
                      "strategy": how.describe() if how else "whole image"}))  # fmt: skip


def measure(model: str, image: Path, tile: int, threads: int, save: Path | None, max_memory: str | None) -> dict:
    command = [sys.executable, __file__, "--child", "--model", model, "--image", str(image), "--tile", str(tile),
               "--threads", str(threads)]  # fmt: skip
    command += ["--save", str(save)] if save else []
    command += ["--max-memory", max_memory] if max_memory else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model} on {image.name}: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    megapixels = Image.open(image).width * Image.open(image).height / 1e6
    result["seconds_per_megapixel"] = result["seconds"] / megapixels
    result["cpu_seconds_per_megapixel"] = result["cpu_seconds"] / megapixels
    return result


def compare(whole: np.ndarray, tiled: np.ndarray, tile_in_output: int, picture: Path) -> dict:
    """Differences on the [0, 1] image scale, a seam check along tile borders, and an amplified picture."""
    diff = np.abs(whole - tiled).max(axis=0) / 2  # network range [-1, 1] -> [0, 1]
    height, width = diff.shape
    border = np.zeros_like(diff, bool)
    for edge in range(tile_in_output, height, tile_in_output):
        border[edge - 1 : edge + 1] = True
    for edge in range(tile_in_output, width, tile_in_output):
        border[:, edge - 1 : edge + 1] = True
    # Stretched so the largest difference is white: tile borders would show as a grid of lines.
    amplification = 1 / diff.max() if diff.max() > 0 else 1.0
    Image.fromarray(np.clip(diff * amplification * 255, 0, 255).astype(np.uint8)).save(picture)
    inside = diff[~border].mean() if (~border).any() else 0.0
    return {
        "mean_abs_diff_255": float(diff.mean() * 255),
        "max_abs_diff_255": float(diff.max() * 255),
        # A seam would show as larger differences on the tile borders than elsewhere: this ratio would be >> 1.
        "border_to_inside_mean_ratio": float(diff[border].mean() / inside) if border.any() and inside else 0.0,
        "difference_image": picture.name,
        "difference_image_amplification": float(amplification),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where the JSON goes; pictures are written next to it")
    parser.add_argument("--size", type=int, default=2048, help="side of the square mosaic")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--big", default="6000x4000", help="WxH translated with --tile only ('' to skip)")
    parser.add_argument("--big-max-memory", default="2GB", help="--max-memory for the big image")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--models", default="", help="comma-separated subset of horse2zebra-mobile,resnet_9blocks_ngf64"
    )
    parser.add_argument(
        "--all-runs", action="store_true", help="also tiles in memory and a half-size run for the ResNet"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.out is None:
        parser.error("--out PATH is required")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import torch

    from transgan import save
    from transgan.nets import build_network

    results: dict = {"size": args.size, "tile": args.tile, "threads": args.threads, "cpu": _cpu_name()}
    with tempfile.TemporaryDirectory(prefix="transgan-tiles-bench-") as scratch:
        scratch = Path(scratch)
        image = args.out.parent / f"tiles_mosaic_{args.size}.png"
        Image.fromarray(mosaic(args.size, args.size)).save(image)
        torch.manual_seed(0)  # a full-width ResNet-9 (ngf 64), random weights: its activations are what count
        resnet = save(build_network("resnet_9blocks", ngf=64), scratch / "resnet9.safetensors", task="cyclegan")
        models = {"horse2zebra-mobile": "horse2zebra-mobile", "resnet_9blocks_ngf64": str(resnet)}
        for name, model in models.items():
            if args.models and name not in args.models.split(","):
                continue
            row, quick = {}, name == "horse2zebra-mobile" or args.all_runs  # the ResNet takes minutes per run
            row["plan"] = planned_work(model, args.size, args.tile)
            row["whole"] = measure(model, image, 0, args.threads, scratch / "whole.npy", None)
            # A budget that holds one tile's working set but not the stored activations: those go to files.
            budget = f"{_tile_working_set(model, args.size, args.tile) + 2**24}"
            row["tiled_activations_in_files"] = measure(model, image, args.tile, args.threads, scratch / "tiled.npy",
                                                        budget)  # fmt: skip
            if quick:
                row["tiled"] = measure(model, image, args.tile, args.threads, None, None)
                small = scratch / "small.png"
                Image.open(image).crop((0, 0, args.size // 2, args.size // 2)).save(small)
                row["whole_half_size"] = measure(model, small, 0, args.threads, None, None)
            whole, tiled = np.load(scratch / "whole.npy"), np.load(scratch / "tiled.npy")
            row.update(compare(whole, tiled, args.tile, args.out.parent / f"tiles_diff_{name}.png"))
            for key in ("tiled", "tiled_activations_in_files"):
                if key in row:
                    row[key]["peak_rss_ratio_to_whole"] = row[key]["peak_rss"] / row["whole"]["peak_rss"]
            results[name] = row
            print(json.dumps({name: row}), file=sys.stderr)
        if args.big and "horse2zebra-mobile" in results:
            width, height = (int(v) for v in args.big.lower().split("x"))
            big = scratch / "big.png"
            Image.fromarray(mosaic(height, width)).save(big)
            row = measure("horse2zebra-mobile", big, args.tile, args.threads, None, args.big_max_memory)
            # The whole image is not run here: its need is extrapolated from the two measured whole runs.
            small, large = results["horse2zebra-mobile"]["whole_half_size"], results["horse2zebra-mobile"]["whole"]
            per_pixel = (large["peak_rss"] - small["peak_rss"]) / (args.size**2 * 3 / 4)
            row["whole_estimated_peak_rss"] = large["peak_rss"] + per_pixel * (width * height - args.size**2)
            row["machine_memory"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            results[f"big_{width}x{height}"] = row
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


def planned_work(model: str, size: int, tile: int) -> dict:
    """What the plan says, without running: memory estimates and the multiply-adds tiles do vs the whole image."""
    from transgan.inference import tiled_run as run
    from transgan.inference.tiled_graph import needed
    from transgan.inference.tiles import open_tiled

    plan, _ = open_tiled(model, tile, None, device="cpu").plan_for(size, size)
    graph = plan.graph

    def macs(node: int, box) -> float:
        current = graph.nodes[node]
        if current.kind not in ("conv", "convT"):
            return 0.0
        p = current.params
        fan_in = graph.nodes[current.inputs[0]].size[0] // p["groups"] * p["kernel"][0] * p["kernel"][1]
        per_value = fan_in / (p["stride"][0] * p["stride"][1]) if current.kind == "convT" else fan_in
        return per_value * current.size[0] * (box[0][1] - box[0][0]) * (box[1][1] - box[1][0])

    whole = sum(macs(i, ((0, n.size[1]), (0, n.size[2]))) for i, n in enumerate(graph.nodes))
    tiled = 0.0
    for node in plan.passes:  # every rectangle each tile computes, recomputed ones included
        for box in run.tiles(graph.nodes[node].size, run.tile_edge(plan, node, tile)):
            stack = [(node, box)]
            while stack:
                current, rect = stack.pop()
                if current in plan.stored and current != node:
                    continue
                tiled += macs(current, rect)
                sizes = [graph.nodes[i].size for i in graph.nodes[current].inputs]
                stack.extend(zip(graph.nodes[current].inputs, needed(graph.nodes[current], rect, sizes)))
    return {
        "whole_gmacs": whole / 1e9,
        "tiled_to_whole_macs": tiled / whole,
        "estimated_whole_activations": run.untiled_bytes(graph),
        "estimated_stored_activations": run.stored_bytes(plan),
        "estimated_tile_working_set": run.tile_bytes(plan, tile),
    }


def _tile_working_set(model: str, size: int, tile: int) -> int:
    from transgan.inference.tiled_run import tile_bytes
    from transgan.inference.tiles import open_tiled

    plan, _ = open_tiled(model, tile, None, device="cpu").plan_for(size, size)
    return tile_bytes(plan, tile)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    return "unknown"


if __name__ == "__main__":
    main()
