"""Turn a finished MNIST cgan run into pretrained/mnist-cgan.safetensors (standing BN stats) and index it.

    python benchmarks/ship_mnist_cgan.py RUN_DIR                  # -> pretrained/, sha256 -> index.json
    python benchmarks/ship_mnist_cgan.py RUN_DIR --to DIR         # -> DIR/mnist-cgan.safetensors only
    python benchmarks/ship_mnist_cgan.py --register FILE          # copy a shipped file into pretrained/ + index

The run's model file holds the EMA generator; its batch-norm statistics are re-estimated from its own
samples (transgan.tasks.cgan.standing_statistics), then the file is written with its sha256 in the index.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from transgan.checkpoint import read_model, save
from transgan.tasks.cgan import standing_statistics

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
NAME = "mnist-cgan"


def ship(run_dir: Path, to: Path = PRETRAINED, name: str = NAME) -> Path:
    """Write `to/name.safetensors`: the run's EMA generator with standing batch-norm statistics, on CPU."""
    model = read_model(Path(run_dir) / "model.safetensors")
    meta = model.meta
    standing_statistics(model.primary, batches=50, batch_size=100, seed=0)
    return save(
        model.networks,
        Path(to) / f"{name}.safetensors",
        task=meta["task"],
        primary=meta["primary"],
        class_names=meta["class_names"],
        normalization=meta["normalization"],
        extra={**meta["extra"], "standing_statistics": True},
    )


def register(path: Path, name: str = NAME) -> dict:
    """Copy a shipped model file into pretrained/ (if it is elsewhere) and write its entry in index.json."""
    path = Path(path)
    target = PRETRAINED / f"{name}.safetensors"
    if path.resolve() != target.resolve():
        shutil.copyfile(path, target)
    meta = read_model(target).meta
    index_path = PRETRAINED / "index.json"
    index = json.loads(index_path.read_text())
    index[name] = {
        "file": target.name,
        "task": meta["task"],
        "arch": meta["networks"][meta["primary"]]["arch"],
        "card": f"{name}.md",
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
    }
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return {"file": str(target), "bytes": target.stat().st_size, **index[name]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="a finished `transgan train cgan` run directory")
    parser.add_argument("--to", type=Path, default=None, help="write the file here instead of pretrained/ (no index)")
    parser.add_argument("--register", type=Path, default=None, help="an already shipped file to put in pretrained/")
    parser.add_argument("--json-out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args()
    if args.register is not None:
        report = register(args.register)
    elif args.run_dir is None:
        parser.error("give RUN_DIR or --register FILE")
    elif args.to is not None:
        report = {"file": str(ship(args.run_dir, args.to))}
    else:
        report = register(ship(args.run_dir))
    print(json.dumps(report, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
