"""StyleGAN2 image generation on the shared trainer: logistic loss, lazy R1, style mixing, optional path length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from transgan.config import option
from transgan.errors import TransganError
from transgan.losses import (
    adversarial_loss,
    decision_threshold,
    path_length_penalty,
    r1_gamma_for,
)
from transgan.nets import build_network
from transgan.recipe import Recipe
from transgan.registry import TASKS
from transgan.tasks.base import Phase
from transgan.tasks.generation import EqualizedNetworkOptions, GenerationDataConfig, GenerationTask
from transgan.tasks.regularizers import DiscriminatorRegularizer, check_discriminator_options

STYLEGAN2_LR = 0.0025
STYLEGAN2_BETAS = (0.0, 0.99)
PL_DECAY = 0.01  # StyleGAN2's running-mean rate of the path lengths


@dataclass(frozen=True)
class StyleGANConfig(GenerationDataConfig, EqualizedNetworkOptions):
    """StyleGAN2 options. Widths default small (channel_base 1024, at most 64 maps) so MNIST/CIFAR train on a
    CPU; the paper's are channel_base 32768, channel_max 512, w_dim 512, 8 mapping layers."""

    w_dim: int = option(128, "size of w (the style vector)")
    mapping_layers: int = option(2, "layers of the mapping network (StyleGAN2-ADA's CIFAR config: 2; paper: 8)")
    mapping_lr_mul: float = option(0.01, "learning-rate multiplier of the mapping network (StyleGAN2: 0.01)")
    style_mode: str = option("demod", "demod (StyleGAN2 modulated convs) or adain (StyleGAN's AdaIN)")
    mixing_prob: float = option(0.9, "style-mixing probability of a training batch (0 disables mixing)")
    pl_weight: float = option(0.0, "path-length regularisation weight (StyleGAN2: 2; 0 disables it)")
    pl_every: int = option(4, "lazy path-length regularisation: every this many steps")


def check_config(config: StyleGANConfig) -> None:
    check_discriminator_options(config)
    if config.pl_every < 1:
        raise TransganError(f"--pl-every {config.pl_every}: must be at least 1")
    if not 0.0 <= config.mixing_prob <= 1.0:
        raise TransganError(f"--mixing-prob {config.mixing_prob}: must lie in [0, 1]")
    if config.pl_weight < 0:
        raise TransganError(f"--pl-weight {config.pl_weight}: must be 0 (off) or positive (StyleGAN2: 2)")


@TASKS.register("stylegan")
class StyleGANTask(GenerationTask):
    """StyleGAN2 (conditional or not): non-saturating logistic loss, lazy R1, style mixing, G EMA."""

    name = "stylegan"
    config_class = StyleGANConfig
    check_options = staticmethod(check_config)

    def __init__(self, config: StyleGANConfig, dataset):
        super().__init__(config, dataset)
        shared, widths = self.network_shape(), config.widths()
        self.networks["G"] = build_network(
            "stylegan_generator",
            latent_dim=config.latent_dim,
            w_dim=config.w_dim,
            mapping_layers=config.mapping_layers,
            mapping_lr_mul=config.mapping_lr_mul,
            style_mode=config.style_mode,
            **widths,
            **shared,
        )
        self.networks["D"] = build_network(
            "stylegan_discriminator",
            **config.minibatch_std(),
            **widths,
            **shared,
        )
        self.gan_loss = adversarial_loss("nonsaturating")
        # R1 always (StyleGAN2-ADA's weight for the resolution and batch unless --r1-gamma says otherwise).
        self.regularizer = DiscriminatorRegularizer(
            config,
            decision_threshold(self.gan_loss),
            default_r1_gamma=lambda batch_size: r1_gamma_for(config.image_size, batch_size),
        )
        # The running mean of the path lengths is training state, saved in checkpoints so a resumed run
        # regularises alike.
        self.pl_mean = torch.zeros(())
        self.fix_grid_inputs()

    def recipe(self) -> Recipe:
        # StyleGAN2-ADA at <= 128 px: Adam 0.0025, betas (0, 0.99), batch 32; G's EMA half-life 10k images at
        # batch 32 (0.5 ** (32 / 10000) = 0.99778) with ramp-up 0.05, so a short run's average is not dominated
        # by its first, random weights.
        lr = {"G": STYLEGAN2_LR, "D": STYLEGAN2_LR}
        return Recipe(lr=lr, betas=STYLEGAN2_BETAS, batch_size=32, epochs=100, ema=0.99778, ema_rampup=0.05)

    def phases(self) -> list[Phase]:
        return [Phase("D", ["D"], self.loss_D, "D"), Phase("G", ["G"], self.loss_G, "G", frozen=["D"])]

    # -- one step -----------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> None:
        self.real = batch["image"].to(self.device, non_blocking=True)
        self.labels = batch["label"].to(self.device).long() if self.num_classes else None
        G = self.networks["G"]
        self.z = G.sample_latent(self.real.shape[0]).to(self.device)
        self.fake = G(self.z, self.labels, mixing_prob=self.config.mixing_prob)

    def _D(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """D's logits of images as D sees them (DiffAugment'ed when a policy is set, differentiably)."""
        return self.regularizer.discriminate(self.networks["D"], images, labels)

    def loss_D(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fake = self.fake.detach()
        pred_real, pred_fake = self._D(self.real, self.labels), self._D(fake, self.labels)
        loss_real, loss_fake = self.gan_loss.discriminator(pred_real, pred_fake)
        # Lazy R1 every --r1-every steps (StyleGAN2), its gradient taken through DiffAugment; WGAN-GP if asked.
        penalty, logged = self.regularizer.penalties(self.networks["D"], self.real, fake, self.step, self.labels)
        return loss_real + loss_fake + penalty, {**self.regularizer.scores(pred_real, pred_fake), **logged}

    def loss_G(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        config = self.config
        loss = self.gan_loss.generator(self._D(self.fake, self.labels))
        metrics = {"G/gan": loss.detach()}
        if config.pl_weight > 0 and self.step % config.pl_every == 0:
            penalty = self._path_length()
            loss = loss + config.pl_weight * config.pl_every * penalty
            metrics["G/pl"], metrics["G/pl_mean"] = penalty.detach(), self.pl_mean
        return loss, {**metrics, **self.diversity()}

    def _path_length(self) -> torch.Tensor:
        """StyleGAN2's path-length penalty on half the batch (its pl_batch_shrink 2); updates the running mean."""
        G, n = self.networks["G"], max(self.real.shape[0] // 2, 1)
        labels = None if self.labels is None else self.labels[:n]
        ws = G.mapping(G.sample_latent(n).to(self.device), labels, update_w_avg=False)
        penalty, self.pl_mean = path_length_penalty(G.synthesis(ws), ws, self.pl_mean.to(self.device), PL_DECAY)
        return penalty

    # -- state that is not a parameter ---------------------------------------------------------------
    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"pl_mean": self.pl_mean.detach().float().cpu()}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if "pl_mean" in tensors:
            self.pl_mean = tensors["pl_mean"].float().reshape(()).to(self.device)
