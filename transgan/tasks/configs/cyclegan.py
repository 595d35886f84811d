"""CycleGAN's options (torch-free: `transgan train cyclegan --help` reads them without building anything)."""

from __future__ import annotations

from dataclasses import dataclass

from transgan.config import option
from transgan.tasks.configs.shared import TranslationConfig


@dataclass(frozen=True)
class CycleGANConfig(TranslationConfig):
    """CycleGAN options; the defaults are the reference's."""

    domain_a: str = option("", "folder of domain A images")
    domain_b: str = option("", "folder of domain B images")
    lambda_a: float = option(10.0, "weight of the cycle loss A -> B -> A")
    lambda_b: float = option(10.0, "weight of the cycle loss B -> A -> B")
    lambda_identity: float = option(0.5, "weight of the identity loss, relative to lambda_a/lambda_b")
    pool_size: int = option(50, "image pool size (0 disables the pool)")
