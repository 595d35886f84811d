"""CUT and FastCUT (Park et al., ECCV 2020): unpaired translation with one generator, a PatchGAN and a
patch-wise contrastive (PatchNCE) loss between input and output features, following the official code."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from transgan.errors import TransganError
from transgan.losses import patch_nce_loss
from transgan.nets import build_network, network_options
from transgan.nets.patch_sample import PatchSampleF
from transgan.recipe import Recipe
from transgan.registry import TASKS
from transgan.tasks.base import Phase
from transgan.tasks.configs.cut import CUTConfig, FastCUTConfig, parse_layers
from transgan.tasks.translation import (
    TranslationTask,
    as_rgb,
    check_input_size,
    discriminate_pair,
    per_sample,
    unaligned_dataset,
)

# The official schedules: CUT 200 epochs at lr 2e-4 then 200 of linear decay, FastCUT 150 + 50.
CUT_RECIPE = Recipe(epochs=200, decay_epochs=200, lr_policy="linear")
FASTCUT_RECIPE = Recipe(epochs=150, decay_epochs=50, lr_policy="linear")
# --no-antialias also takes the blur-pool out of the PatchGAN, as in the official code.
ANTIALIASED_D = {"basic": "basic_antialias", "n_layers": "n_layers_antialias"}


@TASKS.register("cut")
class CUTTask(TranslationTask):
    """Contrastive Unpaired Translation: G (A -> B), D (PatchGAN on B) and F (PatchNCE's MLP heads)."""

    name = "cut"
    config_class = CUTConfig
    config: CUTConfig

    @classmethod
    def build_dataset(cls, config: CUTConfig):
        if config.nce_idt and config.input_nc != config.output_nc:
            raise TransganError("--nce-idt feeds domain B images to G: it needs --input-nc equal to --output-nc")
        return unaligned_dataset(config)

    def __init__(self, config: CUTConfig, dataset):
        super().__init__(config, dataset)
        c = config
        G = self.networks["G"] = _build(
            c.arch, input_nc=c.input_nc, output_nc=c.output_nc, ngf=c.ngf, norm=c.norm, dropout=c.dropout,
            init=c.init, init_gain=c.init_gain, antialias=c.antialias, antialias_up=c.antialias_up,
        )  # fmt: skip
        if not all(hasattr(G, method) for method in ("encode", "forward_and_encode", "feature_widths")):
            raise TransganError(f"--arch {c.arch}: CUT taps the encoder's layers; use a resnet generator")
        self.nce_layers = parse_layers(c.nce_layers)
        if self.nce_layers[-1] >= len(G.model):
            raise TransganError(
                f"--nce-layers {c.nce_layers}: {c.arch} has layers 0..{len(G.model) - 1}; official 0,4,8,12,16"
            )
        self.networks["D"] = _build(
            ANTIALIASED_D.get(c.netd, c.netd) if c.antialias else c.netd,
            input_nc=c.output_nc, ndf=c.ndf, n_layers=c.n_layers_d, norm=c.norm, spectral_norm=c.spectral_norm,
            init=c.init, init_gain=c.init_gain, mbstd_group_size=c.mbstd_group_size,
        )  # fmt: skip
        # Built now from the encoder's widths (the official code builds them on the first batch), so the
        # optimizer, EMA, DDP and checkpoints hold them from step 0.
        self.networks["F"] = PatchSampleF(G.feature_widths(self.nce_layers), c.netf_nc, c.init, c.init_gain)
        self.build_loss()
        # Random flips and patch positions come from (seed, step): every process draws the same ones (the
        # ids are shared by the images of the global batch) and a resumed run draws what it would have.
        self.draw_seed = torch.initial_seed()
        self._draws = torch.Generator()

    def recipe(self) -> Recipe:
        return CUT_RECIPE

    def phases(self) -> list[Phase]:
        # The official order: D on the fakes of this step, then G (and F) against the D just updated.
        return [
            Phase("D", ["D"], self.loss_D, "D"),
            Phase("G", ["G", "F"], self.loss_G, "G", frozen=["D"]),
        ]

    def ema_networks(self) -> list[str]:
        return ["G"]

    # -- random draws (one generator per step; tests replay recorded draws through these two) --------
    def draw_flip(self) -> bool:
        """Whether this step flips its inputs (FastCUT's flip equivariance), with probability 1/2."""
        return bool(torch.rand((), generator=self._draws) < 0.5)

    def draw_patch_ids(self, positions: int) -> torch.Tensor:
        """Which of a layer's `positions` (H * W) to sample: num_patches distinct ones, at most all."""
        return torch.randperm(positions, generator=self._draws)[: min(self.config.num_patches, positions)]

    # -- the step -----------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> None:
        c, G = self.config, self.networks["G"]
        self._draws.manual_seed((self.draw_seed * 1_000_003 + self.step) % 2**63)
        real_A = self.real_A = batch["A"].to(self.device, non_blocking=True)
        self.real_B = batch["B"].to(self.device, non_blocking=True)
        check_input_size(real_A, G, c.arch)
        real = torch.cat([real_A, self.real_B]) if c.nce_idt else real_A
        self.flipped = c.flip_equivariance and self.draw_flip()
        if self.flipped:
            real = real.flip(3)
        n, self.keys_A, self.keys_B = real_A.shape[0], None, None
        if c.lambda_nce > 0 and not self.flipped and per_sample(c):
            # The PatchNCE keys are G's encoder features of real_A (and real_B): this very pass computes them,
            # image by image with a per-sample norm, so take them here instead of encoding the inputs again.
            fake, features = G.forward_and_encode(real, self.nce_layers)
            self.keys_A = [feature[:n].detach() for feature in features]
            self.keys_B = [feature[n:].detach() for feature in features] if c.nce_idt else None
        else:
            fake = G(real)
        self.fake_B, self.idt_B = fake[:n], (fake[n:] if c.nce_idt else None)

    def loss_D(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        D = self.networks["D"]
        real, fake = self.real_B, self.fake_B.detach()
        seen = lambda images: self.regularizer.discriminate(D, images)  # noqa: E731
        pred_real, pred_fake = discriminate_pair(seen, self.config, real, fake)
        loss_real, loss_fake = self.gan_loss.discriminator(pred_real, pred_fake, self.config.real_label)
        penalty, metrics = self.regularizer.penalties(D, real, fake, self.step)
        logged = {"D/loss_real": loss_real.detach(), "D/loss_fake": loss_fake.detach(), **metrics}
        return 0.5 * (loss_real + loss_fake) + penalty, {**logged, **self.regularizer.scores(pred_real, pred_fake)}

    def loss_G(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        zero = torch.zeros((), device=self.device)
        loss_gan = zero
        if c.lambda_gan > 0:
            pred_fake = self.regularizer.discriminate(self.networks["D"], self.fake_B)
            loss_gan = self.gan_loss.generator(pred_fake) * c.lambda_gan
        loss_nce = loss_nce_idt = zero
        if c.lambda_nce > 0:
            loss_nce = self.nce_loss(self.real_A, self.fake_B, self.keys_A)
            if c.nce_idt:
                loss_nce_idt = self.nce_loss(self.real_B, self.idt_B, self.keys_B)
        both = 0.5 * (loss_nce + loss_nce_idt) if c.nce_idt else loss_nce
        logged = {"G/gan": loss_gan, "G/nce": loss_nce, **({"G/nce_idt": loss_nce_idt} if c.nce_idt else {})}
        return loss_gan + both, {key: value.detach() for key, value in logged.items()}

    def nce_loss(self, src: torch.Tensor, tgt: torch.Tensor, feat_k: list[torch.Tensor] | None) -> torch.Tensor:
        """PatchNCE between G's encoder features of the input `src` (keys; `feat_k` when the forward pass kept
        them) and of its translation `tgt` (queries), averaged over the layers and weighted by lambda_nce."""
        c, G, F = self.config, self.networks["G"], self.networks["F"]
        feat_q = G.encode(tgt, self.nce_layers)
        if self.flipped:  # tgt was made from a flipped input: flip its features back to line up with src's
            feat_q = [feature.flip(3) for feature in feat_q]
        with torch.no_grad():  # the loss takes no gradient through the keys: skip their graph
            if feat_k is None:
                feat_k = G.encode(src, self.nce_layers)
            patch_ids = [self.draw_patch_ids(feature.shape[2] * feature.shape[3]) for feature in feat_k]
            f_k = F(feat_k, patch_ids)
        f_q = F(feat_q, patch_ids)
        images = 1 if c.nce_all_negatives else src.shape[0]
        total = sum(patch_nce_loss(q, k, images, c.nce_t).mean() * c.lambda_nce for q, k in zip(f_q, f_k))
        return total / len(self.nce_layers)

    # -- outputs ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_grid(self, batch: dict[str, Any], networks: dict[str, nn.Module]) -> torch.Tensor:
        real_A, real_B = batch["A"].to(self.device), batch["B"].to(self.device)
        rows = [real_A, networks["G"](real_A), real_B]
        if self.config.input_nc == self.config.output_nc:
            rows.append(networks["G"](real_B))  # what the identity loss keeps close to real_B
        return torch.cat([as_rgb(row) for row in rows])

    def inference_networks(self) -> list[str]:
        return ["G"]  # D and the MLP heads stay in training checkpoints

    def model_file_kwargs(self) -> dict[str, Any]:
        # With --direction BtoA the dataset swaps the folders, so G maps the user's B to A.
        return {"primary": "G", "directions": {self.config.direction: "G"}, "extra": self.channels()}


@TASKS.register("fastcut")
class FastCUTTask(CUTTask):
    """FastCUT: CUT without the identity PatchNCE loss, with lambda_nce 10 and flip equivariance; shorter."""

    name = "fastcut"
    config_class = FastCUTConfig

    def recipe(self) -> Recipe:
        return FASTCUT_RECIPE


def _build(arch: str, **options: Any) -> nn.Module:
    # Families differ in options (the PatchGAN has no antialias switch): pass each one only what it takes.
    accepted = network_options(arch)
    return build_network(arch, **{key: value for key, value in options.items() if key in accepted})
