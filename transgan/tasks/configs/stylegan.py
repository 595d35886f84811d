"""StyleGAN2's options and the official StyleGAN2-ADA training configs (torch-free: `transgan train stylegan
--help` reads them without building anything)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from transgan.config import option
from transgan.errors import TransganError
from transgan.tasks.configs.shared import EqualizedNetworkOptions, GenerationDataConfig

CFGS = ("", "auto", "paper256", "cifar")
ARCHITECTURES = ("orig", "skip", "resnet")


@dataclass(frozen=True)
class StyleGANConfig(GenerationDataConfig, EqualizedNetworkOptions):
    """StyleGAN2 options. The default is CPU-sized (channel_base 1024, at most 64 maps, z = w = 128, 2 mapping
    layers); --cfg auto|paper256|cifar takes the official StyleGAN2-ADA config's widths, batch, R1 gamma, EMA
    and mapping depth (options you set to other values than their defaults still win)."""

    cfg: str = option("", "official StyleGAN2-ADA config: auto, paper256 or cifar; empty: the small CPU default")
    w_dim: int = option(128, "size of w (the style vector; official: 512)")
    mapping_layers: int = option(2, "layers of the mapping network (official auto/cifar: 2; paper256: 8)")
    mapping_lr_mul: float = option(0.01, "learning-rate multiplier of the mapping network (StyleGAN2: 0.01)")
    architecture_g: str = option("skip", "generator architecture: skip (StyleGAN2), orig or resnet")
    architecture_d: str = option("resnet", "discriminator architecture: resnet (StyleGAN2), skip or orig (cifar)")
    mixing_prob: float = option(0.9, "style-mixing probability of a generator batch (0 disables mixing)")
    pl_weight: float = option(2.0, "path-length regularisation weight (StyleGAN2: 2; 0 disables it)")
    pl_every: int = option(4, "lazy path-length regularisation: every this many steps (StyleGAN2: 4)")
    pl_batch_shrink: int = option(2, "path length runs on the batch divided by this (StyleGAN2: 2)")
    num_fp16_res: int = option(4, "fp16 in the top N resolutions of G and D on CUDA (StyleGAN2-ADA: 4; CPU: fp32)")
    conv_clamp: float = option(256.0, "clamp conv outputs to +-this (StyleGAN2-ADA: 256; 0: off)")
    w_avg_per_class: bool = option(False, "track one w average per class (truncation toward the class centre)")


@dataclass(frozen=True)
class Spec:
    """What --cfg decides: the official config's values (r1_gamma None: 0.0002 res^2 / global batch)."""

    batch_size: int = 32
    lr: float = 0.0025
    r1_gamma: float | None = None
    ema_kimg: float = 10.0
    ema_rampup: float = 0.05


def apply_cfg(config: StyleGANConfig) -> tuple[StyleGANConfig, Spec]:
    """The config with --cfg's network options filled in (where the user kept the default), and the run spec.

    Official (train.py cfg_specs; z = w = 512, channel_max 512): auto: channel_base 16384 below 512 px, 2
    mapping layers, batch min(4096 / res, 32) per process, minibatch-std group min(batch, 4), gamma 0.0002
    res^2 / batch, EMA 10 kimg per 32 images, ramp-up 0.05; paper256: channel_base 16384, 8 mapping layers,
    batch 64, group 8, gamma 1, EMA 20 kimg, no ramp-up; cifar: channel_base 32768, 2 mapping layers, batch
    64, group 32, gamma 0.01, EMA 500 kimg, ramp-up 0.05, no path length, no mixing, D 'orig'.
    """
    res = config.image_size
    if config.cfg == "":
        return config, Spec()
    if config.cfg == "auto":
        batch = min(4096 // res, 32)
        spec = Spec(batch, 0.002 if res >= 1024 else 0.0025, None, batch * 10 / 32, 0.05)
        values = dict(channel_base=32768 if res >= 512 else 16384, mapping_layers=2, mbstd_group_size=min(batch, 4))
    elif config.cfg == "paper256":
        spec = Spec(64, 0.0025, 1.0, 20.0, 0.0)
        values = dict(channel_base=16384, mapping_layers=8, mbstd_group_size=8)
    else:  # cifar
        spec = Spec(64, 0.0025, 0.01, 500.0, 0.05)
        values = dict(channel_base=32768, mapping_layers=2, mbstd_group_size=32)
        values.update(pl_weight=0.0, mixing_prob=0.0, architecture_d="orig")
    values.update(channel_max=512, latent_dim=512, w_dim=512)
    defaults = {f.name: f.default for f in fields(StyleGANConfig)}
    kept = {key: value for key, value in values.items() if getattr(config, key) == defaults[key]}
    return replace(config, **kept), spec


def check_stylegan_config(config: StyleGANConfig) -> None:
    """One error line for each StyleGAN2 value that cannot work."""
    if config.cfg not in CFGS:
        raise TransganError(f"--cfg {config.cfg}: use auto, paper256 or cifar (or leave it out for the CPU default)")
    for name in ("architecture_g", "architecture_d"):
        if getattr(config, name) not in ARCHITECTURES:
            raise TransganError(f"--{name.replace('_', '-')} {getattr(config, name)}: use skip, orig or resnet")
    if config.pl_every < 1 or config.pl_batch_shrink < 1:
        raise TransganError(f"--pl-every {config.pl_every}, --pl-batch-shrink {config.pl_batch_shrink}: at least 1")
    if not 0.0 <= config.mixing_prob <= 1.0:
        raise TransganError(f"--mixing-prob {config.mixing_prob}: must lie in [0, 1]")
    if config.pl_weight < 0:
        raise TransganError(f"--pl-weight {config.pl_weight}: must be 0 (off) or positive (StyleGAN2: 2)")
    if config.num_fp16_res < 0 or config.conv_clamp < 0:
        raise TransganError(f"--num-fp16-res {config.num_fp16_res}, --conv-clamp {config.conv_clamp}: not negative")
    if config.image_size < 8 or config.image_size & (config.image_size - 1):
        raise TransganError(f"--image-size {config.image_size}: StyleGAN2 needs a power of two (8, 16, 32, 64 ...)")
