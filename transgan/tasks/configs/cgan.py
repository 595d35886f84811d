"""cgan's options (torch-free: `transgan train cgan --help` reads them without building anything)."""

from __future__ import annotations

from dataclasses import dataclass

from transgan.config import option
from transgan.tasks.configs.shared import DiscriminatorOptions, GenerationDataConfig


@dataclass(frozen=True)
class CGANConfig(GenerationDataConfig, DiscriminatorOptions):
    """Generation options; `auto` values follow the chosen --loss (WGAN-GP: n_critic 5, critic without BN,
    gradient penalty 10)."""

    arch: str = option("dcgan", "dcgan (classic cDCGAN) or cbn (conditional BN G + spectral-norm projection D)")
    loss: str = option(
        "auto",
        "auto (the arch's: vanilla for dcgan, hinge for cbn), hinge, wgan-gp, vanilla, nonsaturating, "
        "lsgan, minimax, wasserstein",
    )
    latent_dim: int = option(128, "size of z (InfoGAN codes included)")
    ngf: int = option(32, "generator width")
    ndf: int = option(32, "discriminator width")
    embed_dim: int = option(50, "dcgan: size of the label embedding concatenated to z")
    d_norm: str = option("auto", "dcgan discriminator norm: batch, instance, none; auto: none with a gradient penalty")
    n_critic: int = option(0, "discriminator steps per generator step; 0: 5 for wgan-gp, else 1")
    projection: bool = option(True, "cbn: projection head in D (--no-projection with --aux-weight gives ACGAN)")
    aux_weight: float = option(0.0, "cbn: weight of the ACGAN auxiliary classifier loss; 0 disables it")
    info_categorical: int = option(0, "cbn: InfoGAN categorical code size (0: none)")
    info_continuous: int = option(0, "cbn: InfoGAN continuous codes (0: none)")
    info_weight: float = option(1.0, "weight of the InfoGAN mutual-information loss")
    real_label: float = option(1.0, "target for real images (vanilla/lsgan; below 1: one-sided smoothing)")
    mode_seeking: float = option(
        0.0, "weight of the mode-seeking term (Mao et al. 2019) that stops G ignoring its noise; 0 disables it"
    )
