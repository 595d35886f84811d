"""Build any registered network from its name and a config of plain values.

A network's builder is a function or an nn.Module class registered in NETWORKS; its keyword options (with
their defaults) are the network's config. A variant is a builder with some options fixed (NETWORKS.add_variant).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from transgan.registry import NETWORKS, RegistryError


def network_options(arch: str) -> dict[str, Any]:
    """The options of network `arch` with their defaults (what a model file stores as its config)."""
    parameters = inspect.signature(NETWORKS.get(arch)).parameters
    return {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}


def build_network(arch: str, **config: Any) -> nn.Module:
    """Build network `arch`; the resolved config (defaults filled in) is kept on the module.

    `net.transgan_arch` and `net.transgan_config` are what `transgan.save` writes, so a model file
    rebuilds the same network without any training flags.
    """
    builder = NETWORKS.get(arch)
    signature = inspect.signature(builder)
    unknown = sorted(set(config) - set(signature.parameters))
    if unknown:
        options = ", ".join(signature.parameters) or "none"
        raise RegistryError(f"network '{arch}' has no option {', '.join(unknown)}; its options: {options}")
    bound = signature.bind(**config)
    bound.apply_defaults()
    net = builder(**bound.arguments)
    net.transgan_arch = arch
    net.transgan_config = dict(bound.arguments)
    return net
