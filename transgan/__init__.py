"""transgan: image translation and generation with GANs, one shared trainer, ONNX export.

The Python API: `load`, `read_model` and `save` (model files: weights + config), `build_network` and
`list_models` (the network registry, plugins included), and `TransganError` (every user mistake).
They are imported on first use, so `import transgan` (and `transgan --help`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "load": "transgan.checkpoint",
    "read_model": "transgan.checkpoint",
    "save": "transgan.checkpoint",
    "build_network": "transgan.nets",
    "list_models": "transgan.registry",
    "TransganError": "transgan.errors",
}

__all__ = ["TransganError", "__version__", "build_network", "list_models", "load", "read_model", "save"]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'transgan' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
