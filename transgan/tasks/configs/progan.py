"""ProGAN's options (torch-free: `transgan train progan --help` reads them without building anything)."""

from __future__ import annotations

from dataclasses import dataclass

from transgan.config import option
from transgan.tasks.configs.shared import EqualizedNetworkOptions, GenerationDataConfig


@dataclass(frozen=True)
class ProGANConfig(GenerationDataConfig, EqualizedNetworkOptions):
    """ProGAN options. Widths default small (channel_base 1024, at most 64 maps) and stages short so MNIST/CIFAR
    grow on a CPU; the paper's are channel_base 16384, channel_max 512 and 600k + 600k images per stage."""

    conditional: bool = option(False, "condition on the class labels (ProGAN is unconditional: --conditional adds it)")
    stage_images: int = option(40_000, "images shown in each stage below full resolution, fade-in included")
    fade_images: int = option(20_000, "images over which each new stage fades in (alpha 0 -> 1)")
    final_images: int = option(200_000, "images shown at full resolution (fade-in included); --steps overrides")
    stage_batch_sizes: str = option(
        "", "batch size per stage, comma-separated from the base resolution up; empty: --batch-size"
    )
    drift: float = option(0.001, "weight of the drift term mean(D(x)^2) (epsilon_drift)")
    n_critic: int = option(1, "discriminator steps per generator step (ProGAN: 1)")
