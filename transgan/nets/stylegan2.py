"""StyleGAN2 generator as NVIDIA's StyleGAN2-ADA defines it: same layers, state-dict names and numbers.

Mapping (z and the embedded one-hot label, each normalised, then `fc0..` at 0.01 of the learning rate), one
tracked w average, synthesis blocks b4..b{res} ('skip', 'orig' or 'resnet'), modulated convs whose up-sampling
conv is a transposed convolution plus the [1,3,3,1] FIR filter (transgan.nets.fir), one scalar noise
strength per layer, and fp16 on the top `num_fp16_res` resolutions with activations clamped to +-conv_clamp
(fp16 on CUDA only; CPU runs in fp32). The modulated convolution is the official non-fused form (scale the
input, shared conv, scale the output), which keeps the batch dynamic in ONNX.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from transgan.errors import TransganError
from transgan.nets.equalized import EqualLinear, class_vectors, pixel_norm
from transgan.nets.fir import bias_act, conv2d_resample, fir_filter, upsample2d
from transgan.nets.generator_base import LatentGenerator, check_labels
from transgan.nets.layers import check_choice
from transgan.registry import NETWORKS

ARCHITECTURES = ("orig", "skip", "resnet")
NOISE_MODES = ("random", "const", "none", "given")
W_AVG_BETA = 0.995
TINY = {"channel_base": 64, "channel_max": 8, "image_size": 16, "num_classes": 3, "latent_dim": 8, "w_dim": 8}


def widths(resolutions: list[int], channel_base: int, channel_max: int) -> dict[int, int]:
    """Feature maps per resolution: min(channel_base // res, channel_max), as the official networks."""
    return {res: min(channel_base // res, channel_max) for res in resolutions}


def fp16_resolution(image_size: int, num_fp16_res: int) -> int:
    """The lowest resolution that runs in fp16 (the official rule; never below 8)."""
    return max(2 ** (int(math.log2(image_size)) + 1 - num_fp16_res), 8)


def modulated_conv2d(
    x: Tensor, weight: Tensor, styles: Tensor, noise: Tensor | None = None, up: int = 1, padding: int = 0,
    f: Tensor | None = None, demodulate: bool = True, flip_weight: bool = True,
) -> Tensor:  # fmt: skip
    """The official modulated convolution, non-fused: conv(x * s, w) * d + noise, d = 1/sqrt(sum (s w)^2 + 1e-8)."""
    N = x.shape[0]
    if x.dtype == torch.float16 and demodulate:
        # Pre-normalise (cancelled by demodulation) so fp16 does not overflow, as the official code does.
        weight = weight * (1 / math.sqrt(weight[0].numel()) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    x = x * styles.to(x.dtype).reshape(N, -1, 1, 1)
    x = conv2d_resample(x, weight.to(x.dtype), f, up=up, padding=padding, flip_weight=flip_weight)
    if demodulate:
        # sum_ik (s_i w_oik)^2 = sum_i s_i^2 sum_k w_oik^2: one (N, I) x (I, O) product.
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
        x = x * dcoefs.to(x.dtype).reshape(N, -1, 1, 1)
    return x if noise is None else x + noise.to(x.dtype)


class MappingNetwork(nn.Module):
    """z (and/or a label) -> w; broadcast to num_ws and truncated toward the tracked w average.

    `w_avg_classes` > 0 tracks one average per class (truncation then pulls toward the sample's class
    centre); 0 tracks the official single average. `num_ws` None returns w (N, w_dim) without tracking
    (the discriminator's label mapping)."""

    def __init__(
        self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8, lr_mul: float = 0.01,
        w_avg_classes: int = 0,
    ):  # fmt: skip
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        embed = w_dim if c_dim else 0
        if c_dim:
            self.embed = EqualLinear(c_dim, embed)
        features = [z_dim + embed] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", EqualLinear(features[i], features[i + 1], lr_mul=lr_mul, activation="lrelu"))
        if num_ws is not None:
            shape = (w_avg_classes, w_dim) if w_avg_classes else (w_dim,)
            self.register_buffer("w_avg", torch.zeros(shape))

    def c_of(self, labels: Tensor | None, n: int, device: torch.device) -> Tensor | None:
        """Labels as the official one-hot float32 rows (soft labels pass through)."""
        if not self.c_dim:
            return None
        if labels is None:
            raise TransganError(f"this network is class-conditional: pass labels (0..{self.c_dim - 1})")
        return class_vectors(labels.to(device), self.c_dim)

    def forward(
        self, z: Tensor | None, labels: Tensor | None = None, truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None, update_w_avg: bool | None = None,
    ) -> Tensor:  # fmt: skip
        parts = []
        if self.z_dim:
            parts.append(pixel_norm(z.float()))
            device, n = z.device, z.shape[0]
        else:
            device, n = labels.device, labels.shape[0]
        if self.c_dim:
            parts.append(pixel_norm(self.embed(self.c_of(labels, n, device))))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if self.num_ws is None:
            return x
        if self.training if update_w_avg is None else update_w_avg:
            self.update_w_avg(*self.w_sums(x.detach(), labels))
        ws = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        return self.truncate(ws, labels, truncation_psi, truncation_cutoff)

    def w_sums(self, w: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """(sums, counts) of a batch's w per tracked average: what update_w_avg needs (summable over processes)."""
        if self.w_avg.dim() == 1:
            return w.sum(dim=0), torch.tensor(float(w.shape[0]), device=w.device)
        weights = class_vectors(labels.to(w.device), self.w_avg.shape[0])  # (N, K)
        return weights.t() @ w, weights.sum(dim=0)

    @torch.no_grad()
    def update_w_avg(self, sums: Tensor, counts: Tensor) -> None:
        """w_avg <- lerp(batch mean, w_avg, 0.995) (per class present, with per-class tracking)."""
        if self.w_avg.dim() == 1:
            self.w_avg.copy_(torch.lerp(sums / counts, self.w_avg, W_AVG_BETA))
            return
        means = sums / counts.clamp(min=1e-8)[:, None]
        moved = torch.lerp(means, self.w_avg, W_AVG_BETA)
        self.w_avg.copy_(torch.where((counts > 0)[:, None], moved, self.w_avg))

    def truncate(self, ws: Tensor, labels: Tensor | None, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        """lerp(w_avg, ws, psi) on every layer, or on layers 0 .. cutoff-1 (torch.lerp, as the official)."""
        if psi == 1:
            return ws
        if self.w_avg.dim() == 1:
            center = self.w_avg.to(ws.dtype)
        else:
            center = (class_vectors(labels.to(ws.device), self.w_avg.shape[0]) @ self.w_avg)[:, None].to(ws.dtype)
        cutoff = ws.shape[1] if cutoff is None else max(0, min(int(cutoff), ws.shape[1]))
        pulled = torch.lerp(center.expand_as(ws[:, :cutoff]), ws[:, :cutoff], float(psi))
        return torch.cat([pulled, ws[:, cutoff:]], dim=1)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (up 2: transposed conv + FIR), scalar-strength noise, bias, leaky ReLU, clamp."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: int = 1, conv_clamp=None):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_ch))

    def forward(self, x: Tensor, w: Tensor, noise_mode: str, noise: Tensor | None = None, gain: float = 1) -> Tensor:
        styles = self.affine(w)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device)
        elif noise_mode == "const":
            noise = self.noise_const
        noise = None if noise_mode == "none" else noise * self.noise_strength
        x = modulated_conv2d(
            x, self.weight, styles, noise, self.up, 1, self.resample_filter, flip_weight=self.up == 1
        )  # the up-sampling conv is a true convolution (official flip_weight False)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, self.bias, "lrelu", gain, clamp)


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation, styles scaled by 1/sqrt(in_channels)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.weight_gain = 1 / math.sqrt(in_ch)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: const or up-sampling conv0, conv1, toRGB (every block for 'skip', the last otherwise)."""

    def __init__(
        self, in_ch: int, out_ch: int, w_dim: int, resolution: int, img_channels: int, is_last: bool,
        architecture: str, conv_clamp, use_fp16: bool,
    ):  # fmt: skip
        super().__init__()
        self.in_ch, self.resolution, self.architecture, self.use_fp16 = in_ch, resolution, architecture, use_fp16
        self.register_buffer("resample_filter", fir_filter(), persistent=False)
        self.num_conv = 1 if in_ch == 0 else 2
        self.num_torgb = 1 if is_last or architecture == "skip" else 0
        if in_ch == 0:
            self.const = nn.Parameter(torch.randn(out_ch, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_ch, out_ch, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, resolution, conv_clamp=conv_clamp)
        if self.num_torgb:
            self.torgb = ToRGBLayer(out_ch, img_channels, w_dim, conv_clamp=conv_clamp)
        if in_ch and architecture == "resnet":
            self.skip = nn.Module()  # the official Conv2dLayer(1x1, up 2, no bias): its weight only
            self.skip.weight = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))

    def forward(self, x, img, ws: Tensor, noise_mode: str, noises: list, force_fp32: bool) -> tuple[Tensor, Tensor]:
        fp16 = self.use_fp16 and not force_fp32 and ws.device.type == "cuda"
        dtype = torch.float16 if fp16 else torch.float32
        w = iter(ws.unbind(dim=1))
        if self.in_ch == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w), noise_mode, noises[0])
        elif self.architecture == "resnet":
            weight = self.skip.weight * (1 / math.sqrt(self.skip.weight[0].numel()))
            y = conv2d_resample(x.to(dtype), weight.to(dtype), self.resample_filter, up=2) * math.sqrt(0.5)
            x = self.conv0(x.to(dtype), next(w), noise_mode, noises[0])
            x = y + self.conv1(x, next(w), noise_mode, noises[1], gain=math.sqrt(0.5))
        else:
            x = self.conv0(x.to(dtype), next(w), noise_mode, noises[0])
            x = self.conv1(x, next(w), noise_mode, noises[1])
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if self.num_torgb:
            y = self.torgb(x, next(w)).float()
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> images, through blocks b4 .. b{image_size} (official names)."""

    def __init__(
        self, w_dim: int, image_size: int, channels: int, channel_base: int, channel_max: int, architecture: str,
        num_fp16_res: int, conv_clamp, inference_noise: str,
    ):  # fmt: skip
        super().__init__()
        self.inference_noise = inference_noise
        self.block_resolutions = [2**i for i in range(2, int(math.log2(image_size)) + 1)]
        width = widths(self.block_resolutions, channel_base, channel_max)
        fp16_res = fp16_resolution(image_size, num_fp16_res)
        self.num_ws, self.noise_resolutions = 0, []
        for res in self.block_resolutions:
            block = SynthesisBlock(
                width[res // 2] if res > 4 else 0, width[res], w_dim, res, channels, res == image_size,
                architecture, conv_clamp, res >= fp16_res,
            )  # fmt: skip
            self.num_ws += block.num_conv + (block.num_torgb if res == image_size else 0)
            self.noise_resolutions += [res] * block.num_conv
            setattr(self, f"b{res}", block)

    def forward(
        self, ws: Tensor, noise_mode: str | None = None, noises: list[Tensor] | None = None, force_fp32=False
    ) -> Tensor:
        """noise_mode None: 'random' in training, the network's inference_noise ('const') in eval mode; 'given'
        takes `noises`, one (N, 1, r, r) N(0, 1) tensor per conv layer (resolutions in noise_resolutions)."""
        if ws.dim() == 2:
            ws = ws[:, None].expand(-1, self.num_ws, -1)
        if ws.shape[1] != self.num_ws:
            raise TransganError(f"synthesis needs {self.num_ws} ws per sample, got {ws.shape[1]}")
        noise_mode = noise_mode or ("random" if self.training else self.inference_noise)
        check_choice("noise_mode", noise_mode, NOISE_MODES)
        if noise_mode == "given" and (noises is None or len(noises) != len(self.noise_resolutions)):
            raise TransganError(f"noise_mode 'given': pass {len(self.noise_resolutions)} noise tensors")
        noises = list(noises) if noise_mode == "given" else [None] * len(self.noise_resolutions)
        ws = ws.float()
        x = img = None
        w_index = noise_index = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_index, block.num_conv + block.num_torgb)
            block_noises = noises[noise_index : noise_index + block.num_conv]
            x, img = block(x, img, block_ws, noise_mode, block_noises, force_fp32)
            w_index += block.num_conv
            noise_index += block.num_conv
        return img


@NETWORKS.register("stylegan2_generator", role="sampler", family="stylegan", test_config=TINY)
class StyleGAN2Generator(LatentGenerator):
    """StyleGAN2-ADA's Generator (official numbers and state-dict names; see the module docstring).

    `mapping(z, labels, truncation_psi, truncation_cutoff)` -> ws, `synthesis(ws, noise_mode)` -> images,
    `mix(ws_a, ws_b, crossover)`; labels are class indices (or soft rows), fed as the official one-hot c.
    Eval-mode passes use `inference_noise` ('const': a seed always gives the same image); training passes
    draw random noise. `w_avg_per_class` tracks one w average per class instead of the official single one.
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
        architecture: str = "skip",
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        w_avg_per_class: bool = False,
        inference_noise: str = "const",
    ):
        check_choice("architecture", architecture, ARCHITECTURES)
        check_choice("inference_noise", inference_noise, ("random", "const", "none"))
        if image_size < 8 or image_size & (image_size - 1):
            raise TransganError(f"stylegan2_generator: image_size {image_size} must be a power of two, at least 8")
        if mapping_layers < 1 or latent_dim < 1 or w_dim < 1:
            raise TransganError("stylegan2_generator: latent_dim, w_dim and mapping_layers must be at least 1")
        super().__init__(latent_dim, num_classes, image_size, channels)
        self.w_dim = w_dim
        self.synthesis = SynthesisNetwork(
            w_dim, image_size, channels, channel_base, channel_max, architecture, num_fp16_res, conv_clamp,
            inference_noise,
        )  # fmt: skip
        self.num_ws = self.synthesis.num_ws
        self.noise_resolutions = self.synthesis.noise_resolutions
        classes = num_classes if w_avg_per_class else 0
        self.mapping = MappingNetwork(
            latent_dim, num_classes, w_dim, self.num_ws, mapping_layers, mapping_lr_mul, classes
        )

    def truncate(self, ws: Tensor, labels: Tensor | None, psi: float = 1.0, cutoff: int | None = None) -> Tensor:
        """The truncation trick: ws[:, :cutoff] pulled toward the average w, lerp(w_avg, w, psi)."""
        return self.mapping.truncate(ws, labels, psi, cutoff)

    @staticmethod
    def mix(ws_a: Tensor, ws_b: Tensor, crossover: int) -> Tensor:
        """Style mixing: layers before `crossover` from ws_a, the rest from ws_b (the official ws[:, cutoff:])."""
        return torch.cat([ws_a[:, :crossover], ws_b[:, crossover:]], dim=1)

    @staticmethod
    def latents_for_seeds(seeds: list[int], latent_dim: int) -> Tensor:
        """z of the official generate.py: numpy RandomState(seed).randn(1, z_dim) per seed."""
        return torch.from_numpy(np.concatenate([np.random.RandomState(s).randn(1, latent_dim) for s in seeds])).float()

    def forward(
        self, z: Tensor, labels: Tensor | None = None, truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None, noise_mode: str | None = None, force_fp32: bool = False,
    ) -> Tensor:  # fmt: skip
        check_labels(self, labels)
        ws = self.mapping(z, labels, truncation_psi, truncation_cutoff)
        return self.synthesis(ws, noise_mode, force_fp32=force_fp32)
