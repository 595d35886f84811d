"""CUT's patch sampler and projection heads (the official PatchSampleF with `mlp_sample`), built up front."""

from __future__ import annotations

import torch
from torch import nn

from transgan.nets.layers import init_weights


class PatchSampleF(nn.Module):
    """Per feature layer: take the feature vectors at given positions, project them with a two-layer MLP
    (Linear, ReLU, Linear to `nc` features) and L2-normalise them.

    The official code builds the MLPs on its first call from the features it sees; here they are built from
    `widths` (the encoder's channel counts, see ResnetGenerator.feature_widths) when the task is built, so
    optimizers, EMA, DDP and checkpoints see them from step 0. Keys (`mlp_0.0.weight` ...) and init are the
    official ones.
    """

    def __init__(self, widths: list[int], nc: int = 256, init: str = "xavier", init_gain: float = 0.02):
        super().__init__()
        self.widths, self.nc = list(widths), nc
        for index, width in enumerate(widths):
            self.add_module(f"mlp_{index}", nn.Sequential(nn.Linear(width, nc), nn.ReLU(), nn.Linear(nc, nc)))
        init_weights(self, init, init_gain)

    def forward(self, features: list[torch.Tensor], patch_ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """For each layer, (B * P, nc) unit vectors: image-major, the same P positions in every image.
        Position h * W + w of a (B, C, H, W) map is pixel (h, w)."""
        out = []
        for index, (feature, ids) in enumerate(zip(features, patch_ids, strict=True)):
            # (B, C, H, W) -> (B, H*W, C), as the reference samples; the same ids for every image.
            sampled = feature.permute(0, 2, 3, 1).flatten(1, 2)[:, ids.to(feature.device), :].flatten(0, 1)
            projected = getattr(self, f"mlp_{index}")(sampled)
            # x / (|x| + 1e-7), the reference's Normalize: F.normalize's max(|x|, eps) differs at small |x|.
            # vector_norm, not the reference's pow(2).sum().pow(0.5): at x = 0 (every hidden unit of a narrow
            # head off) its gradient is 0 where the power's is 0 * inf = NaN.
            norm = torch.linalg.vector_norm(projected, dim=1, keepdim=True)
            out.append(projected / (norm + 1e-7))
        return out
