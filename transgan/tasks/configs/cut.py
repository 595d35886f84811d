"""CUT's and FastCUT's options (torch-free: `transgan train cut --help` reads them without building anything)."""

from __future__ import annotations

from dataclasses import dataclass

from transgan.config import option
from transgan.errors import TransganError
from transgan.tasks.configs.shared import TranslationConfig


@dataclass(frozen=True)
class CUTConfig(TranslationConfig):
    """CUT options; the defaults are the official code's (--CUT_mode CUT)."""

    domain_a: str = option("", "folder of domain A images")
    domain_b: str = option("", "folder of domain B images")
    init: str = option("xavier", "weight init: normal, xavier, kaiming or orthogonal")
    antialias: bool = option(True, "blur-pool downsampling in G and D (--no-antialias: stride-2 convs)")
    antialias_up: bool = option(True, "blur-pool upsampling in G (--no-antialias-up: transposed convs)")
    lambda_gan: float = option(1.0, "weight of the adversarial loss")
    lambda_nce: float = option(1.0, "weight of the PatchNCE loss")
    nce_idt: bool = option(True, "identity PatchNCE loss on domain B images: NCE(real_B, G(real_B))")
    nce_layers: str = option("0,4,8,12,16", "generator layers whose features PatchNCE compares (comma-separated)")
    num_patches: int = option(256, "patches sampled per layer and image")
    netf_nc: int = option(256, "features of each MLP head")
    nce_t: float = option(0.07, "temperature of the PatchNCE loss")
    nce_all_negatives: bool = option(False, "negatives from every image of the batch, not only the same image")
    flip_equivariance: bool = option(False, "flip the input at random and the output features back (FastCUT)")

    def __post_init__(self) -> None:
        super().__post_init__()
        layers = parse_layers(self.nce_layers)
        if any(layer < 0 for layer in layers):
            raise TransganError(f"--nce-layers {self.nce_layers}: layer indices start at 0")
        if self.num_patches < 1:
            raise TransganError(f"--num-patches {self.num_patches}: sample at least 1 patch per layer (official 256)")
        if self.netf_nc < 1:
            raise TransganError(f"--netf-nc {self.netf_nc}: the MLP heads need at least 1 feature (official 256)")
        if self.nce_t <= 0:
            raise TransganError(f"--nce-t {self.nce_t}: the temperature must be positive (official 0.07)")
        if self.lambda_nce < 0 or self.lambda_gan < 0:
            raise TransganError(f"--lambda-nce {self.lambda_nce} / --lambda-gan {self.lambda_gan}: must be >= 0")


@dataclass(frozen=True)
class FastCUTConfig(CUTConfig):
    """FastCUT options; the defaults are the official code's (--CUT_mode FastCUT)."""

    lambda_nce: float = option(10.0, "weight of the PatchNCE loss")
    nce_idt: bool = option(False, "identity PatchNCE loss on domain B images: NCE(real_B, G(real_B))")
    flip_equivariance: bool = option(True, "flip the input at random and the output features back (FastCUT)")


def parse_layers(text: str) -> list[int]:
    """'0,4,8' -> [0, 4, 8] (sorted, distinct), or one clear error."""
    try:
        layers = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise TransganError(f"--nce-layers {text}: give comma-separated layer indices, like 0,4,8,12,16") from None
    if not layers:
        raise TransganError("--nce-layers is empty: give comma-separated layer indices, like 0,4,8,12,16")
    return layers
