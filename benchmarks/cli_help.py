"""Wall time of `transgan --help` and `transgan train TASK --help` in fresh processes, against `import torch`; prints
JSON.

    python benchmarks/cli_help.py --out results/cli_help.json [--rounds 5]

The commands run in turns, round after round, so a shared machine's load falls on all of them alike; the median of
each is reported, and `import torch` alone as the cost the help screens avoid.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "transgan --help": [sys.executable, "-m", "transgan", "--help"],
    "transgan train --help": [sys.executable, "-m", "transgan", "train", "--help"],
    "transgan train cyclegan --help": [sys.executable, "-m", "transgan", "train", "cyclegan", "--help"],
    "transgan train stylegan --help": [sys.executable, "-m", "transgan", "train", "stylegan", "--help"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where the JSON report goes")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times[name].append(time.perf_counter() - started)
    report = {
        "benchmark": "cli_help",
        "rounds": args.rounds,
        "median_seconds": {name: round(statistics.median(values), 3) for name, values in times.items()},
        "all_seconds": {name: [round(value, 3) for value in values] for name, values in times.items()},
    }
    text = json.dumps(report, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
