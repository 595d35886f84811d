"""Pix2Pix: paired translation with a U-Net generator, a conditional PatchGAN and GAN + L1 loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from transgan.losses import l1_loss
from transgan.registry import TASKS
from transgan.tasks.base import Phase
from transgan.tasks.configs.pix2pix import Pix2PixConfig
from transgan.tasks.translation import (
    TranslationTask,
    as_rgb,
    check_input_size,
    discriminate_pair,
    preprocess_of,
    required_path,
    translation_discriminator,
    translation_generator,
)


@TASKS.register("pix2pix")
class Pix2PixTask(TranslationTask):
    """Paired image-to-image translation (pix2pix): U-Net + PatchGAN, GAN + L1 loss."""

    name = "pix2pix"
    config_class = Pix2PixConfig

    @classmethod
    def build_dataset(cls, config: Pix2PixConfig):
        from transgan.data.paired import paired_dataset

        return paired_dataset(
            required_path(config.data, "--data"),
            preprocess_of(config),
            direction=config.direction,
            input_nc=config.input_nc,
            output_nc=config.output_nc,
        )

    def __init__(self, config: Pix2PixConfig, dataset):
        super().__init__(config, dataset)
        self.networks["G"] = translation_generator(config, config.input_nc, config.output_nc)
        # The discriminator is conditional: it sees the input beside the (real or fake) output.
        self.networks["D"] = translation_discriminator(config, config.input_nc + config.output_nc)
        self.build_loss()

    def phases(self) -> list[Phase]:
        # The reference's order: D first (on detached fakes), then G against the updated D.
        return [Phase("D", ["D"], self.loss_D, "D"), Phase("G", ["G"], self.loss_G, "G", frozen=["D"])]

    def forward(self, batch: dict[str, Any]) -> None:
        self.real_A = batch["A"].to(self.device, non_blocking=True)
        self.real_B = batch["B"].to(self.device, non_blocking=True)
        check_input_size(self.real_A, self.networks["G"], self.config.arch)
        self.fake_B = self.networks["G"](self.real_A)

    def _D(self, pair: torch.Tensor) -> torch.Tensor:
        """D's patch map of (input, output) pairs as D sees them (DiffAugment moves both halves alike)."""
        return self.regularizer.discriminate(self.networks["D"], pair)

    def loss_D(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fake_AB, real_AB = torch.cat([self.real_A, self.fake_B.detach()], 1), torch.cat([self.real_A, self.real_B], 1)
        pred_fake, pred_real = discriminate_pair(self._D, self.config, fake_AB, real_AB)
        loss_real, loss_fake = self.gan_loss.discriminator(pred_real, pred_fake, self.config.real_label)
        penalty, metrics = self.regularizer.penalties(self.networks["D"], real_AB, fake_AB, self.step)
        return 0.5 * (loss_real + loss_fake) + penalty, {**self.regularizer.scores(pred_real, pred_fake), **metrics}

    def loss_G(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pred_fake = self._D(torch.cat([self.real_A, self.fake_B], 1))
        loss_gan = self.gan_loss.generator(pred_fake)
        loss_l1 = l1_loss(self.fake_B, self.real_B) * self.config.lambda_l1
        return loss_gan + loss_l1, {"G/gan": loss_gan.detach(), "G/l1": loss_l1.detach()}

    @torch.no_grad()
    def sample_grid(self, batch: dict[str, Any], networks: dict[str, nn.Module]) -> torch.Tensor:
        real_A, real_B = batch["A"].to(self.device), batch["B"].to(self.device)
        fake_B = networks["G"](real_A)
        return torch.cat([as_rgb(real_A), as_rgb(fake_B), as_rgb(real_B)])

    def model_file_kwargs(self) -> dict[str, Any]:
        return {
            "directions": {self.config.direction: "G"},
            "extra": self.channels(),
        }
