"""ProGAN networks: fade-in blending, the stage interface and its saved state, minibatch std, drift, export."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import transgan
from transgan.errors import TransganError
from transgan.export.onnx import export_onnx
from transgan.losses import drift_penalty
from transgan.nets import build_network
from transgan.nets.equalized import EqualConv2d, EqualLinear, MinibatchStd, fade_images, pixel_norm

TINY = {"channel_base": 64, "channel_max": 8}


def pair(image_size: int = 16, num_classes: int = 0, **options):
    torch.manual_seed(0)
    G = build_network("progan_generator", image_size=image_size, num_classes=num_classes, latent_dim=8, **TINY)
    D = build_network("progan_discriminator", image_size=image_size, num_classes=num_classes, **TINY, **options)
    return G.eval(), D.eval()


def test_built_fully_grown_with_one_stage_per_resolution():
    G, D = pair(32)
    assert (G.stages, G.depth, G.alpha, G.resolution) == (4, 3, 1.0, 32)
    assert [G.stage_resolution(s) for s in range(G.stages)] == [4, 8, 16, 32]
    G28, _ = pair(28)  # MNIST's size: a 7x7 base grid
    assert [G28.stage_resolution(s) for s in range(G28.stages)] == [7, 14, 28]
    for depth in range(G.stages):
        G.set_stage(depth, 0.5)
        D.set_stage(depth, 0.5)
        images = G(torch.randn(2, 8))
        assert images.shape == (2, 3, G.resolution, G.resolution) == (2, 3, 4 * 2**depth, 4 * 2**depth)
        assert D(images).shape == (2,)


def test_generator_fade_in_blends_the_upsampled_old_output_with_the_new_block():
    G, _ = pair(16)
    z = torch.randn(3, 8)
    with torch.no_grad():
        G.set_stage(1, 1.0)
        old = F.interpolate(G(z), scale_factor=2.0, mode="nearest")
        G.set_stage(2, 1.0)
        new = G(z)
        G.set_stage(2, 0.0)
        assert torch.equal(G(z), old)  # alpha 0: exactly the previous stage, upsampled
        G.set_stage(2, 0.25)
        torch.testing.assert_close(G(z), 0.75 * old + 0.25 * new)
        # alpha 1 is the new block alone: the old toRGB no longer matters.
        G.set_stage(2, 1.0)
        G.to_rgb[1].weight.add_(1.0)
        assert torch.equal(G(z), new)
        G.set_stage(1, 1.0)
        assert not torch.allclose(F.interpolate(G(z), scale_factor=2.0), old)  # while the old output moved


def test_discriminator_fade_in_blends_the_downsampled_input():
    _, D = pair(16)
    images = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        D.set_stage(1, 1.0)
        old = D(F.avg_pool2d(images, 2))
        D.set_stage(2, 0.0)
        assert torch.equal(D(images), old)  # alpha 0: the previous stage on the downsampled images
        D.set_stage(2, 1.0)
        new = D(images)
        D.set_stage(2, 0.5)
        h_old = D.from_rgb[1](F.avg_pool2d(images, 2))
        h_new = D.blocks[1](D.from_rgb[2](images))
        mixed = D.conv(D.mbstd(D.blocks[0](0.5 * h_old + 0.5 * h_new)))
        torch.testing.assert_close(D(images), D.out(D.fc(mixed.flatten(1))).flatten())
        assert not torch.allclose(new, old)
    with pytest.raises(TransganError, match="stage 2 takes 16x16"):
        D(torch.zeros(1, 3, 8, 8))


def test_grow_and_set_stage():
    G, _ = pair(16)
    G.set_stage(0)
    G.grow()
    assert (G.depth, G.alpha, G.resolution) == (1, 0.0, 8)
    G.grow()
    with pytest.raises(TransganError, match="fully grown"):
        G.grow()
    with pytest.raises(TransganError, match="stage 3 does not exist"):
        G.set_stage(3)
    with pytest.raises(TransganError, match="alpha 1.5"):
        G.set_stage(1, 1.5)


def test_stage_travels_with_the_weights(tmp_path):
    G, D = pair(16, num_classes=2)
    G.set_stage(1, 0.37)
    D.set_stage(1, 0.37)
    assert G.state_dict()["_extra_state"].tolist() == [1.0, 0.37]
    copy, _ = pair(16, num_classes=2)
    copy.load_state_dict(G.state_dict())
    assert (copy.depth, copy.alpha) == (1, 0.37)
    path = transgan.save({"G": G, "D": D}, tmp_path / "mid-fade.safetensors", task="progan")
    loaded_G, loaded_D = transgan.load(path), transgan.load(path, "D")
    assert (loaded_G.depth, loaded_G.alpha, loaded_D.depth, loaded_D.alpha) == (1, 0.37, 1, 0.37)
    z, labels = torch.randn(2, 8), torch.tensor([1, 0])
    with torch.no_grad():
        assert torch.equal(loaded_G(z, labels), G(z, labels))
        assert torch.equal(loaded_D(G(z, labels), labels), D(G(z, labels), labels))


def test_gradients_reach_the_active_layers_during_a_fade():
    G, D = pair(16, num_classes=3)
    G.train().set_stage(2, 0.5)
    D.train().set_stage(2, 0.5)
    labels = torch.tensor([0, 1, 2, 1])
    D(G(torch.randn(4, 8), labels), labels).sum().backward()
    # Only the toRGB / fromRGB of stage 0 sit idle (DDP needs find_unused_parameters for growing nets).
    for net, idle in ((G, ["to_rgb.0.bias", "to_rgb.0.weight"]), (D, ["from_rgb.0.bias", "from_rgb.0.weight"])):
        assert sorted(name for name, p in net.named_parameters() if p.grad is None) == idle


def test_fade_images():
    images = torch.randn(2, 1, 4, 4)
    coarse = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2.0, mode="nearest")
    assert torch.equal(fade_images(images, 0.0), coarse)
    assert fade_images(images, 1.0) is images
    torch.testing.assert_close(fade_images(images, 0.3), 0.7 * coarse + 0.3 * images)


def test_minibatch_std_against_hand_values():
    # 4 samples, 2 channels, 1 pixel; group size 2: sample n joins group n % 2, so groups {0, 2} and {1, 3}.
    x = torch.tensor([[1.0, 0.0], [2.0, 4.0], [3.0, 2.0], [6.0, 4.0]]).view(4, 2, 1, 1)
    out = MinibatchStd(group_size=2, num_channels=1)(x)
    # group {0, 2}: stds |1-3|/2 = 1 and |0-2|/2 = 1 -> 1; group {1, 3}: |2-6|/2 = 2 and 0 -> 1.
    expected = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert out.shape == (4, 3, 1, 1) and torch.equal(out[:, :2], x)
    torch.testing.assert_close(out[:, 2].flatten(), expected, atol=1e-4, rtol=0)
    # Two stat channels: one per channel slice; over the whole batch (group 4) on a 2x1 image.
    y = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(4, 1, 1, 1).repeat(1, 2, 2, 1)
    y[:, 1] *= 2
    out = MinibatchStd(group_size=4, num_channels=2)(y)
    std = math.sqrt(5.0)  # population std of 0, 2, 4, 6
    torch.testing.assert_close(out[:, 2], torch.full((4, 2, 1), std), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 3], torch.full((4, 2, 1), 2 * std), atol=1e-4, rtol=0)
    # A batch of 6 with group size 4 uses groups of 3 (the largest divisor), sample n in group n % 2.
    z = torch.arange(6.0).view(6, 1, 1, 1)
    out = MinibatchStd(group_size=4)(z)[:, 1].flatten()
    torch.testing.assert_close(out, torch.full((6,), math.sqrt(8 / 3)), atol=1e-4, rtol=0)  # {0,2,4}, {1,3,5}


def test_drift_penalty():
    assert drift_penalty(torch.tensor([1.0, -2.0, 3.0, 0.0])).item() == pytest.approx(3.5)


def test_equalised_layers_scale_at_run_time():
    torch.manual_seed(0)
    linear = EqualLinear(16, 4, bias_init=1.0, lr_mul=0.01)
    assert linear.weight.std().item() == pytest.approx(100, rel=0.3)  # stored / lr_mul
    x = torch.randn(3, 16)
    expected = x @ (linear.weight * 0.01 / 4).t() + 1.0
    torch.testing.assert_close(linear(x), expected)
    conv = EqualConv2d(2, 3, 3, activation="lrelu")
    image = torch.randn(1, 2, 5, 5)
    expected = F.leaky_relu(F.conv2d(image, conv.weight / math.sqrt(18), padding=1), 0.2) * math.sqrt(2)
    torch.testing.assert_close(conv(image), expected)
    torch.testing.assert_close(pixel_norm(torch.tensor([[3.0, 4.0]])), torch.tensor([[3.0, 4.0]]) / math.sqrt(12.5))


@pytest.mark.slow
def test_onnx_parity_mid_fade_conditional(tmp_path):
    G, _ = pair(8, num_classes=3)
    G.set_stage(1, 0.6)
    report = export_onnx(G, tmp_path / "progan.onnx")
    assert report.max_abs_diff <= 1e-4 and report.inputs == ["noise", "class"]
