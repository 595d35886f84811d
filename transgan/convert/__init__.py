"""Importers for foreign checkpoints: the reference pix2pix/CycleGAN code and GAN Compression."""

from transgan.convert.gan_compression import load_gan_compression_checkpoint
from transgan.convert.reference import convert_reference_state_dict, guess_reference_arch, load_reference_checkpoint

__all__ = [
    "convert_reference_state_dict",
    "guess_reference_arch",
    "load_gan_compression_checkpoint",
    "load_reference_checkpoint",
]
