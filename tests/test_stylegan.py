"""StyleGAN2 networks: modulated conv formula, truncation, style mixing, noise modes, export, model files, R1/PL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import transgan
from transgan.errors import TransganError
from transgan.export.onnx import export_onnx
from transgan.losses import (
    adversarial_loss,
    decision_threshold,
    discriminator_accuracy,
    lazy_adam_settings,
    lazy_r1_loss,
    path_length_penalty,
    r1_gamma_for,
    r1_penalty,
)
from transgan.nets import build_network
from transgan.nets.stylegan import W_AVG_BETA, modulated_conv2d

TINY = {"channel_base": 64, "channel_max": 8, "latent_dim": 8, "w_dim": 8, "mapping_layers": 2}


def tiny_generator(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    G = build_network("stylegan_generator", **{"image_size": 16, **TINY, **options})
    with torch.no_grad():  # noise strengths start at 0: give them a value so the noise path counts
        for name, parameter in G.named_parameters():
            if name.endswith("noise.strength"):
                parameter.normal_(0.0, 0.5)
    return G


def test_modulated_conv_equals_the_formula():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 5, generator=generator)
    weight = torch.randn(4, 3, 3, 3, generator=generator)
    styles = torch.rand(2, 3, generator=generator) + 0.5
    for demodulate in (True, False):
        ours = modulated_conv2d(x, weight, styles, demodulate)
        for n in range(2):
            w = weight * styles[n][None, :, None, None]  # w'_oik = s_i * w_oik
            if demodulate:  # w''_oik = w'_oik / sqrt(sum_ik w'_oik^2 + eps)
                w = w / torch.sqrt(w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
            expected = F.conv2d(x[n : n + 1], w, padding=1)
            torch.testing.assert_close(ours[n : n + 1], expected, rtol=1e-5, atol=1e-5)


def test_demodulation_keeps_unit_variance():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(8, 64, 24, 24, generator=generator)
    weight = torch.randn(32, 64, 3, 3, generator=generator) * 5  # any scale: demodulation removes it
    styles = torch.rand(8, 64, generator=generator) * 3 + 0.1
    y = modulated_conv2d(x, weight, styles, demodulate=True)[:, :, 1:-1, 1:-1]  # away from the zero padding
    assert y.var().item() == pytest.approx(1.0, abs=0.05)
    undemodulated = modulated_conv2d(x, weight, styles, demodulate=False)
    assert undemodulated.var().item() > 10  # without it the scale leaks through


@pytest.mark.parametrize(
    ("size", "channels", "num_classes", "style_mode"),
    [(8, 3, 0, "demod"), (16, 1, 3, "demod"), (28, 1, 10, "adain"), (32, 3, 0, "adain")],
)
def test_shapes_and_gradients(size, channels, num_classes, style_mode):
    G = tiny_generator(image_size=size, channels=channels, num_classes=num_classes, style_mode=style_mode).train()
    D = build_network(
        "stylegan_discriminator",
        image_size=size,
        channels=channels,
        num_classes=num_classes,
        channel_base=64,
        channel_max=8,
    )
    labels = torch.tensor([0, 1, 2, 0]) % max(num_classes, 1) if num_classes else None
    images = G(G.sample_latent(4), labels, mixing_prob=1.0)
    assert images.shape == (4, channels, size, size)
    logits = D(images, labels)
    assert logits.shape == (4,)
    logits.sum().backward()
    for net in (G, D):
        missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not missing, f"no gradient for {missing}"
    assert G.num_ws == 2 * int(math.log2(size // G.base)) + 2 and len(G.noise_resolutions) == G.num_ws - 1


def test_sizes_beyond_the_base_rule_are_clear():
    with pytest.raises(TransganError, match="image_size 100"):
        build_network("stylegan_generator", image_size=100, **TINY)
    with pytest.raises(TransganError, match="style_mode 'bogus'"):
        build_network("stylegan_generator", style_mode="bogus", **TINY)
    D = build_network("stylegan_discriminator", image_size=16, channel_base=64, channel_max=8)
    with pytest.raises(TransganError, match="16x16"):
        D(torch.zeros(1, 3, 8, 8))
    with pytest.raises(TransganError, match="class-conditional"):
        tiny_generator(num_classes=3)(torch.zeros(1, 8))


def test_w_average_is_tracked_per_class_in_training_only():
    G = tiny_generator(num_classes=3)
    z, labels = torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 1, 0])
    G.eval()(z, labels)
    assert torch.equal(G.w_avg, torch.zeros(3, 8))  # eval passes leave it alone
    G.train()(z, labels)
    w = G.mapping(z, labels, update_w_avg=False)[:, 0]
    for cls in (0, 1):
        torch.testing.assert_close(G.w_avg[cls], (1 - W_AVG_BETA) * w[labels == cls].mean(0))
    assert torch.equal(G.w_avg[2], torch.zeros(8))  # class 2 was not in the batch


def trained_w_avg(G: torch.nn.Module, num_classes: int) -> None:
    G.train()
    for _ in range(50):
        labels = torch.arange(8) % num_classes if num_classes else None
        G.mapping(torch.randn(8, G.latent_dim), labels)
    G.eval()


@pytest.mark.parametrize("num_classes", [0, 3])
def test_truncation_psi_zero_gives_one_image_per_class(num_classes):
    G = tiny_generator(num_classes=num_classes)
    trained_w_avg(G, num_classes)
    with torch.no_grad():
        for cls in range(max(num_classes, 1)):
            labels = torch.full((5,), cls) if num_classes else None
            images = G(torch.randn(5, 8), labels, truncation_psi=0.0)
            assert (images - images[:1]).abs().max() < 1e-6, "every seed must give the class's average image"
            free = G(torch.randn(5, 8), labels)
            assert (free - free[:1]).abs().max() > 1e-2
        if num_classes:  # each class has its own centre
            a = G(torch.randn(1, 8), torch.tensor([0]), truncation_psi=0.0)
            b = G(torch.randn(1, 8), torch.tensor([1]), truncation_psi=0.0)
            assert (a - b).abs().max() > 1e-3
        z = torch.randn(2, 8)
        labels = torch.tensor([0, 1]) if num_classes else None
        torch.testing.assert_close(G(z, labels, truncation_psi=1.0), G.synthesis(G.mapping(z, labels)))
        # A cutoff keeps the later layers' styles: psi 0 with cutoff 0 is no truncation at all.
        torch.testing.assert_close(G(z, labels, truncation_psi=0.0, truncation_cutoff=0), G(z, labels))


def test_style_mixing_crossover():
    G = tiny_generator(num_classes=3).eval()
    labels = torch.tensor([2, 1])
    with torch.no_grad():
        ws_a, ws_b = G.mapping(torch.randn(2, 8), labels), G.mapping(torch.randn(2, 8), labels)
        image_a, image_b = G.synthesis(ws_a), G.synthesis(ws_b)
        assert torch.equal(G.synthesis(G.mix(ws_a, ws_b, 0)), image_b)
        assert torch.equal(G.synthesis(G.mix(ws_a, ws_b, G.num_ws)), image_a)
        mixed = G.synthesis(G.mix(ws_a, ws_b, 2))
        assert (mixed - image_a).abs().max() > 1e-3 and (mixed - image_b).abs().max() > 1e-3
        # One w (N, w_dim) is broadcast to every layer.
        assert torch.equal(G.synthesis(ws_a[:, 0]), image_a)


def test_noise_modes():
    G = tiny_generator()
    z = torch.randn(2, 8)
    with torch.no_grad():
        G.eval()
        assert torch.equal(G(z), G(z))  # eval default: the constant noise saved with the weights
        assert not torch.equal(G(z, noise_mode="random"), G(z, noise_mode="random"))
        zeros = [torch.zeros(1, 1, r, r) for r in G.noise_resolutions]
        assert torch.equal(G(z, noise_mode="given", pixel_noise=zeros), G(z, noise_mode="none"))
        const = [layer.noise_const for layer in G.modules() if hasattr(layer, "noise_const")]
        assert torch.equal(G(z, noise_mode="given", pixel_noise=const), G(z, noise_mode="const"))
        G.train()
        assert not torch.equal(G(z), G(z))  # training draws noise
    with pytest.raises(TransganError, match="pixel_noise"):
        G(z, noise_mode="given")
    with pytest.raises(TransganError, match="noise_mode 'sometimes'"):
        G(z, noise_mode="sometimes")


def test_projection_discriminator_reads_the_class():
    torch.manual_seed(0)
    D = build_network("stylegan_discriminator", image_size=16, num_classes=3, channel_base=64, channel_max=8)
    images = torch.randn(4, 3, 16, 16)
    assert not torch.allclose(D(images, torch.tensor([0, 0, 0, 0])), D(images, torch.tensor([1, 1, 1, 1])))
    soft = F.one_hot(torch.tensor([2, 1, 0, 2]), 3).float()
    torch.testing.assert_close(D(images, soft), D(images, torch.tensor([2, 1, 0, 2])))


def test_model_file_round_trip(tmp_path):
    G = tiny_generator(num_classes=3, style_mode="adain")
    trained_w_avg(G, 3)
    path = transgan.save(G, tmp_path / "g.safetensors", task="stylegan", class_names=["a", "b", "c"])
    loaded = transgan.load(path)
    z, labels = torch.randn(3, 8), torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.equal(loaded(z, labels, truncation_psi=0.7), G.eval()(z, labels, truncation_psi=0.7))
    assert torch.equal(loaded.w_avg, G.w_avg) and loaded.transgan_config["style_mode"] == "adain"


@pytest.mark.slow
def test_onnx_parity_conditional(tmp_path):
    G = tiny_generator(num_classes=3, image_size=8).eval()
    report = export_onnx(G, tmp_path / "g.onnx")
    assert report.max_abs_diff <= 1e-4 and report.inputs == ["noise", "class"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    noise = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    labels = np.array([2, 0, 1])
    (ours,) = session.run(None, {"noise": noise, "class": labels})
    with torch.no_grad():
        expected = G(torch.from_numpy(noise), torch.from_numpy(labels)).numpy()
    assert np.abs(ours - expected).max() <= 1e-4 and np.abs(expected).max() > 0.05


# -- regularisers StyleGAN trains with -----------------------------------------------------------------


class Quadratic(torch.nn.Module):
    """D(x) = sum(a * x^2) per sample: grad = 2 a x, known by hand."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = a

    def forward(self, x: torch.Tensor, labels=None) -> torch.Tensor:
        return (self.a * x.square()).flatten(1).sum(1)


def test_r1_and_lazy_r1_against_hand_values():
    a = torch.tensor([[[1.0, -2.0]]])  # (1, 1, 2) broadcast over (N, 1, 1, 2)
    D = Quadratic(a)
    x = torch.tensor([[[[1.0, 0.5]]], [[[-1.0, 2.0]]]])
    # D = 1 - 0.5 = 0.5 and 1 - 8 = -7; grad per sample = 2 a x: (2, -2) and (-2, -8); ||.||^2 = 8 and 68;
    # R1 = 0.5 * mean = 19.
    real = x.clone().requires_grad_(True)
    assert r1_penalty(D(real), real).item() == pytest.approx(19.0)
    loss, pred = lazy_r1_loss(D, x, gamma=0.5, every=4)
    assert loss.item() == pytest.approx(0.5 * 4 * 19.0) and pred.tolist() == [0.5, -7.0]
    assert not x.requires_grad  # the caller's tensor is left alone
    with pytest.raises(TransganError, match="--r1-every 0"):
        lazy_r1_loss(D, x, gamma=1.0, every=0)


def test_lazy_adam_and_gamma_heuristic():
    lr, betas = lazy_adam_settings(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17) and betas == (0.0, pytest.approx(0.99 ** (16 / 17)))
    assert r1_gamma_for(32, 64) == pytest.approx(0.0032) and r1_gamma_for(256, 64) == pytest.approx(0.2048)


def test_path_length_penalty_on_a_linear_synthesis():
    # images = mean over layers of ws @ M: grad wrt ws[n, l] = M y_n / L, so the length is ||M y_n|| / L.
    generator = torch.Generator().manual_seed(0)
    L, Dw, H = 3, 4, 2
    M = torch.randn(Dw, H * H, generator=generator)
    ws = torch.randn(2, L, Dw, generator=generator).requires_grad_(True)
    images = (ws.mean(1) @ M).view(2, 1, H, H)
    penalty, mean = path_length_penalty(images, ws, 1.0, decay=0.5, generator=torch.Generator().manual_seed(7))
    y = torch.randn(2, 1, H, H, generator=torch.Generator().manual_seed(7)) / H
    lengths = (y.flatten(1) @ M.t()).norm(dim=1) / L
    expected_mean = 1.0 + 0.5 * (lengths.mean() - 1.0)
    assert mean.item() == pytest.approx(expected_mean.item(), rel=1e-5)
    assert penalty.item() == pytest.approx((lengths - expected_mean).square().mean().item(), rel=1e-5)


def test_path_length_penalty_trains_the_generator():
    G = tiny_generator(image_size=8).train()
    ws = G.mapping(torch.randn(4, 8))
    penalty, mean = path_length_penalty(G.synthesis(ws), ws, 0.0)
    penalty.backward()
    assert mean.item() > 0 and not mean.requires_grad
    assert G.blocks[-1].conv1.weight.grad.abs().sum() > 0 and G.mapping_net[0].weight.grad.abs().sum() > 0


def test_discriminator_accuracy():
    real, fake = torch.tensor([2.0, -1.0, 0.5, 0.0]), torch.tensor([-3.0, 1.0, 0.25, -0.5])
    real_acc, fake_acc = discriminator_accuracy(real, fake)
    assert real_acc.item() == pytest.approx(0.5) and fake_acc.item() == pytest.approx(0.5)
    lsgan = adversarial_loss("lsgan")
    real_acc, fake_acc = discriminator_accuracy(real, fake, decision_threshold(lsgan))
    assert real_acc.item() == pytest.approx(0.25) and fake_acc.item() == pytest.approx(0.75)
    assert decision_threshold(adversarial_loss("nonsaturating")) == 0.0
