"""What pix2pix and cyclegan share: their common options, network building, data and display helpers."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from transgan.errors import TransganError
from transgan.losses import adversarial_loss, decision_threshold
from transgan.nets import build_network, network_options
from transgan.recipe import Recipe
from transgan.tasks.base import GANTask
from transgan.tasks.configs.shared import TranslationConfig, check_image_options  # noqa: F401 (re-exported)
from transgan.tasks.freeze import frozen_d_parameters
from transgan.tasks.regularizers import DiscriminatorRegularizer

# The reference's schedule for both tasks: 100 epochs at the initial rate, then 100 of linear decay to 0;
# Adam with lr 2e-4 and beta1 0.5 for G and D; batch size 1.
REFERENCE_RECIPE = Recipe(epochs=100, decay_epochs=100, lr_policy="linear")


class TranslationTask(GANTask):
    """What the translation tasks share: the reference's recipe and the channel counts their model files keep."""

    config: TranslationConfig

    def recipe(self) -> Recipe:
        return REFERENCE_RECIPE

    def build_loss(self) -> None:
        """The adversarial loss and the discriminator regularisers the options ask for (WGAN-GP by default
        with a Wasserstein loss)."""
        self.gan_loss = adversarial_loss(self.config.gan_loss)
        wasserstein = self.config.gan_loss == "wasserstein"
        self.regularizer = DiscriminatorRegularizer(
            self.config, decision_threshold(self.gan_loss), default_gp_weight=10.0 if wasserstein else 0.0
        )

    def channels(self) -> dict[str, int]:
        """input_nc and output_nc, as model files keep them."""
        return {"input_nc": self.config.input_nc, "output_nc": self.config.output_nc}

    def frozen_parameters(self) -> list[nn.Parameter]:
        """--freeze-d N: the first N blocks of each discriminator."""
        return frozen_d_parameters(self.networks, self.config.freeze_d)


def _build(arch: str, **options: Any) -> nn.Module:
    # Families differ in options (mobile_resnet has `channels`, not `ngf`): pass each one only what it takes.
    accepted = network_options(arch)
    return build_network(arch, **{key: value for key, value in options.items() if key in accepted})


def translation_generator(config: TranslationConfig, input_nc: int, output_nc: int) -> nn.Module:
    """The generator --arch with the config's width, norm, dropout and init."""
    return _build(
        config.arch,
        input_nc=input_nc,
        output_nc=output_nc,
        ngf=config.ngf,
        norm=config.norm,
        dropout=config.dropout,
        init=config.init,
        init_gain=config.init_gain,
    )


def translation_discriminator(config: TranslationConfig, input_nc: int) -> nn.Module:
    """The discriminator --netd with the config's width, layers, norm and init."""
    if config.mbstd_group_size and "mbstd_group_size" not in network_options(config.netd):
        # _build drops options a network does not take; this one would then do nothing without a word.
        raise TransganError(
            f"--mbstd-group-size {config.mbstd_group_size}: --netd {config.netd} has no minibatch-std layer; "
            "use --netd basic or n_layers, or drop --mbstd-group-size"
        )
    if config.n_layers_d != 3 and "n_layers" not in network_options(config.netd):
        # basic is n_layers fixed at 3 (the reference's 70x70 PatchGAN): another count would be dropped silently.
        raise TransganError(
            f"--n-layers-d {config.n_layers_d}: --netd {config.netd} has a fixed depth; use --netd n_layers to set it"
        )
    return _build(
        config.netd,
        input_nc=input_nc,
        ndf=config.ndf,
        n_layers=config.n_layers_d,
        norm=config.norm,
        spectral_norm=config.spectral_norm,
        init=config.init,
        init_gain=config.init_gain,
        mbstd_group_size=config.mbstd_group_size,
    )


def preprocess_of(config: TranslationConfig):
    from transgan.data.transforms import Preprocess

    return Preprocess(mode=config.preprocess, load_size=config.load_size, crop_size=config.crop_size, flip=config.flip)


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """1-channel images repeated to 3 so they sit in one grid with colour ones."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def required_path(value: str, flag: str) -> str:
    if not value:
        raise TransganError(f"{flag} is required: the folder of training images")
    return value


def unaligned_dataset(config: Any):
    """Two unpaired folders, --domain-a and --domain-b (cyclegan, cut, fastcut)."""
    from transgan.data.paired import UnalignedDataset

    return UnalignedDataset(
        required_path(config.domain_a, "--domain-a"),
        required_path(config.domain_b, "--domain-b"),
        preprocess_of(config),
        direction=config.direction,
        input_nc=config.input_nc,
        output_nc=config.output_nc,
    )


def per_sample(config: TranslationConfig) -> bool:
    """True when the translation networks treat every image of a batch on its own (instance norm or none),
    so one call on a concatenated batch equals separate calls: fewer, larger convolutions, same result.
    Batch norm mixes the images (and its running statistics would change), so it keeps separate calls."""
    return config.norm != "batch"


def discriminate_pair(
    D: nn.Module, config: TranslationConfig, first: torch.Tensor, second: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """D's predictions for two batches: one call on [first; second] when that gives the same values (a
    per-sample norm, no spectral norm, whose power iteration steps once per call, and no minibatch std,
    which mixes the images of a call), else two calls. `D` may be a function (D behind DiffAugment)."""
    if per_sample(config) and not config.spectral_norm and not config.mbstd_group_size:
        pred_first, pred_second = D(torch.cat([first, second])).tensor_split(2)
        return pred_first, pred_second
    return D(first), D(second)


def check_input_size(images: torch.Tensor, generator: torch.nn.Module, arch: str) -> None:
    """Translators need H and W divisible by their size multiple (256 for unet_256); say so, not crash."""
    multiple = getattr(generator, "size_multiple", 1)
    height, width = images.shape[-2:]
    if height % multiple or width % multiple:
        raise TransganError(
            f"{arch} needs image sizes divisible by {multiple}, got {height}x{width}; "
            f"set --crop-size to a multiple of {multiple} or pick another --arch"
        )
