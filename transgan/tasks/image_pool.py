"""The reference's image pool: D sees a history of generated images, not only the latest ones."""

from __future__ import annotations

import random

import torch


class ImagePool:
    """Keeps up to `size` past fakes; each query returns, per image, the new one or (half of the time once
    full) a stored one that the new image replaces. Stored images carry no autograd graph. Randomness comes
    from Python's `random`, whose state the training checkpoint saves, so resume stays exact."""

    def __init__(self, size: int):
        self.size = size
        self.images: list[torch.Tensor] = []

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images.detach()
        chosen = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                chosen.append(image)
            elif random.uniform(0, 1) > 0.5:
                index = random.randint(0, self.size - 1)
                chosen.append(self.images[index].clone())
                self.images[index] = image.clone()
            else:
                chosen.append(image)
        return torch.cat(chosen, 0)

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{i}": image for i, image in enumerate(self.images)}

    def load_state(self, tensors: dict[str, torch.Tensor], prefix: str, device: torch.device) -> None:
        keys = sorted((k for k in tensors if k.startswith(prefix + ".")), key=lambda k: int(k.rsplit(".", 1)[1]))
        self.images = [tensors[k].to(device) for k in keys]
