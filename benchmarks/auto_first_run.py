"""`--engine auto`'s first and cached runs, and an exported ONNX file, against a plain PyTorch loop; prints JSON.

    python benchmarks/auto_first_run.py --out auto_first_run.json    # data from ../shared/data; ~15 min on 2 cores

Whole commands (process start to exit) over the same folder of real 256x256 horses, interleaved round by round with
a rotating order, so a machine shared with other work slows them all alike:
  plain_loop     benchmarks/cpu_speed.py --plain-loop: decode, eager fp32 resnet_9blocks (ngf 64) at batch 1, PNG
  auto_first     transgan translate MODEL (default --engine auto) with an empty cache: exports, measuring and all
  auto_cached    the same command with the cache a previous run left (its choice and exports)
  exported_onnx  transgan translate MODEL.onnx --engine onnx, the file `transgan export MODEL MODEL.onnx` wrote
The model is a random-initialised resnet_9blocks, ngf 64 (the reference kit's resnet checkpoints are ngf 16): its
work per image does not depend on the weights. Ratios are the plain loop's seconds over each command's (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TARGETS = {"auto_first": 1.0, "auto_cached": 1.5, "exported_onnx": 1.3}


def run(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Seconds the whole command took, and its output; a failed command stops the benchmark with its message."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stderr + done.stdout


def engine_lines(stderr: str) -> list[str]:
    """What auto said it did (measured, cached, default) and the engine the translation ran with."""
    keep = ("measuring", "chose", "engine chosen", "without measuring", "translating with")
    return [line.strip() for line in stderr.splitlines() if line.strip().startswith(keep) or "images (" in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horses", type=Path, default=DATA / "horse2zebra" / "testA")
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    import torch

    import transgan
    from transgan.inference.tuning_cache import machine_description
    from transgan.nets import build_network

    work = Path(tempfile.mkdtemp(prefix="transgan-auto-first-"))
    folder = work / "horses"
    folder.mkdir()
    for path in sorted(args.horses.glob("*.png"))[: args.images]:
        shutil.copy(path, folder / path.name)
    count = len(list(folder.glob("*.png")))
    torch.manual_seed(0)
    model = transgan.save(build_network("resnet_9blocks", ngf=64), work / "resnet_9blocks.safetensors",
                          task="cyclegan", directions={"AtoB": "G"})  # fmt: skip
    env = {**os.environ}
    env.pop("OMP_NUM_THREADS", None)  # the commands run as a user runs them

    def with_cache(name: str) -> dict[str, str]:
        return {**env, "TRANSGAN_CACHE": str(work / name)}

    translate = [sys.executable, "-m", "transgan", "translate"]
    plain = [sys.executable, str(Path(__file__).with_name("cpu_speed.py")), "--plain-loop", str(model), str(folder)]
    onnx_file = work / "resnet_9blocks.onnx"
    commands = {
        "plain_loop": (plain + [str(work / "o_plain")], lambda _: env),
        "auto_first": ([*translate, str(model), str(folder), str(work / "o_first"), "--overwrite"],
                       lambda index: with_cache(f"cache-first-{index}")),  # empty every time
        "auto_cached": ([*translate, str(model), str(folder), str(work / "o_cached"), "--overwrite"],
                        lambda _: with_cache("cache-warm")),
        "exported_onnx": ([*translate, str(onnx_file), str(folder), str(work / "o_onnx"), "--overwrite", "--engine",
                           "onnx"], lambda _: with_cache("cache-onnx")),
    }  # fmt: skip
    loads = [os.getloadavg()]
    untimed: dict[str, float] = {}
    untimed["export"], export_err = run([sys.executable, "-m", "transgan", "export", str(model), str(onnx_file)], env)
    command, environment = commands["auto_cached"]
    untimed["auto_cached_warming_run"], _ = run(command, environment(0))  # leaves the cache the timed runs reuse
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    said: dict[str, list[str]] = {}
    names = list(commands)
    for round_index in range(args.rounds):
        loads.append(os.getloadavg())
        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
            command, environment = commands[name]
            elapsed, stderr = run(command, environment(round_index))
            seconds[name].append(elapsed)
            said[name] = engine_lines(stderr) or ["eager fp32, batch 1"]
            print(f"round {round_index + 1} {name}: {elapsed:.1f} s", file=sys.stderr)
    loads.append(os.getloadavg())
    median = {name: statistics.median(times) for name, times in seconds.items()}
    ratios = {name: round(median["plain_loop"] / median[name], 2) for name in TARGETS}
    results = {
        "machine": machine_description("cpu"),
        "shared_machine_load_average_1_5_15": [[round(x, 2) for x in load] for load in loads],
        "images": count,
        "rounds": args.rounds,
        "note": "whole commands, medians of interleaved rounds; ratios = plain loop seconds / command seconds",
        "seconds_per_command": {name: [round(t, 1) for t in times] for name, times in seconds.items()},
        "vs_plain_loop": ratios,
        "targets": TARGETS,
        "met": {name: ratios[name] >= target for name, target in TARGETS.items()},
        "what_auto_did": said,
        "untimed_seconds": {name: round(t, 1) for name, t in untimed.items()},
        "export_summary": export_err.strip().splitlines()[-1:] or None,
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
