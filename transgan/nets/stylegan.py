"""StyleGAN2 generator (mapping network, modulated convs or AdaIN, noise, skip toRGB) and residual discriminator."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from transgan.errors import TransganError
from transgan.nets.equalized import (
    ClassEmbedding,
    EqualConv2d,
    EqualLinear,
    MinibatchStd,
    activate,
    class_vectors,
    downsample2x,
    pixel_norm,
    upsample2x,
    width_at,
)
from transgan.nets.generator_base import LatentGenerator, check_labels, resolution_plan
from transgan.nets.layers import check_choice
from transgan.registry import NETWORKS

STYLE_MODES = ("demod", "adain")
NOISE_MODES = ("random", "const", "none", "given")
W_AVG_BETA = 0.995  # StyleGAN2's decay of the tracked w average
# Small widths for the registry-wide tests (the defaults are StyleGAN2's 512-wide, 8-layer mapping).
TINY_D = {"channel_base": 64, "channel_max": 8, "image_size": 16, "num_classes": 3}
TINY = {**TINY_D, "latent_dim": 8, "w_dim": 8, "mapping_layers": 2}


def modulated_conv2d(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool = True) -> Tensor:
    """StyleGAN2's modulated convolution: per sample n, w'_oik = s_ni * w_oik, then (demodulate)
    w''_oik = w'_oik / sqrt(sum_ik w'_oik^2 + 1e-8); y_n = conv(x_n, w''_n) with 'same' padding.

    Computed as conv(x * s, w) * d (StyleGAN2's non-fused path): the same numbers, one shared weight, so the
    batch stays dynamic in ONNX. x (N, I, H, W), weight (O, I, k, k), styles (N, I).
    """
    x = x * styles[:, :, None, None].to(x.dtype)
    x = nn.functional.conv2d(x, weight.to(x.dtype), padding=weight.shape[-1] // 2)
    if demodulate:
        # sum_ik (s_ni w_oik)^2 = sum_i s_ni^2 * (sum_k w_oik^2): one (N, I) x (I, O) product.
        coefficients = torch.rsqrt(styles.float().square() @ weight.float().square().sum(dim=[2, 3]).t() + 1e-8)
        x = x * coefficients[:, :, None, None].to(x.dtype)
    return x


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise scaled by a learned per-channel strength (StyleGAN's stochastic detail)."""

    def __init__(self, channels: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.strength = nn.Parameter(torch.zeros(channels))
        # 'const' mode: one fixed noise image, saved with the weights, so generation is repeatable.
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: Tensor, mode: str, noise: Tensor | None = None) -> Tensor:
        if mode == "none":
            return x
        if mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        elif mode == "const":
            noise = self.noise_const
        elif noise is None:
            raise TransganError("noise_mode 'given': pass pixel_noise, one (N, 1, H, W) tensor per synthesis layer")
        return x + noise.to(x.dtype) * self.strength[None, :, None, None].to(x.dtype)


class SynthesisLayer(nn.Module):
    """3x3 conv styled by w: modulated/demodulated ('demod', StyleGAN2) or plain conv then AdaIN ('adain',
    StyleGAN); then noise, bias and leaky ReLU. `up` doubles the resolution first (bilinear)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool, style_mode: str):
        super().__init__()
        self.up, self.style_mode = up, style_mode
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.weight_gain = 1.0 / math.sqrt(in_channels * 9)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise = NoiseInjection(out_channels, resolution)
        if style_mode == "demod":
            self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)  # styles start at 1: an unmodulated conv
        else:
            self.style_scale = EqualLinear(w_dim, out_channels, bias_init=1.0)
            self.style_shift = EqualLinear(w_dim, out_channels, bias_init=0.0)

    def forward(self, x: Tensor, w: Tensor, noise_mode: str, noise: Tensor | None = None) -> Tensor:
        if self.up:
            x = upsample2x(x)
        weight = self.weight * self.weight_gain
        if self.style_mode == "demod":
            x = modulated_conv2d(x, weight, self.affine(w), demodulate=True)
        else:
            x = nn.functional.conv2d(x, weight.to(x.dtype), padding=1)
        x = self.noise(x, noise_mode, noise)
        x = activate(x + self.bias[None, :, None, None].to(x.dtype), "lrelu")
        if self.style_mode == "adain":
            x = nn.functional.instance_norm(x)
            x = x * self.style_scale(w)[:, :, None, None].to(x.dtype) + self.style_shift(w)[:, :, None, None].to(
                x.dtype
            )
        return x


class ToRGB(nn.Module):
    """1x1 modulated conv without demodulation to the image channels (StyleGAN2's skip outputs)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return x + self.bias[None, :, None, None].to(x.dtype)


class SynthesisBlock(nn.Module):
    """One resolution: the learned constant (first block) or an upsampling conv, a second conv, a toRGB whose
    image is added to the upsampled image of the blocks before (skip architecture)."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, channels: int, style_mode: str
    ):
        super().__init__()
        self.first = in_channels == 0
        self.resolution = resolution
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, True, style_mode)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, False, style_mode)
        self.torgb = ToRGB(out_channels, channels, w_dim)
        self.num_conv = 1 if self.first else 2
        self.num_ws = self.num_conv + 1  # the toRGB's w is the next block's first

    def forward(
        self, x: Tensor | None, img: Tensor | None, ws: Tensor, noise_mode: str, noises: list[Tensor | None]
    ) -> tuple[Tensor, Tensor]:
        if self.first:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
            x = self.conv1(x, ws[:, 0], noise_mode, noises[0])
        else:
            x = self.conv0(x, ws[:, 0], noise_mode, noises[0])
            x = self.conv1(x, ws[:, 1], noise_mode, noises[1])
        rgb = self.torgb(x, ws[:, self.num_conv])
        img = rgb if img is None else upsample2x(img) + rgb
        return x, img


@NETWORKS.register("stylegan_generator", role="sampler", family="stylegan", test_config=TINY)
class StyleGANGenerator(LatentGenerator):
    """StyleGAN2 generator: z (+ class embedding) -> mapping MLP -> w -> synthesis from a learned constant, one
    block per resolution, styles on every conv, per-pixel noise, toRGB skips. Linear output (about [-1, 1]).

    Defaults are StyleGAN2's: widths min(channel_base / resolution, channel_max), an 8-layer mapping network at
    0.01 of the learning rate, demodulated convs (style_mode 'adain' gives StyleGAN's AdaIN layers).
    `inference_noise` is the noise of eval-mode passes ('const': fixed noise saved with the weights, so a seed
    always gives the same image and the ONNX graph matches PyTorch); training passes draw random noise.

    The split API: `mapping(z, labels)` -> ws (N, num_ws, w_dim), `truncate(ws, labels, psi)`,
    `mix(ws_a, ws_b, crossover)`, `synthesis(ws)` -> images. `forward(z, labels)` chains them.
    """

    def __init__(
        self,
        latent_dim: int = 512,
        w_dim: int = 512,
        num_classes: int = 0,
        image_size: int = 256,
        channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mapping_layers: int = 8,
        mapping_lr_mul: float = 0.01,
        style_mode: str = "demod",
        inference_noise: str = "const",
    ):
        check_choice("style_mode", style_mode, STYLE_MODES)
        check_choice("inference_noise", inference_noise, ("random", "const", "none"))
        if mapping_layers < 1 or latent_dim < 1 or w_dim < 1:
            raise TransganError(
                f"stylegan_generator: latent_dim {latent_dim}, w_dim {w_dim} and mapping_layers {mapping_layers} "
                "must be at least 1"
            )
        super().__init__(latent_dim, num_classes, image_size, channels, 0, 0)
        base, levels = self.base, self.levels
        self.w_dim, self.inference_noise = w_dim, inference_noise
        # Mapping: normalised z and class embedding side by side, then the MLP at 0.01 of the learning rate.
        self.embed = ClassEmbedding(num_classes, w_dim) if num_classes else None
        features = [latent_dim + (w_dim if num_classes else 0)] + [w_dim] * mapping_layers
        self.mapping_net = nn.Sequential(
            *(EqualLinear(a, b, lr_mul=mapping_lr_mul, activation="lrelu") for a, b in zip(features, features[1:]))
        )
        # One tracked average w per class (a single one when unconditional): truncation pulls toward the
        # class's own centre, so psi 0 gives each class its "average" image instead of one image for all.
        self.register_buffer("w_avg", torch.zeros(max(num_classes, 1), w_dim))
        resolutions = [base * 2**level for level in range(levels + 1)]
        widths = [width_at(r, channel_base, channel_max) for r in resolutions]
        self.blocks = nn.ModuleList(
            SynthesisBlock(widths[i - 1] if i else 0, widths[i], w_dim, r, channels, style_mode)
            for i, r in enumerate(resolutions)
        )
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1
        self.noise_resolutions = [r for block in self.blocks for r in [block.resolution] * block.num_conv]

    # -- mapping ---------------------------------------------------------------------------------------
    def mapping(
        self,
        z: Tensor,
        labels: Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_w_avg: bool | None = None,
    ) -> Tensor:
        """ws (N, num_ws, w_dim): the mapping network's w for every synthesis input, optionally truncated.

        In training mode (or update_w_avg=True) the per-class w average moves toward this batch's mean.
        """
        check_labels(self, labels)
        x = pixel_norm(z)
        if self.embed is not None:
            x = torch.cat([x, pixel_norm(self.embed(labels)).to(x.dtype)], dim=1)
        w = self.mapping_net(x)
        track = self.training if update_w_avg is None else update_w_avg
        if track:
            self._track_w_avg(w.detach(), labels)
        ws = w[:, None].expand(-1, self.num_ws, -1)
        return self.truncate(ws, labels, truncation_psi, truncation_cutoff)

    @torch.no_grad()
    def _track_w_avg(self, w: Tensor, labels: Tensor | None) -> None:
        weights = self._class_weights(labels, w.shape[0], w.device)  # (N, K)
        counts = weights.sum(dim=0)  # (K,)
        means = (weights.t() @ w.float()) / counts.clamp(min=1e-8)[:, None]
        present = (counts > 0)[:, None]
        self.w_avg.copy_(torch.where(present, torch.lerp(means, self.w_avg, W_AVG_BETA), self.w_avg))

    def _class_weights(self, labels: Tensor | None, n: int, device: torch.device) -> Tensor:
        if self.num_classes:
            return class_vectors(labels.to(device), self.num_classes)
        return torch.ones(n, 1, device=device)

    def w_center(self, labels: Tensor | None, n: int) -> Tensor:
        """(N, w_dim): the tracked average w of each sample's class (soft labels mix the class averages)."""
        return self._class_weights(labels, n, self.w_avg.device) @ self.w_avg

    def truncate(self, ws: Tensor, labels: Tensor | None, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        """The truncation trick: ws[:, :cutoff] pulled toward the class's average w, lerp(w_avg, w, psi)."""
        if psi == 1.0:
            return ws
        cutoff = self.num_ws if cutoff is None else max(0, min(int(cutoff), self.num_ws))
        center = self.w_center(labels, ws.shape[0]).to(ws.dtype)[:, None]
        pulled = torch.lerp(center.expand(-1, cutoff, -1), ws[:, :cutoff], float(psi))
        return torch.cat([pulled, ws[:, cutoff:]], dim=1)

    @staticmethod
    def mix(ws_a: Tensor, ws_b: Tensor, crossover: int) -> Tensor:
        """Style mixing: the first `crossover` synthesis inputs from ws_a (coarse styles), the rest from ws_b."""
        return torch.cat([ws_a[:, :crossover], ws_b[:, crossover:]], dim=1)

    # -- synthesis -------------------------------------------------------------------------------------
    def synthesis(self, ws: Tensor, noise_mode: str | None = None, pixel_noise: list[Tensor] | None = None) -> Tensor:
        """Images from ws (N, num_ws, w_dim), or from one w (N, w_dim) for every layer.

        noise_mode None: 'random' in training mode, the `inference_noise` option in eval mode. 'given' takes
        `pixel_noise`, one (N or 1, 1, r, r) tensor per conv layer (resolutions in `noise_resolutions`).
        """
        if ws.dim() == 2:
            ws = ws[:, None].expand(-1, self.num_ws, -1)
        if ws.shape[1] != self.num_ws:
            raise TransganError(f"synthesis needs {self.num_ws} ws per sample, got {ws.shape[1]}")
        if noise_mode is None:
            noise_mode = "random" if self.training else self.inference_noise
        check_choice("noise_mode", noise_mode, NOISE_MODES)
        if noise_mode == "given" and (pixel_noise is None or len(pixel_noise) != len(self.noise_resolutions)):
            raise TransganError(
                f"noise_mode 'given': pass pixel_noise as {len(self.noise_resolutions)} tensors "
                f"(resolutions {self.noise_resolutions})"
            )
        noises = list(pixel_noise) if noise_mode == "given" else [None] * len(self.noise_resolutions)
        x = img = None
        w_index = noise_index = 0
        for block in self.blocks:
            block_ws = ws[:, w_index : w_index + block.num_ws]
            x, img = block(x, img, block_ws, noise_mode, noises[noise_index : noise_index + block.num_conv])
            w_index += block.num_conv
            noise_index += block.num_conv
        return img

    def forward(
        self,
        z: Tensor,
        labels: Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str | None = None,
        pixel_noise: list[Tensor] | None = None,
        mixing_prob: float = 0.0,
    ) -> Tensor:
        """Images (N, channels, image_size, image_size) for z (N, latent_dim) and labels (conditional models).

        `mixing_prob` (training's style-mixing regulariser, 0.9 in StyleGAN2): with that probability this batch
        takes the styles after a random crossover layer from a second z (global RNG), same labels.
        """
        ws = self.mapping(z, labels, truncation_psi, truncation_cutoff)
        if mixing_prob > 0 and self.num_ws > 1 and float(torch.rand(())) < mixing_prob:
            crossover = int(torch.randint(1, self.num_ws, ()))
            second = self.mapping(torch.randn_like(z), labels, truncation_psi, truncation_cutoff, update_w_avg=False)
            ws = self.mix(ws, second, crossover)
        return self.synthesis(ws, noise_mode, pixel_noise)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs, 2x2 average-pool down; a 1x1 skip; the sum times sqrt(0.5)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, activation="lrelu")
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.skip(downsample2x(x))
        x = self.conv1(downsample2x(self.conv0(x)))
        return (skip + x) * math.sqrt(0.5)


@NETWORKS.register("stylegan_discriminator", role="discriminator", family="stylegan", test_config=TINY_D)
class StyleGANDiscriminator(nn.Module):
    """StyleGAN2's residual discriminator: fromRGB, residual blocks down to the base grid, minibatch std
    (mbstd_channels 0 turns it off), conv, fully connected; the logit adds a projection term
    <embed(y), h> / sqrt(dim) when conditional (num_classes > 0)."""

    def __init__(
        self,
        num_classes: int = 0,
        image_size: int = 256,
        channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group_size: int = 4,
        mbstd_channels: int = 1,
    ):
        super().__init__()
        base, levels = resolution_plan(image_size)
        self.num_classes, self.image_size, self.channels = num_classes, image_size, channels
        resolutions = [base * 2**level for level in range(levels, -1, -1)]  # image_size .. base
        widths = [width_at(r, channel_base, channel_max) for r in resolutions]
        self.from_rgb = EqualConv2d(channels, widths[0], 1, activation="lrelu")
        self.blocks = nn.Sequential(*(DiscriminatorBlock(widths[i], widths[i + 1]) for i in range(levels)))
        width = widths[-1]
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_channels) if mbstd_channels else nn.Identity()
        self.conv = EqualConv2d(width + mbstd_channels, width, 3, activation="lrelu")
        self.fc = EqualLinear(width * base * base, width, activation="lrelu")
        self.out = EqualLinear(width, 1)
        self.embed = ClassEmbedding(num_classes, width) if num_classes else None
        self.feature_dim = width

    def discriminator_blocks(self) -> list[nn.Module]:
        """Freeze-D blocks, input first, as StyleGAN2 names them: one residual block per resolution (the first
        with fromRGB), then the epilogue (minibatch std, conv, dense layers, class embedding)."""
        residual = list(self.blocks)
        first = nn.ModuleList([self.from_rgb, *residual[:1]])
        epilogue = [self.mbstd, self.conv, self.fc, self.out, *([self.embed] if self.embed is not None else [])]
        return [first, *residual[1:], nn.ModuleList(epilogue)]

    def features(self, images: Tensor) -> Tensor:
        """h (N, feature_dim): the features the logit (and the projection) read."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise TransganError(
                f"{type(self).__name__} takes {self.image_size}x{self.image_size} images, got "
                f"{images.shape[-2]}x{images.shape[-1]}"
            )
        x = self.blocks(self.from_rgb(images))
        x = self.conv(self.mbstd(x))
        return self.fc(x.flatten(1))

    def forward(self, images: Tensor, labels: Tensor | None = None) -> Tensor:
        check_labels(self, labels)
        h = self.features(images)
        logit = self.out(h).flatten()
        if self.embed is not None:
            logit = logit + (self.embed(labels).to(h.dtype) * h).sum(dim=1) / math.sqrt(self.feature_dim)
        return logit
