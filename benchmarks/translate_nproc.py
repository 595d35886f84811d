"""`transgan translate` of the 50 real horses in one process versus `--nproc 2`, interleaved; prints JSON.

    python benchmarks/translate_nproc.py --out /tmp/nproc.json
    python benchmarks/translate_nproc.py --rounds 3 --engine torch --out /tmp/nproc.json

Each round runs the whole command (start-up, model load, decode, translate, encode) once with one process
(torch's default threads: all cores) and once with `--nproc 2` (two processes sharing the cores), into fresh
output folders, alternating which goes first. The ratio of the median wall clocks is what this measures:
measured in one run, side by side, it holds on a shared machine where absolute figures do not. Every round's
outputs are compared byte for byte with the first single-process run's.
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

DATA = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def cpu_name() -> str:
    """The CPU model as Linux names it (platform.processor() is often just the architecture)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def run(command: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def outputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the JSON report goes")
    parser.add_argument("--horses", type=Path, default=DATA / "horse2zebra" / "testA")
    parser.add_argument("--model", default="horse2zebra-mobile")
    parser.add_argument("--engine", default="torch", help="the same engine for both (auto may measure first)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    count = len([p for p in args.horses.iterdir() if p.suffix.lower() in (".png", ".jpg")])
    base = [sys.executable, "-m", "transgan", "translate", args.model, str(args.horses)]
    times: dict[str, list[float]] = {"one": [], "two": []}
    reference = None
    identical = True
    with tempfile.TemporaryDirectory(prefix="nproc-bench-") as scratch:
        for round_index in range(args.rounds):
            order = ["one", "two"] if round_index % 2 == 0 else ["two", "one"]
            for arm in order:
                folder = Path(scratch) / f"{arm}-{round_index}"
                extra = ["--nproc", "2"] if arm == "two" else []
                times[arm].append(run([*base, str(folder), "--engine", args.engine, *extra]))
                written = outputs(folder)
                reference = reference if reference is not None else written
                identical = identical and written == reference
                shutil.rmtree(folder)
    one, two = statistics.median(times["one"]), statistics.median(times["two"])
    report = {
        "benchmark": "benchmarks/translate_nproc.py",
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average_1min_at_end": os.getloadavg()[0]},
        "model": args.model,
        "engine": args.engine,
        "images": count,
        "rounds": args.rounds,
        "seconds_one_process": [round(t, 2) for t in times["one"]],
        "seconds_two_processes": [round(t, 2) for t in times["two"]],
        "median_one_process_s": round(one, 2),
        "median_two_processes_s": round(two, 2),
        "speedup_two_over_one": round(one / two, 3),
        "outputs_byte_identical": identical,
        "note": "the whole command each time (start-up included); rounds alternate which arm goes first",
    }
    text = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
