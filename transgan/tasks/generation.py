"""What the image-generation tasks (cgan, stylegan, progan) share: their data options and dataset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from transgan.config import option
from transgan.errors import TransganError
from transgan.tasks.base import GANTask


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


def check_data_config(config: GenerationDataConfig) -> None:
    """One clear error line for data options that cannot work."""
    if config.channels not in (0, 1, 3):
        raise TransganError(f"--channels {config.channels}: use 1 or 3 (0 takes it from the data)")


def build_generation_dataset(config: GenerationDataConfig) -> Dataset:
    """The labelled image dataset the data options describe (items use the (index, seed) key contract)."""
    from transgan.data.classes import class_dataset  # data code: loaded only when a run starts

    check_data_config(config)
    if not config.data:
        raise TransganError("--data is required: a folder of class sub-folders, a .zip, or an MNIST idx folder")
    dataset = class_dataset(
        config.data,
        config.image_size,
        channels=config.channels or None,
        split=config.split or None,
        flip=config.flip,
        start=config.start,
        stop=config.stop or None,
    )
    if len(dataset) == 0:
        raise TransganError(f"{config.data}: no images selected (check --start/--stop/--split)")
    return dataset


GRID_SAMPLES = 64  # sample grids show 8 rows of 8, classes cycling along each row


class GenerationTask(GANTask):
    """What a noise-to-image task built on these options shares: its dataset, class names, fixed grid inputs,
    the model file's description and the networks it keeps (G only)."""

    @classmethod
    def build_dataset(cls, config: GenerationDataConfig) -> Dataset:
        return build_generation_dataset(config)

    def __init__(self, config: GenerationDataConfig, dataset: Dataset):
        super().__init__(config, dataset)
        check_data_config(config)
        self.class_names = list(dataset.class_names) if config.conditional else []
        self.num_classes = len(self.class_names)
        self.channels = dataset.channels

    def fix_grid_inputs(self) -> None:
        """Fixed z and labels for the sample grids, so successive grids show the same samples evolving."""
        generator = torch.Generator().manual_seed(1234)
        self.fixed_z = self.networks["G"].sample_latent(GRID_SAMPLES, generator)
        self.fixed_labels = torch.arange(GRID_SAMPLES) % max(self.num_classes, 1)

    def grid_inputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        labels = self.fixed_labels.to(self.device) if self.num_classes else None
        return self.fixed_z.to(self.device), labels

    def model_file_kwargs(self) -> dict[str, Any]:
        G = self.networks["G"]
        extra = {"latent_dim": G.latent_dim, "image_size": G.image_size, "channels": G.channels}
        return {"class_names": self.class_names, "extra": {**extra, "num_classes": self.num_classes}}

    def inference_networks(self) -> list[str]:
        return ["G"]


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grey images repeated to three channels (sample grids are RGB)."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
