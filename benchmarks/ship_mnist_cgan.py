"""Turn a finished MNIST cgan run into pretrained/mnist-cgan.safetensors (standing BN stats) and index it.

    python benchmarks/ship_mnist_cgan.py RUN_DIR

The run's model file holds the EMA generator; its batch-norm statistics are re-estimated from its own
samples (transgan.tasks.cgan.standing_statistics), then the file is written with its sha256 in the index.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from transgan.checkpoint import read_model, save
from transgan.tasks.cgan import standing_statistics

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"


def ship(run_dir: Path, name: str = "mnist-cgan") -> dict:
    model = read_model(Path(run_dir) / "model.safetensors")
    meta = model.meta
    standing_statistics(model.primary, batches=50, batch_size=100, seed=0)
    path = save(
        model.networks,
        PRETRAINED / f"{name}.safetensors",
        task=meta["task"],
        primary=meta["primary"],
        class_names=meta["class_names"],
        normalization=meta["normalization"],
        extra={**meta["extra"], "standing_statistics": True},
    )
    index_path = PRETRAINED / "index.json"
    index = json.loads(index_path.read_text())
    index[name] = {
        "file": path.name,
        "task": meta["task"],
        "arch": meta["networks"][meta["primary"]]["arch"],
        "card": f"{name}.md",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    index_path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return {"file": str(path), "bytes": path.stat().st_size, **index[name]}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    print(json.dumps(ship(Path(sys.argv[1])), indent=2))
