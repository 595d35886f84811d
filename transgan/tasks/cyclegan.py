"""CycleGAN: unpaired translation with two ResNet generators, two PatchGANs, cycle and identity losses."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from transgan.errors import TransganError
from transgan.losses import cycle_loss, identity_loss
from transgan.registry import TASKS
from transgan.tasks.base import Phase
from transgan.tasks.configs.cyclegan import CycleGANConfig
from transgan.tasks.image_pool import ImagePool
from transgan.tasks.translation import (
    TranslationTask,
    as_rgb,
    check_input_size,
    discriminate_pair,
    per_sample,
    translation_discriminator,
    translation_generator,
    unaligned_dataset,
)


@TASKS.register("cyclegan")
class CycleGANTask(TranslationTask):
    """Unpaired image-to-image translation (CycleGAN): two generators, two discriminators, cycle loss."""

    name = "cyclegan"
    config_class = CycleGANConfig

    @classmethod
    def build_dataset(cls, config: CycleGANConfig):
        if config.lambda_identity > 0 and config.input_nc != config.output_nc:
            raise TransganError("--lambda-identity needs --input-nc equal to --output-nc; set --lambda-identity 0")
        return unaligned_dataset(config)

    def __init__(self, config: CycleGANConfig, dataset):
        super().__init__(config, dataset)
        a_nc, b_nc = config.input_nc, config.output_nc
        self.networks["G_A"] = translation_generator(config, a_nc, b_nc)  # A -> B
        self.networks["G_B"] = translation_generator(config, b_nc, a_nc)  # B -> A
        self.networks["D_A"] = translation_discriminator(config, b_nc)  # real B vs G_A(A)
        self.networks["D_B"] = translation_discriminator(config, a_nc)  # real A vs G_B(B)
        self.build_loss()
        self.pool_A, self.pool_B = ImagePool(config.pool_size), ImagePool(config.pool_size)

    def phases(self) -> list[Phase]:
        # The reference's order: both generators first, then both discriminators on pooled fakes.
        return [
            Phase("G", ["G_A", "G_B"], self.loss_G, "G", frozen=["D_A", "D_B"]),
            Phase("D", ["D_A", "D_B"], self.loss_D, "D"),
        ]

    def forward(self, batch: dict[str, Any]) -> None:
        G_A, G_B = self.networks["G_A"], self.networks["G_B"]
        real_A = self.real_A = batch["A"].to(self.device, non_blocking=True)
        real_B = self.real_B = batch["B"].to(self.device, non_blocking=True)
        check_input_size(real_A, G_A, self.config.arch)
        identity = self.config.lambda_identity > 0
        if not per_sample(self.config):
            # Batch norm: every pass on its own, as the reference does (batch statistics per call).
            self.fake_B, self.fake_A = G_A(real_A), G_B(real_B)
            self.rec_A, self.rec_B = G_B(self.fake_B), G_A(self.fake_A)
            self.idt_A, self.idt_B = (G_A(real_B), G_B(real_A)) if identity else (None, None)
            return
        # Per-sample norm: the six generator passes of a step (fakes, reconstructions, identities) fit in
        # three calls, since G_B's three inputs are all known once fake_B is. Same values, larger batches.
        n = real_A.shape[0]
        out = G_A(torch.cat([real_A, real_B]) if identity else real_A)
        self.fake_B, self.idt_A = out[:n], (out[n:] if identity else None)
        out = G_B(torch.cat([self.fake_B, real_B, real_A] if identity else [self.fake_B, real_B]))
        self.rec_A, self.fake_A, self.idt_B = out[:n], out[n : 2 * n], (out[2 * n :] if identity else None)
        self.rec_B = G_A(self.fake_A)

    def loss_G(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        D_A, D_B = self.networks["D_A"], self.networks["D_B"]
        loss_idt_A = loss_idt_B = torch.zeros((), device=self.device)
        if c.lambda_identity > 0:
            # G_A should leave an image that already looks like B unchanged, and G_B likewise for A.
            loss_idt_A = identity_loss(self.idt_A, self.real_B) * c.lambda_b * c.lambda_identity
            loss_idt_B = identity_loss(self.idt_B, self.real_A) * c.lambda_a * c.lambda_identity
        seen = self.regularizer.discriminate  # D behind DiffAugment (when a policy is set)
        loss_G_A = self.gan_loss.generator(seen(D_A, self.fake_B))
        loss_G_B = self.gan_loss.generator(seen(D_B, self.fake_A))
        loss_cycle_A = cycle_loss(self.rec_A, self.real_A) * c.lambda_a
        loss_cycle_B = cycle_loss(self.rec_B, self.real_B) * c.lambda_b
        total = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
        parts = {"G/gan_A": loss_G_A, "G/gan_B": loss_G_B, "G/cycle_A": loss_cycle_A, "G/cycle_B": loss_cycle_B}
        parts.update({"G/idt_A": loss_idt_A, "G/idt_B": loss_idt_B})
        return total, {key: value.detach() for key, value in parts.items()}

    def _loss_D_basic(
        self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One discriminator's loss (halved, as the reference does) with its penalties, and its logged values."""
        fake = fake.detach()
        seen = lambda images: self.regularizer.discriminate(D, images)  # noqa: E731
        pred_real, pred_fake = discriminate_pair(seen, self.config, real, fake)
        loss_real, loss_fake = self.gan_loss.discriminator(pred_real, pred_fake, self.config.real_label)
        penalty, metrics = self.regularizer.penalties(D, real, fake, self.step)
        return 0.5 * (loss_real + loss_fake) + penalty, {**self.regularizer.scores(pred_real, pred_fake), **metrics}

    def loss_D(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss_A, logged_A = self._loss_D_basic(self.networks["D_A"], self.real_B, self.pool_B.query(self.fake_B))
        loss_B, logged_B = self._loss_D_basic(self.networks["D_B"], self.real_A, self.pool_A.query(self.fake_A))
        # Both discriminators' values averaged under the shared names (D/real, D/accuracy_fake, D/gp ...).
        logged = {name: 0.5 * (logged_A[name] + logged_B[name]) for name in logged_A}
        return loss_A + loss_B, {"D/loss_A": loss_A.detach(), "D/loss_B": loss_B.detach(), **logged}

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {**super().extra_state(), **self.pool_A.state("pool_A"), **self.pool_B.state("pool_B")}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_extra_state(tensors)
        self.pool_A.load_state(tensors, "pool_A", self.device)
        self.pool_B.load_state(tensors, "pool_B", self.device)

    @torch.no_grad()
    def sample_grid(self, batch: dict[str, Any], networks: dict[str, nn.Module]) -> torch.Tensor:
        real_A, real_B = batch["A"].to(self.device), batch["B"].to(self.device)
        fake_B, fake_A = networks["G_A"](real_A), networks["G_B"](real_B)
        rows = [real_A, fake_B, networks["G_B"](fake_B), real_B, fake_A, networks["G_A"](fake_A)]
        return torch.cat([as_rgb(row) for row in rows])

    def model_file_kwargs(self) -> dict[str, Any]:
        # With --direction BtoA the dataset swaps the folders, so G_A maps the user's B to A.
        forward, backward = ("AtoB", "BtoA") if self.config.direction == "AtoB" else ("BtoA", "AtoB")
        return {
            "primary": "G_A",
            "directions": {forward: "G_A", backward: "G_B"},
            "extra": self.channels(),
        }
