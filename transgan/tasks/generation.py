"""What the image-generation tasks (cgan, stylegan, progan) share: their data options and dataset."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from transgan.errors import TransganError
from transgan.tasks.base import GANTask
from transgan.tasks.configs.shared import EqualizedNetworkOptions, GenerationDataConfig  # noqa: F401 (re-exported)
from transgan.tasks.freeze import frozen_d_parameters


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
    """What a noise-to-image task built on these options shares: its option check (before the data is read),
    dataset, class names, fixed grid inputs, sample grids, the model file's description and the networks it
    keeps (G only). A subclass sets `check_options` to its own check and builds G (and D) in __init__."""

    @staticmethod
    def check_options(config: Any) -> None:
        """The task's own option checks: one error line for a value that cannot work."""

    @classmethod
    def build_dataset(cls, config: GenerationDataConfig) -> Dataset:
        cls.check_options(config)
        return build_generation_dataset(config)

    def __init__(self, config: GenerationDataConfig, dataset: Dataset):
        super().__init__(config, dataset)
        check_data_config(config)
        self.check_options(config)
        self.class_names = list(dataset.class_names) if config.conditional else []
        self.num_classes = len(self.class_names)
        self.channels = dataset.channels

    def network_shape(self) -> dict[str, int]:
        """What every network of the task is built for: classes (0: unconditional), image size, channels."""
        return {"num_classes": self.num_classes, "image_size": self.config.image_size, "channels": self.channels}

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

    def frozen_parameters(self) -> list[nn.Parameter]:
        """--freeze-d N: the first N blocks of the discriminator."""
        return frozen_d_parameters(self.networks, getattr(self.config, "freeze_d", 0))

    def inference_networks(self) -> list[str]:
        return ["G"]

    def diversity(self) -> dict[str, torch.Tensor]:
        """`health/diversity`: the spread of this step's fakes over that of its reals, within each class (across
        mixed classes the class differences alone look diverse and hide a G that ignores its noise; health.py
        warns). Empty for a batch of one."""
        if self.real.shape[0] < 2:
            return {}
        spread_fake = within_class_spread(self.fake.detach(), self.labels, self.num_classes)
        spread_real = within_class_spread(self.real, self.labels, self.num_classes).clamp(min=1e-8)
        return {"health/diversity": spread_fake / spread_real}

    @torch.no_grad()
    def sample_grid(self, batch: dict[str, Any], networks: dict[str, nn.Module]) -> torch.Tensor:
        # 64 fixed samples; the trainer lays them out in rows of 8 (the size of its fixed batch).
        return as_rgb(networks["G"](*self.grid_inputs()))


def as_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grey images repeated to three channels (sample grids are RGB)."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


@torch.no_grad()
def within_class_spread(images: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """Mean per-pixel standard deviation of the images of each class, averaged over classes seen twice or
    more (all images as one class when unconditional); one-hot sums, so no device sync in the hot loop."""
    flat = images.float().flatten(1)
    if labels is None or num_classes == 0:
        return flat.std(0).mean()
    one_hot = F.one_hot(labels, num_classes).float()  # (N, K)
    counts = one_hot.sum(0)  # (K,)
    mean = one_hot.T @ flat / counts.clamp(min=1)[:, None]
    variance = (one_hot.T @ flat.square() / counts.clamp(min=1)[:, None] - mean.square()).clamp(min=0)
    spread = variance.sqrt().mean(1)  # (K,)
    seen_twice = (counts >= 2).float()
    return (spread * seen_twice).sum() / seen_twice.sum().clamp(min=1)
