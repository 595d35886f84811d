"""The option dataclasses several tasks build on (discriminator, translation, generation); imports no torch,
so `transgan train TASK --help` can make its option table without loading any network code."""

from __future__ import annotations

from dataclasses import dataclass

from transgan.config import option
from transgan.errors import TransganError


@dataclass(frozen=True)
class DiscriminatorOptions:
    """Options of the discriminator(s), the same for every task (a task may change a default)."""

    r1_gamma: float | None = option(
        None,
        "R1 penalty weight on real images, applied lazily every --r1-every steps; 0: off "
        "(default: the task's; stylegan: 0.0002 * image_size^2 / batch size, others off)",
    )
    r1_every: int = option(16, "lazy R1: regularise D every this many steps (StyleGAN2: 16)")
    gp_weight: float | None = option(
        None, "WGAN-GP gradient penalty weight (lambda); 0: off (default: 10 for Wasserstein losses, else off)"
    )
    mbstd_group_size: int = option(0, "minibatch-std layer in D over groups of this many images (ProGAN: 4); 0: none")
    diffaugment: str = option(
        "", "DiffAugment for real and fake images in both phases: a subset of color,translation,cutout"
    )
    ada: bool = option(
        False,
        "adaptive discriminator augmentation (StyleGAN2-ADA 'bgc') of reals and fakes in both phases: p starts at "
        "0 and follows D's overfitting every 4 steps",
    )
    ada_target: float = option(0.6, "ADA: target of r_t = E[sign(D(real))]; p rises while r_t is above it")
    ada_kimg: float = option(500.0, "ADA: thousands of real images for p to move by 1 (StyleGAN2-ADA: 500)")
    aug_p: float | None = option(None, "the ADA pipeline at this fixed probability p in [0, 1] (no adjustment)")
    freeze_d: int = option(0, "Freeze-D: the first N blocks of D (from its input) keep their weights; 0: none")


def check_discriminator_options(options: DiscriminatorOptions) -> None:
    """One error line for each value that cannot work."""
    from transgan.augment import parse_policy  # torch: only when a config is checked, never for --help

    if options.r1_gamma is not None and options.r1_gamma < 0:
        raise TransganError(f"--r1-gamma {options.r1_gamma}: must be 0 (off) or positive (StyleGAN2 at 32 px: 0.0064)")
    if options.r1_every < 1:
        raise TransganError(f"--r1-every {options.r1_every}: must be at least 1 (1: R1 every step)")
    if options.gp_weight is not None and options.gp_weight < 0:
        raise TransganError(f"--gp-weight {options.gp_weight}: must be 0 (off) or positive (WGAN-GP: 10)")
    if options.mbstd_group_size < 0:
        raise TransganError(f"--mbstd-group-size {options.mbstd_group_size}: must be 0 (none) or positive (4)")
    if options.freeze_d < 0:
        raise TransganError(f"--freeze-d {options.freeze_d}: must be 0 (none) or a number of D blocks")
    parse_policy(options.diffaugment)  # an unknown operation raises one line naming the known ones
    check_ada_options(options)


def check_ada_options(options: DiscriminatorOptions) -> None:
    """One error line for ADA values that cannot work."""
    if options.aug_p is not None and not 0.0 <= options.aug_p <= 1.0:
        raise TransganError(f"--aug-p {options.aug_p}: must be in [0, 1] (the fixed augmentation probability)")
    if not 0.0 < options.ada_target < 1.0:
        raise TransganError(f"--ada-target {options.ada_target}: must be strictly between 0 and 1 (StyleGAN2-ADA: 0.6)")
    if options.ada_kimg <= 0:
        raise TransganError(f"--ada-kimg {options.ada_kimg}: must be positive (StyleGAN2-ADA: 500)")
    if options.ada and options.aug_p is not None:
        raise TransganError("--ada with --aug-p: pick one (--ada moves p from 0; --aug-p P keeps p fixed at P)")
    if (options.ada or options.aug_p is not None) and options.diffaugment:
        raise TransganError("--diffaugment with --ada/--aug-p: pick one augmentation of D's inputs")


@dataclass(frozen=True)
class TranslationConfig(DiscriminatorOptions):
    """Options pix2pix and cyclegan share (the reference's defaults; the discriminator regularisers and
    DiffAugment are off unless asked for); each task adds its data options and overrides the defaults that
    differ (generator, norm, dropout, loss)."""

    direction: str = option("AtoB", "AtoB or BtoA")
    input_nc: int = option(3, "channels of the input images (1 or 3)")
    output_nc: int = option(3, "channels of the output images (1 or 3)")
    preprocess: str = option("resize_and_crop", "resize_and_crop, crop, scale_width, scale_width_and_crop or none")
    load_size: int = option(286, "images are first scaled to this size")
    crop_size: int = option(256, "then cropped to this size")
    flip: bool = option(True, "random horizontal flips")
    arch: str = option("resnet_9blocks", "generator network")
    ngf: int = option(64, "generator width")
    netd: str = option("basic", "discriminator: basic (70x70 PatchGAN), n_layers or pixel")
    ndf: int = option(64, "discriminator width")
    n_layers_d: int = option(3, "discriminator layers (netd n_layers)")
    norm: str = option("instance", "instance, batch or none")
    dropout: bool = option(False, "dropout in the generator(s)")
    spectral_norm: bool = option(False, "spectral normalisation in the discriminator(s)")
    init: str = option("normal", "weight init: normal, xavier, kaiming or orthogonal")
    init_gain: float = option(0.02, "scale of the weight init")
    gan_loss: str = option("lsgan", "adversarial loss: lsgan, vanilla, hinge, nonsaturating, wasserstein ...")
    real_label: float = option(1.0, "target for real images (below 1: one-sided label smoothing)")

    def __post_init__(self) -> None:
        check_image_options(self)
        check_discriminator_options(self)


def check_image_options(config: TranslationConfig) -> None:
    """One error line for a direction or channel count that cannot work."""
    if config.direction not in ("AtoB", "BtoA"):
        raise TransganError(f"--direction {config.direction}: use AtoB or BtoA")
    for name in ("input_nc", "output_nc"):
        if getattr(config, name) not in (1, 3):
            raise TransganError(f"--{name.replace('_', '-')} {getattr(config, name)}: use 1 or 3")


@dataclass(frozen=True)
class GenerationDataConfig:
    """Data options of the generation tasks: class folders, a zip of them or MNIST idx files."""

    data: str = option("", "folder of class sub-folders, a .zip of them, or a folder with MNIST idx files")
    split: str = option("", "sub-folder / zip prefix / idx prefix to use (e.g. train); empty: the only one")
    start: int = option(0, "MNIST idx data: first image to use")
    stop: int = option(0, "MNIST idx data: stop before this image (0: the end)")
    image_size: int = option(32, "square output size: a power of two times 3..8 (28, 32, 64, 128 ...)")
    channels: int = option(0, "1 or 3; 0: from the data")
    flip: bool = option(False, "random horizontal flips (not for digits or text)")
    conditional: bool = option(True, "condition on the class labels; --no-conditional trains an unconditional model")


@dataclass(frozen=True)
class EqualizedNetworkOptions(DiscriminatorOptions):
    """What StyleGAN and ProGAN configure alike: z, the width rule of their equalised-lr networks (small for
    CPUs by default; the papers' channel_base is 16384-32768, channel_max 512) and D's minibatch std (on)."""

    latent_dim: int = option(128, "size of z")
    channel_base: int = option(1024, "feature maps at resolution r: channel_base / r, at most --channel-max")
    channel_max: int = option(64, "most feature maps of any layer")
    mbstd_group_size: int = option(4, "minibatch-std group size of D (0: no minibatch-std layer)")

    def widths(self) -> dict[str, int]:
        return {"channel_base": self.channel_base, "channel_max": self.channel_max}

    def minibatch_std(self) -> dict[str, int]:
        """The discriminator's minibatch-std options (mbstd_channels 0 leaves the layer out)."""
        return {"mbstd_group_size": max(self.mbstd_group_size, 1), "mbstd_channels": 1 if self.mbstd_group_size else 0}
