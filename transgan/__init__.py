"""transgan: image translation and generation with GANs, one shared trainer, ONNX export.

The Python API: `load`, `read_model` and `save` (model files: weights + config), `build_network` and
`list_models` (the network registry, plugins included), and `TransganError` (every user mistake).
"""

__version__ = "0.1.0"

from transgan.checkpoint import load, read_model, save  # noqa: E402
from transgan.errors import TransganError  # noqa: E402
from transgan.nets import build_network  # noqa: E402
from transgan.registry import list_models  # noqa: E402

__all__ = ["TransganError", "__version__", "build_network", "list_models", "load", "read_model", "save"]
