"""CPU speed on the real horses: whole `transgan translate` commands in one interleaved run, int8 PSNR; prints JSON.

    python benchmarks/cpu_speed.py --out cpu_speed.json   # data from ../shared/data; tens of minutes on 2 cores

Each row is a whole command, timed from process start to exit over the same folder of real 256x256 horses
(outputs overwritten every round), the commands interleaved round by round with a rotating order:
  plain_loop_full   this script's --plain-loop: decode, eager fp32 resnet_9blocks (ngf 64) at batch 1, PNG encode
  full_fp32         transgan translate FULL --engine auto           (fp32 engines only)
  full_auto         transgan translate FULL --engine auto --int8    (int8 a candidate if it keeps >= 35 dB)
  mobile_auto       transgan translate MOBILE --engine auto --int8  (mobile_resnet's best engine, int8 allowed too)
Before the timed rounds every command runs once untimed: that run pays the one-time costs (ONNX and int8 exports,
measuring engines for --engine auto, compiling), which are cached per model and machine; their seconds are
reported apart. resnet_9blocks is random-initialised (its work per image does not depend on the weights; its int8
PSNR does, so a trained model's may differ); mobile_resnet is the real GAN Compression horse2zebra checkpoint.
int8 PSNR figures are those measured at export, against the fp32 graph, on held-out horses at 256x256.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TARGETS = {"mobile_vs_full_fp32": 10.0, "mobile_int8_psnr_db": 35.0, "full_vs_plain_loop": 1.5}


def plain_loop(model: Path, folder: Path, out: Path) -> None:
    """The baseline as a user writes it: for each image decode, eager fp32 forward at batch 1, encode PNG."""
    import numpy as np
    import torch
    from PIL import Image

    import transgan

    net = transgan.load(model).eval()
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.glob("*.png")):
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1
        with torch.no_grad():
            output = net(torch.from_numpy(pixels.transpose(2, 0, 1)[None].copy()))[0].numpy()
        image = np.clip((output.transpose(1, 2, 0) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(out / path.name)


def make_models(work: Path) -> tuple[Path, Path]:
    import torch

    import transgan
    from transgan.convert import load_gan_compression_checkpoint
    from transgan.nets import build_network

    torch.manual_seed(0)
    full = transgan.save(build_network("resnet_9blocks", ngf=64), work / "resnet_9blocks.safetensors",
                         task="cyclegan", directions={"AtoB": "G"})  # fmt: skip
    checkpoint = DATA / "gan_compression_horse2zebra" / "latest_net_G.pth"
    net = load_gan_compression_checkpoint(checkpoint, channels="16_16_32_16_32_32_16_16")
    mobile = transgan.save(net, work / "mobile_resnet.safetensors", task="cyclegan", directions={"AtoB": "G"})
    return full, mobile


def run(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Seconds the whole command took, and its stderr; a failed command stops the benchmark with its message."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stderr


def engine_line(stderr: str) -> str | None:
    found = re.findall(r"translating with (.*)", stderr)
    return found[-1].strip() if found else None


def int8_figures(cache: Path, stem: str) -> dict:
    """The int8 section of the cached int8 export of model `stem` (what the export measured), or why there is none."""
    from transgan.export.int8_cache import int8_info

    graphs = sorted((cache / "onnx").glob(f"{stem}-*-int8.onnx"))
    if graphs:
        info = int8_info(graphs[-1])
        keep = ("psnr_db", "worst_image_psnr_db", "all_layers_int8_psnr_db", "held_out_images", "calibration_images")
        figures = {key: info[key] for key in keep}
        figures["layers_int8"] = (
            f"{len(info['quantized_layers'])} of {len(info['quantized_layers']) + len(info['fp32_layers'])}"
        )
        return figures
    refused = sorted((cache / "onnx").glob(f"{stem}-*-int8.refused.json"))
    return {"refused": json.loads(refused[-1].read_text())["error"]} if refused else {"missing": "no int8 export"}


def tuning_tables(cache: Path) -> list[dict]:
    tables = []
    for path in sorted((cache / "autotune").glob("*.json")):
        data = json.loads(path.read_text())
        rows = [f"{m['engine']} b{m['batch_size']}: {m['images_per_s']:.3f} img/s (setup {m['setup_s']} s)"
                for m in data["measurements"]]  # fmt: skip
        tables.append({"model": Path(data["model"]).name, "candidates": data["setting"]["candidates"],
                       "choice": data["choice"], "measured": rows, "skipped": data.get("skipped", {})})  # fmt: skip
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horses", type=Path, default=DATA / "horse2zebra" / "testA")
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after the untimed first one")
    parser.add_argument("--out", "--json-out", dest="out", type=Path, help="also write the JSON report here")
    parser.add_argument(
        "--plain-loop", nargs=3, type=Path, metavar=("MODEL", "INPUT", "OUTPUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.plain_loop:
        return plain_loop(*args.plain_loop)

    import torch

    from transgan.inference.tuning_cache import machine_description

    work = Path(tempfile.mkdtemp(prefix="transgan-cpu-speed-"))
    cache = work / "cache"
    env = {**os.environ, "TRANSGAN_CACHE": str(cache)}
    env.pop("OMP_NUM_THREADS", None)  # the commands run as a user runs them
    folder = work / "horses"
    folder.mkdir()
    for path in sorted(args.horses.glob("*.png"))[: args.images]:
        shutil.copy(path, folder / path.name)
    count = len(list(folder.glob("*.png")))
    full, mobile = make_models(work)
    translate = [sys.executable, "-m", "transgan", "translate"]
    calibrate = ["--int8", "--calibrate", str(folder)]  # calibrated on the horses; PSNR on held-out ones
    commands = {
        "plain_loop_full": [sys.executable, __file__, "--plain-loop", str(full), str(folder), str(work / "o_loop")],
        "full_fp32": [*translate, str(full), str(folder), str(work / "o_fp32"), "--device", "cpu", "--overwrite"],
        "full_auto": [*translate, str(full), str(folder), str(work / "o_full"), "--device", "cpu", "--overwrite",
                      *calibrate],
        "mobile_auto": [*translate, str(mobile), str(folder), str(work / "o_mobile"), "--device", "cpu",
                        "--overwrite", *calibrate],
    }  # fmt: skip
    loads = [os.getloadavg()]
    first: dict[str, float] = {}
    engines: dict[str, str | None] = {}
    for name, command in commands.items():  # untimed: one-time exports, measuring, compiling
        first[name], stderr = run(command, env)
        engines[name] = engine_line(stderr) or ("torch eager fp32, batch 1" if name == "plain_loop_full" else None)
        print(f"first run {name}: {first[name]:.0f} s ({engines[name]})", file=sys.stderr)
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for round_index in range(args.rounds):
        loads.append(os.getloadavg())
        for name in names[round_index % len(names) :] + names[: round_index % len(names)]:
            elapsed, stderr = run(commands[name], env)
            seconds[name].append(elapsed)
            engines[name] = engine_line(stderr) or engines[name]
            print(f"round {round_index + 1} {name}: {elapsed:.1f} s", file=sys.stderr)
    loads.append(os.getloadavg())

    rate = {name: round(count / statistics.median(times), 3) for name, times in seconds.items()}
    ratios = {
        "mobile_vs_full_fp32": round(rate["mobile_auto"] / rate["full_fp32"], 2),
        "full_vs_plain_loop": round(rate["full_auto"] / rate["plain_loop_full"], 2),
        "full_fp32_vs_plain_loop": round(rate["full_fp32"] / rate["plain_loop_full"], 2),
    }
    int8 = {"mobile_resnet": int8_figures(cache, mobile.stem), "resnet_9blocks": int8_figures(cache, full.stem)}
    mobile_psnr = int8["mobile_resnet"].get("psnr_db")
    met = {
        "mobile_vs_full_fp32": ratios["mobile_vs_full_fp32"] >= TARGETS["mobile_vs_full_fp32"],
        "mobile_int8_psnr_db": mobile_psnr is not None and mobile_psnr >= TARGETS["mobile_int8_psnr_db"],
        "full_vs_plain_loop": ratios["full_vs_plain_loop"] >= TARGETS["full_vs_plain_loop"],
    }
    results = {
        "machine": machine_description("cpu"),
        "load_average_1_5_15": [[round(x, 2) for x in load] for load in loads],
        "images": count,
        "timed_rounds": args.rounds,
        "note": "whole commands, medians of interleaved rounds; the machine may be shared (see load_average)",
        "images_per_s": rate,
        "seconds_per_command": {name: [round(t, 1) for t in times] for name, times in seconds.items()},
        "engines": engines,
        "ratios": ratios,
        "targets": TARGETS,
        "met": met,
        "int8_at_export": int8,
        "first_run_seconds_one_time_costs": {name: round(t, 1) for name, t in first.items()},
        "autotune": tuning_tables(cache),
        "torch_threads_default": torch.get_num_threads(),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
