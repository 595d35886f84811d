"""Class-conditional and unconditional image generation (cDCGAN, CBN + projection, ACGAN, InfoGAN, WGAN-GP)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from transgan.errors import TransganError
from transgan.inference.sampling import class_index, generate, generator_of, interpolate  # noqa: F401 (re-exported)
from transgan.losses import adversarial_loss, decision_threshold
from transgan.nets import build_network
from transgan.recipe import Recipe
from transgan.registry import TASKS
from transgan.tasks.base import Phase
from transgan.tasks.configs.cgan import CGANConfig
from transgan.tasks.generation import GenerationTask, within_class_spread  # noqa: F401
from transgan.tasks.regularizers import DiscriminatorRegularizer, check_discriminator_options

# Loss names of this task -> the registered adversarial loss; wgan-gp adds the gradient penalty.
LOSS_ALIASES = {"wgan-gp": "wasserstein", "wgan": "wasserstein"}


def loss_name(config: CGANConfig) -> str:
    """The registered adversarial loss the options name (auto: the arch's published one)."""
    chosen = ARCHS[config.arch].loss if config.loss == "auto" else config.loss
    return LOSS_ALIASES.get(chosen, chosen)


def uses_gp(config: CGANConfig) -> bool:
    return config.loss == "wgan-gp"


def _cbn_networks(config: CGANConfig, num_classes: int, shared: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    codes = {"info_categorical": config.info_categorical, "info_continuous": config.info_continuous}
    G = build_network("cbn_generator", latent_dim=config.latent_dim, ngf=config.ngf, **codes, **shared)
    aux = num_classes if config.aux_weight > 0 else 0
    D = build_network(
        "projection_discriminator",
        ndf=config.ndf,
        projection=config.projection,
        aux_classes=aux,
        mbstd_group_size=config.mbstd_group_size,
        **codes,
        **shared,
    )
    return G, D


def _dcgan_networks(config: CGANConfig, num_classes: int, shared: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    penalised = uses_gp(config) or bool(config.gp_weight)
    d_norm = config.d_norm if config.d_norm != "auto" else ("none" if penalised else "batch")
    if penalised and d_norm == "batch":
        raise TransganError("a gradient penalty needs a critic without batch norm: use --d-norm none or instance")
    G = build_network(
        "dcgan_generator", latent_dim=config.latent_dim, ngf=config.ngf, embed_dim=config.embed_dim, **shared
    )
    D = build_network(
        "dcgan_discriminator", ndf=config.ndf, norm=d_norm, mbstd_group_size=config.mbstd_group_size, **shared
    )
    return G, D


@dataclass(frozen=True)
class CGANArch:
    """One --arch of cgan: how it builds G and D, whether D has the ACGAN/InfoGAN heads, its optimizer."""

    build: Callable[[CGANConfig, int, dict[str, Any]], tuple[nn.Module, nn.Module]]
    heads: bool
    loss: str
    lr: dict[str, float]
    betas: tuple[float, float]


ARCHS = {
    # Radford et al. (with Mirza & Osindero's label input): the default, it learns MNIST in minutes on a CPU.
    "dcgan": CGANArch(_dcgan_networks, heads=False, loss="vanilla", lr={"G": 2e-4, "D": 2e-4}, betas=(0.5, 0.999)),
    # SNGAN/BigGAN-style: TTUR (Heusel et al.), D learns faster than G; beta1 0. About 5x dcgan's cost per step.
    "cbn": CGANArch(_cbn_networks, heads=True, loss="hinge", lr={"G": 1e-4, "D": 4e-4}, betas=(0.0, 0.999)),
}


def check_config(config: CGANConfig) -> None:
    if config.arch not in ARCHS:
        raise TransganError(f"--arch {config.arch}: unknown; use one of {', '.join(ARCHS)}")
    adversarial_loss(loss_name(config))  # unknown names raise one line listing the known ones
    uses_heads = config.aux_weight > 0 or config.info_categorical or config.info_continuous
    if not ARCHS[config.arch].heads and uses_heads:
        raise TransganError("--aux-weight and --info-* (ACGAN, InfoGAN) need --arch cbn")
    if config.aux_weight > 0 and not config.conditional:
        raise TransganError("--aux-weight (ACGAN) needs class labels; drop --no-conditional")
    if config.n_critic < 0:
        raise TransganError(f"--n-critic {config.n_critic}: must be 1 or more (0: the loss's default)")
    if config.mode_seeking < 0:
        raise TransganError(f"--mode-seeking {config.mode_seeking}: must be 0 (off) or positive (e.g. 1)")
    check_discriminator_options(config)


@TASKS.register("cgan")
class CGANTask(GenerationTask):
    """Class-conditional or unconditional image generation (cgan: CBN + projection D, cDCGAN, WGAN-GP)."""

    name = "cgan"
    config_class = CGANConfig
    check_options = staticmethod(check_config)

    def __init__(self, config: CGANConfig, dataset):
        super().__init__(config, dataset)
        self.networks["G"], self.networks["D"] = ARCHS[config.arch].build(
            config, self.num_classes, self.network_shape()
        )
        self.gan_loss = adversarial_loss(loss_name(config))
        self.regularizer = DiscriminatorRegularizer(
            config, decision_threshold(self.gan_loss), default_gp_weight=10.0 if uses_gp(config) else 0.0
        )
        self.n_critic = config.n_critic or (5 if uses_gp(config) else 1)
        self.fix_grid_inputs()

    def recipe(self) -> Recipe:
        arch = ARCHS[self.config.arch]
        lr, betas = arch.lr, arch.betas
        if uses_gp(self.config):  # Gulrajani et al.
            lr, betas = {"G": 1e-4, "D": 1e-4}, (0.0, 0.9)
        # Batch 64; G's EMA 0.999 with StyleGAN2-ADA's ramp-up, so a run of minutes is not averaged back toward
        # its random start (measured on MNIST in 15 CPU minutes: README "Measured on MNIST").
        return Recipe(lr=lr, betas=betas, batch_size=64, epochs=100, ema=0.999, ema_rampup=0.05)

    def phases(self) -> list[Phase]:
        return [
            Phase("D", ["D"], self.loss_D, "D"),
            Phase("G", ["G"], self.loss_G, "G", frozen=["D"], interval=self.n_critic),
        ]

    # -- one step -----------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> None:
        self.real = batch["image"].to(self.device, non_blocking=True)
        # Fakes use the batch's own labels: D compares real and fake of the same class mix, and the
        # gradient penalty's interpolates have one meaningful label each.
        self.labels = batch["label"].to(self.device).long() if self.num_classes else None
        self.z = self.networks["G"].sample_latent(self.real.shape[0]).to(self.device)
        self.fake = self.networks["G"](self.z, self.labels)

    def _heads(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """D's logit and its shared features (for the ACGAN and InfoGAN heads), of the images as D sees them
        (DiffAugment'ed when a policy is set)."""
        D = self.networks["D"]
        images = self.regularizer.view(images)
        if hasattr(D, "features"):
            h = D.features(images)
            return D.score(h, self.labels), h
        return D(images, self.labels), images

    def _info_loss(self, h: torch.Tensor) -> torch.Tensor:
        """InfoGAN's mutual-information lower bound (negated): cross-entropy + Gaussian fit of the codes."""
        config, D = self.config, self.networks["D"]
        predicted = D.codes(h).float()
        loss = torch.zeros((), device=h.device)
        if config.info_categorical:
            target = self.z[:, : config.info_categorical].argmax(1)
            loss = loss + F.cross_entropy(predicted[:, : config.info_categorical], target)
        if config.info_continuous:
            # Unit-variance Gaussian: the log-likelihood is a squared error up to a constant.
            codes = slice(config.info_categorical, config.info_categorical + config.info_continuous)
            loss = loss + 0.5 * F.mse_loss(predicted[:, codes], self.z[:, codes].float())
        return loss * config.info_weight

    def loss_D(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        config, D = self.config, self.networks["D"]
        fake = self.fake.detach()
        pred_real, h_real = self._heads(self.real)
        pred_fake, h_fake = self._heads(fake)
        loss_real, loss_fake = self.gan_loss.discriminator(pred_real, pred_fake, config.real_label)
        labels = [self.labels] if self.num_classes else []
        penalty, logged = self.regularizer.penalties(D, self.real, fake, self.step, *labels)
        loss = loss_real + loss_fake + penalty
        metrics = {**self.regularizer.scores(pred_real, pred_fake), **logged}
        if config.aux_weight > 0:
            # ACGAN: the classifier learns the class of real and of generated images.
            aux_real = F.cross_entropy(D.classify(h_real).float(), self.labels)
            aux_fake = F.cross_entropy(D.classify(h_fake).float(), self.labels)
            loss = loss + config.aux_weight * (aux_real + aux_fake)
            metrics["D/aux"] = aux_real.detach()
        if config.info_categorical or config.info_continuous:
            info = self._info_loss(h_fake)
            loss = loss + info
            metrics["D/info"] = info.detach()
        return loss, metrics

    def loss_G(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        config, D = self.config, self.networks["D"]
        pred_fake, h_fake = self._heads(self.fake)
        loss_gan = self.gan_loss.generator(pred_fake)
        loss, metrics = loss_gan, {"G/gan": loss_gan.detach()}
        if config.aux_weight > 0:
            aux = F.cross_entropy(D.classify(h_fake).float(), self.labels)
            loss = loss + config.aux_weight * aux
            metrics["G/aux"] = aux.detach()
        if config.info_categorical or config.info_continuous:
            info = self._info_loss(h_fake)
            loss = loss + info
            metrics["G/info"] = info.detach()
        if config.mode_seeking > 0:
            # A second sample of each class with other noise (MSGAN): G pays when it maps both to one image.
            G, n = self.networks["G"], self.real.shape[0]
            z2 = G.sample_latent(n).to(self.device)
            ratio = mode_seeking_ratio(self.fake, G(z2, self.labels), self.z, z2)
            loss = loss + config.mode_seeking / (ratio + 1e-5)
            metrics["G/mode_seeking_ratio"] = ratio.detach()
        return loss, {**metrics, **self.diversity()}

    # -- outputs ------------------------------------------------------------------------------------
    def model_file_kwargs(self) -> dict[str, Any]:
        kwargs = super().model_file_kwargs()
        G = self.networks["G"]
        kwargs["extra"].update(info_categorical=G.info_categorical, info_continuous=G.info_continuous)
        return kwargs


# -- using a trained model (what `transgan generate` calls) -------------------------------------------
def mode_seeking_ratio(fake: torch.Tensor, fake2: torch.Tensor, z: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Mean image distance over mean noise distance of two samples per label (MSGAN, Mao et al. 2019).

    G minimises its inverse: a generator that maps different noise to the same image pays for it.
    """
    return (fake - fake2).float().abs().mean() / (z - z2).float().abs().mean()


@torch.no_grad()
def standing_statistics(G: nn.Module, batches: int = 50, batch_size: int = 100, seed: int = 0) -> nn.Module:
    """Recompute G's batch-norm running statistics from its own samples (BigGAN's "standing stats"), in place.

    An EMA generator's weights are an average while its BN buffers are copied from the live generator, so in
    eval mode it normalises with statistics of different weights; re-estimating them with the EMA weights
    fixes that (see pretrained/mnist-cgan.md for its effect).
    """
    G = generator_of(G)
    norms = [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over all the batches below
    device = next(G.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    G.train()
    for _ in range(batches):
        z = G.sample_latent(batch_size, generator).to(device)
        labels = torch.randint(0, max(G.num_classes, 1), (batch_size,), generator=generator).to(device)
        G(z, labels if G.num_classes else None)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return G.eval()
