"""StyleGAN2 on the shared trainer, as StyleGAN2-ADA trains it: phases Gmain, Greg (path length, lazy), Dmain,
Dreg (R1, lazy) sharing each network's Adam, fresh latents per phase, fake labels drawn from the dataset."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from transgan import distributed
from transgan.nets import build_network
from transgan.recipe import Recipe
from transgan.registry import TASKS
from transgan.tasks.base import Phase
from transgan.tasks.configs.stylegan import StyleGANConfig, apply_cfg, check_stylegan_config
from transgan.tasks.generation import GenerationTask, within_class_spread
from transgan.tasks.regularizers import DiscriminatorRegularizer, check_discriminator_options

__all__ = ["PhaseDraws", "StyleGANConfig", "StyleGANTask"]

STYLEGAN2_BETAS = (0.0, 0.99)
PL_DECAY = 0.01  # StyleGAN2's running-mean rate of the path lengths
PHASES = ("Gmain", "Greg", "Dmain", "Dreg")


def check_config(config: StyleGANConfig) -> None:
    check_discriminator_options(config)
    check_stylegan_config(config)


class PhaseDraws:
    """The random numbers of one phase, drawn for the GLOBAL batch from a generator seeded by (run, step, phase)
    and sliced to this process's share: N processes draw what one process with the combined batch draws.
    Tests replace a task's `new_draws` to feed recorded draws instead."""

    def __init__(self, seed: int, rank: int, world_size: int, device: torch.device, latent_dim: int, labels):
        self.generator = torch.Generator(device).manual_seed(seed)
        self.rank, self.world_size, self.device = rank, world_size, device
        self.latent_dim, self.label_table = latent_dim, labels

    def normal(self, n: int, *shape: int) -> Tensor:
        full = torch.randn(self.world_size * n, *shape, generator=self.generator, device=self.device)
        return full[self.rank * n : (self.rank + 1) * n]

    def z(self, n: int) -> Tensor:
        return self.normal(n, self.latent_dim)

    def labels(self, n: int) -> Tensor | None:
        """Labels of dataset items drawn uniformly (the official loop's get_label(randint(len)))."""
        if self.label_table is None:
            return None
        table = self.label_table
        index = torch.randint(len(table), (self.world_size * n,), generator=self.generator, device=self.device)
        return table[index[self.rank * n : (self.rank + 1) * n]]

    def mixing(self, num_ws: int) -> tuple[int, float]:
        """(crossover in [1, num_ws), uniform draw): mixing happens when the draw is below the probability."""
        crossover = torch.randint(1, num_ws, (), generator=self.generator, device=self.device)
        return int(crossover), float(torch.rand((), generator=self.generator, device=self.device))

    def noises(self, n: int, resolutions: list[int]) -> list[Tensor]:
        return [self.normal(n, 1, r, r) for r in resolutions]


@TASKS.register("stylegan")
class StyleGANTask(GenerationTask):
    """StyleGAN2 (conditional or not) as StyleGAN2-ADA trains it: logistic loss, lazy R1 and path length, mixing."""

    name = "stylegan"
    config_class = StyleGANConfig
    check_options = staticmethod(check_config)

    def __init__(self, config: StyleGANConfig, dataset):
        super().__init__(config, dataset)
        # `resolved`: the options with --cfg applied (the user's config stays in self.config).
        config, self.spec = apply_cfg(config)
        self.resolved = config
        shared, widths = self.network_shape(), config.widths()
        precision = dict(num_fp16_res=config.num_fp16_res, conv_clamp=config.conv_clamp or None)
        self.networks["G"] = build_network(
            "stylegan2_generator", latent_dim=config.latent_dim, w_dim=config.w_dim,
            mapping_layers=config.mapping_layers, mapping_lr_mul=config.mapping_lr_mul,
            architecture=config.architecture_g, w_avg_per_class=config.w_avg_per_class,
            **widths, **shared, **precision,
        )  # fmt: skip
        mbstd = config.minibatch_std()
        self.networks["D"] = build_network(
            "stylegan2_discriminator", architecture=config.architecture_d, **widths, **shared, **precision, **mbstd
        )
        # DiffAugment/ADA and WGAN-GP from the shared options; R1 runs in its own phase (Dreg), not in there.
        self.regularizer = DiscriminatorRegularizer(replace(config, r1_gamma=0.0), 0.0)
        self.pl_mean = torch.zeros(())  # training state, saved in checkpoints
        self.label_table = torch.tensor(list(dataset.labels)) if self.num_classes else None
        self.noise_mode = "given"  # synthesis noise from the phase's draws (tests set "const", as the kit)
        self.draw_seed = int(torch.randint(2**62, ()))  # from the run's seed: the same in every process
        self.fix_grid_inputs()

    def recipe(self) -> Recipe:
        spec = self.spec
        # The EMA's half-life is ema_kimg * 1000 images whatever the batch (the decay per step follows the global
        # batch); `ema` is that decay at the recipe's batch, shown in the plan and used for the EMA's presence.
        half_life = spec.ema_kimg * 1000
        ema = 0.5 ** (spec.batch_size / half_life)
        lr = {"G": spec.lr, "D": spec.lr}
        return Recipe(lr=lr, betas=STYLEGAN2_BETAS, batch_size=spec.batch_size, epochs=100, ema=ema,
                      ema_rampup=spec.ema_rampup, ema_half_life_images=half_life)  # fmt: skip

    def r1_gamma(self, batch_size: int | None = None) -> float:
        """R1's gamma: --r1-gamma, else the --cfg's, else 0.0002 * res^2 / GLOBAL batch (official 'auto')."""
        if self.config.r1_gamma is not None:
            return float(self.config.r1_gamma)
        if self.spec.r1_gamma is not None:
            return self.spec.r1_gamma
        per_process = self.real.shape[0] if batch_size is None else batch_size
        return 0.0002 * self.config.image_size**2 / (per_process * self.world_size)

    def phases(self) -> list[Phase]:
        config, common = self.resolved, dict(zero_nonfinite_grads=True)
        phases = [Phase("Gmain", ["G"], self.loss_Gmain, "G", frozen=["D"], optimizer="G", **common)]
        if config.pl_weight > 0:
            phases.append(Phase("Greg", ["G"], self.loss_Greg, "G", [], config.pl_every, "G", True, **common))
        phases.append(Phase("Dmain", ["D"], self.loss_Dmain, "D", frozen=["G"], optimizer="D", **common))
        if config.r1_gamma != 0:
            phases.append(Phase("Dreg", ["D"], self.loss_Dreg, "D", ["G"], config.r1_every, "D", True, **common))
        return phases

    # -- one step -----------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> None:
        self.real = batch["image"].to(self.device, non_blocking=True)
        self.labels = batch["label"].to(self.device).long() if self.num_classes else None

    def new_draws(self, phase: str) -> PhaseDraws:
        """The draws of `phase` at this step (the same in every process, sliced per rank)."""
        seed = (self.draw_seed + self.step * 1_000_003 + PHASES.index(phase) * 7_919) % 2**63
        if self.label_table is not None and self.label_table.device != self.device:
            self.label_table = self.label_table.to(self.device)  # once, not per phase
        latent_dim = self.networks["G"].latent_dim
        return PhaseDraws(seed, self.rank, self.world_size, self.device, latent_dim, self.label_table)

    def _run_G(self, draws: PhaseDraws, n: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Images, ws and labels of n fakes; w_avg follows their w (over every process); mixing as official."""
        G = self.networks["G"]
        z, c = draws.z(n), draws.labels(n)
        ws = G.mapping(z, c, update_w_avg=False)
        self._track_w_avg(ws[:, 0].detach(), c)
        if self.resolved.mixing_prob > 0:
            crossover, u = draws.mixing(G.num_ws)
            z_mix = draws.z(n)  # drawn whether or not this batch mixes, as the official loss
            if u < self.resolved.mixing_prob:
                ws = G.mix(ws, G.mapping(z_mix, c, update_w_avg=False), crossover)
        noises = draws.noises(n, G.noise_resolutions) if self.noise_mode == "given" else None
        return G.synthesis(ws, self.noise_mode, noises), ws, c

    def _track_w_avg(self, w: Tensor, labels: Tensor | None) -> None:
        mapping = self.networks["G"].mapping
        sums, counts = mapping.w_sums(w, labels)
        if self.world_size > 1:
            sums, counts = distributed.all_reduce_sum(sums), distributed.all_reduce_sum(counts)
        mapping.update_w_avg(sums, counts)

    def _D(self, images: Tensor, labels: Tensor | None) -> Tensor:
        """D's logits of images as D sees them (DiffAugment'ed or ADA'ed when asked, differentiably)."""
        return self.regularizer.discriminate(self.networks["D"], images, labels)

    def loss_Gmain(self) -> tuple[Tensor, dict[str, Tensor]]:
        img, _, c = self._run_G(self.new_draws("Gmain"), self.real.shape[0])
        logits = self._D(img, c)
        loss = F.softplus(-logits).mean()
        # loss/G and loss/D as every task logs them (health.py reads them), besides the trainer's per-phase keys.
        metrics = {"loss/G": loss.detach(), "G/fake_score": logits.detach().mean()}
        if self.real.shape[0] > 1:
            spread = within_class_spread(img.detach(), c, self.num_classes)
            metrics["health/diversity"] = spread / within_class_spread(self.real, self.labels, self.num_classes).clamp(
                min=1e-8
            )
        return loss, metrics

    def loss_Greg(self) -> tuple[Tensor, dict[str, Tensor]]:
        """Path length (unweighted by the interval: the trainer's lazy gain applies it)."""
        draws = self.new_draws("Greg")
        img, ws, _ = self._run_G(draws, max(self.real.shape[0] // self.resolved.pl_batch_shrink, 1))
        noise = draws.normal(img.shape[0], *img.shape[1:]) / math.sqrt(img.shape[2] * img.shape[3])
        (grads,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()
        penalty, correction = self._pl_penalty(lengths)
        weight = self.resolved.pl_weight
        # 0 * img: parameters off the path-length graph get a zero gradient, not none (as the official Greg).
        loss = (img[:, 0, 0, 0] * 0 + penalty * weight).mean() + correction * weight
        return loss, {"G/pl": penalty.mean().detach(), "G/pl_mean": self.pl_mean}

    def _pl_penalty(self, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(lengths - lerp(pl_mean, mean length, 0.01))^2, the running mean NOT detached inside (official), over
        the global batch; with several processes, a zero-valued term supplies the other processes' share of the
        mean's gradient, so the averaged gradients equal one process's on the combined batch."""
        mean, count, correction = lengths.mean(), lengths.shape[0] * self.world_size, lengths.sum() * 0
        if self.world_size > 1:
            local = lengths.detach().sum()
            mean = (lengths.sum() + distributed.all_reduce_sum(local) - local) / count
        pl_mean = torch.lerp(self.pl_mean.to(lengths.device), mean, PL_DECAY)
        self.pl_mean = pl_mean.detach()
        penalty = (lengths - pl_mean).square()
        if self.world_size > 1:
            local_sum = (lengths - pl_mean).detach().sum()
            others = distributed.all_reduce_sum(local_sum) - local_sum
            scale = -2 * PL_DECAY * self.world_size * others / count**2
            correction = scale * (lengths.sum() - lengths.detach().sum())
        return penalty, correction

    def loss_Dmain(self) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():  # G is frozen here: no graph through it
            fake, _, c = self._run_G(self.new_draws("Dmain"), self.real.shape[0])
        pred_fake, pred_real = self._D(fake, c), self._D(self.real, self.labels)
        loss = F.softplus(pred_fake).mean() + F.softplus(-pred_real).mean()
        penalty, logged = self.regularizer.penalties(self.networks["D"], self.real, fake, self.step, self.labels)
        metrics = {"loss/D": loss.detach(), **self.regularizer.scores(pred_real, pred_fake), **logged}
        return loss + penalty, metrics

    def loss_Dreg(self) -> tuple[Tensor, dict[str, Tensor]]:
        """R1 (unweighted by the interval), its gradient taken through the augmentation, as the official Dreg."""
        real = self.real.detach().requires_grad_(True)
        pred = self._D(real, self.labels)
        (grads,) = torch.autograd.grad(pred.sum(), real, create_graph=True)
        penalty = grads.square().sum(dim=[1, 2, 3])
        gamma = self.r1_gamma()
        if getattr(self.regularizer, "ada", None) is not None:
            self.regularizer.ada.observe(pred, 0.0)  # ADA's r_t counts the R1 passes' reals too (official)
        loss = (pred * 0 + penalty * (gamma / 2)).mean()
        return loss, {"D/r1": (penalty * (gamma / 2)).mean().detach(), "D/r1_penalty": penalty.mean().detach()}

    # -- state that is not a parameter ---------------------------------------------------------------
    def extra_state(self) -> dict[str, torch.Tensor]:
        return {**super().extra_state(), "pl_mean": self.pl_mean.detach().float().cpu()}

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_extra_state(tensors)
        if "pl_mean" in tensors:
            self.pl_mean = tensors["pl_mean"].float().reshape(()).to(self.device)
