"""Freeze-D (Mo et al. 2020): when fine-tuning, the first N blocks of each discriminator keep their weights and
only the later ones learn. A discriminator says what its blocks are through `discriminator_blocks()`."""

from __future__ import annotations

from torch import nn

from transgan.errors import TransganError


def discriminator_blocks(net: nn.Module, name: str = "D") -> list[nn.Module]:
    """The blocks of discriminator `net`, from its input to its output (see each family's
    `discriminator_blocks`; a network from a plugin opts in by defining that method)."""
    blocks = getattr(net, "discriminator_blocks", None)
    if not callable(blocks):
        raise TransganError(
            f"--freeze-d: discriminator {name} ({getattr(net, 'transgan_arch', type(net).__name__)}) does not "
            "say what its blocks are (it has no discriminator_blocks() method); use --freeze-d 0"
        )
    return list(blocks())


def frozen_d_parameters(networks: nn.ModuleDict, count: int) -> list[nn.Parameter]:
    """The parameters of the first `count` blocks of every discriminator (networks named D...); one line when
    a discriminator has fewer blocks."""
    if count <= 0:
        return []
    frozen: list[nn.Parameter] = []
    for name, net in networks.items():
        if not name.startswith("D"):
            continue
        blocks = discriminator_blocks(net, name)
        if count > len(blocks):
            raise TransganError(
                f"--freeze-d {count}: discriminator {name} ({getattr(net, 'transgan_arch', type(net).__name__)}) "
                f"has {len(blocks)} blocks; use at most {len(blocks)} ({max(len(blocks) - 1, 0)} leaves its last "
                "block learning)"
            )
        seen: set[int] = set()
        for block in blocks[:count]:
            for parameter in block.parameters():
                if id(parameter) not in seen:  # a layer shared by two blocks counts once
                    seen.add(id(parameter))
                    frozen.append(parameter)
    return frozen
