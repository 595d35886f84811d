"""ProGAN on the shared trainer: resolution stages with fade-in, WGAN-GP plus drift, pixel norm, minibatch std."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transgan.errors import TransganError
from transgan.losses import adversarial_loss, drift_penalty
from transgan.nets import build_network
from transgan.nets.equalized import fade_images
from transgan.recipe import Recipe
from transgan.registry import TASKS
from transgan.stream import Stage
from transgan.tasks.base import Phase
from transgan.tasks.configs.progan import ProGANConfig
from transgan.tasks.generation import GenerationTask, as_rgb
from transgan.tasks.regularizers import DiscriminatorRegularizer, check_discriminator_options


def stage_batch_sizes(config: ProGANConfig, stages: int) -> list[int | None]:
    """The --stage-batch-sizes list, one entry per stage (None: the run's batch size)."""
    if not config.stage_batch_sizes.strip():
        return [None] * stages
    try:
        sizes = [int(value) for value in config.stage_batch_sizes.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) != stages or min(sizes) < 1:
        raise TransganError(
            f"--stage-batch-sizes {config.stage_batch_sizes}: give {stages} positive whole numbers, one per stage"
        )
    return sizes


def check_config(config: ProGANConfig) -> None:
    if config.stage_images < 1 or config.final_images < 1:
        raise TransganError(
            f"--stage-images {config.stage_images} / --final-images {config.final_images}: must be at least 1"
        )
    if not 0 <= config.fade_images <= min(config.stage_images, config.final_images):
        raise TransganError(
            f"--fade-images {config.fade_images}: must lie between 0 and --stage-images / --final-images"
        )
    if config.n_critic < 1 or config.drift < 0:
        raise TransganError("--n-critic must be at least 1; --drift 0 or positive")
    check_discriminator_options(config)


@TASKS.register("progan")
class ProGANTask(GenerationTask):
    """Progressive growing (Karras et al. 2018): stages from the base grid up to --image-size, each new one
    faded in; WGAN-GP with drift; the trainer picks the stage and alpha from the step."""

    name = "progan"
    config_class = ProGANConfig
    check_options = staticmethod(check_config)

    def __init__(self, config: ProGANConfig, dataset):
        super().__init__(config, dataset)
        shared, widths = self.network_shape(), config.widths()
        self.networks["G"] = build_network("progan_generator", latent_dim=config.latent_dim, **widths, **shared)
        self.networks["D"] = build_network(
            "progan_discriminator",
            **config.minibatch_std(),
            **widths,
            **shared,
        )
        self.num_stages = self.networks["G"].stages
        self.batch_sizes = stage_batch_sizes(config, self.num_stages)
        self.gan_loss = adversarial_loss("wasserstein")
        self.regularizer = DiscriminatorRegularizer(config, default_gp_weight=10.0)  # WGAN-GP, lambda 10
        self.stage = (self.num_stages - 1, 1.0)  # built fully grown; the trainer sets the stage before each step
        self.fix_grid_inputs()

    def recipe(self) -> Recipe:
        # ProGAN: Adam 0.001, betas (0, 0.99), G smoothing (EMA) 0.999. Its minibatch shrinks as resolution grows
        # (16 at 128 px and up); 32 suits the small images this CPU trains.
        return Recipe(lr={"G": 0.001, "D": 0.001}, betas=(0.0, 0.99), batch_size=32, epochs=100, ema=0.999)

    def stages(self) -> list[Stage]:
        config, G = self.config, self.networks["G"]
        return [
            Stage(
                resolution=G.stage_resolution(s),
                images=config.final_images if s == self.num_stages - 1 else config.stage_images,
                fade_images=config.fade_images if s > 0 else 0,
                batch_size=self.batch_sizes[s],
            )
            for s in range(self.num_stages)
        ]

    def set_stage(self, index: int, alpha: float) -> None:
        """Stage `index` (depth) and alpha on the live G and D. EMA copies need the same: see apply_stage."""
        self.stage = (int(index), float(alpha))
        for net in self.networks.values():
            self.apply_stage(net)

    def apply_stage(self, net: nn.Module) -> None:
        """Put a growing network (a live one or an EMA copy) at the current stage."""
        if hasattr(net, "set_stage"):
            net.set_stage(*self.stage)

    def phases(self) -> list[Phase]:
        return [
            Phase("D", ["D"], self.loss_D, "D"),
            Phase("G", ["G"], self.loss_G, "G", frozen=["D"], interval=self.config.n_critic),
        ]

    # -- one step -----------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> None:
        depth, alpha = self.stage
        real = batch["image"].to(self.device, non_blocking=True)
        factor = 2 ** (self.num_stages - 1 - depth)
        if factor > 1:  # reals at the stage's resolution (ProGAN's box-filter downscale)
            real = F.avg_pool2d(real, factor)
        # During a fade-in the reals lose their newest detail the way G's output does (lerp with the coarser one).
        self.real = fade_images(real, alpha) if depth > 0 else real
        self.labels = batch["label"].to(self.device).long() if self.num_classes else None
        G = self.networks["G"]
        self.z = G.sample_latent(self.real.shape[0]).to(self.device)
        self.fake = G(self.z, self.labels)

    def _D(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.regularizer.discriminate(self.networks["D"], images, labels)

    def loss_D(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        config, fake = self.config, self.fake.detach()
        pred_real, pred_fake = self._D(self.real, self.labels), self._D(fake, self.labels)
        loss_real, loss_fake = self.gan_loss.discriminator(pred_real, pred_fake)
        penalty, logged = self.regularizer.penalties(self.networks["D"], self.real, fake, self.step, self.labels)
        drift = drift_penalty(pred_real)
        loss = loss_real + loss_fake + penalty + config.drift * drift
        depth, alpha = self.stage
        scalar = lambda value: torch.tensor(float(value), device=self.device)  # noqa: E731
        return loss, {
            **self.regularizer.scores(pred_real, pred_fake),
            **logged,
            "D/drift": drift.detach(),
            # What D saw this step: the schedule's stage, alpha, resolution and batch.
            "stage/depth": scalar(depth),
            "stage/alpha": scalar(alpha),
            "stage/resolution": scalar(self.real.shape[-1]),
            "stage/batch": scalar(self.real.shape[0]),
        }

    def loss_G(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self.gan_loss.generator(self._D(self.fake, self.labels))
        metrics = {"G/gan": loss.detach()}
        return loss, {**metrics, **self.diversity()}

    # -- outputs ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_grid(self, batch: dict[str, Any], networks: dict[str, nn.Module]) -> torch.Tensor:
        G = networks["G"]
        self.apply_stage(G)  # the EMA copy too: the trainer stages only the live networks
        images = G(*self.grid_inputs())
        size = self.config.image_size
        if images.shape[-1] != size:  # grids of every stage at one size, so they compare side by side
            images = F.interpolate(images, size=(size, size), mode="nearest")
        return as_rgb(images)
