"""Import GAN Compression's compressed generators (sub_mobile_resnet `.pth` state dicts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from transgan.convert.reference import convert_state_dict, read_state_dict


def load_gan_compression_checkpoint(path: str | Path, channels: str | None = None, **config: Any) -> nn.Module:
    """A transgan `mobile_resnet` holding a GAN Compression `latest_net_G.pth` (eval mode).

    `channels` is GAN Compression's config_str (e.g. '16_16_32_16_32_32_16_16'); when None it is read
    from the tensor shapes. The key layout is identical, so the weights load one to one.
    """
    if channels is not None:
        config["channels"] = channels
    return convert_state_dict(read_state_dict(path), "mobile_resnet", str(path), **config)
