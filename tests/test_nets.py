"""Reference-style translators and image discriminators: init, bias rule, sizes, norms, spectral norm, options.

Forward passes, shapes and model-file round trips of every registered network are in test_registry_models.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_registry_models import example_inputs, tiny_config
from torch import nn

import transgan
from transgan.errors import TransganError
from transgan.nets import build_network, network_options
from transgan.nets.layers import init_weights, norm_layer, use_bias

TRANSLATORS = transgan.list_models(role="translator")
# Image discriminators: forward(x) only. Samplers (forward(z, labels)) and class-conditional discriminators
# (those with a num_classes option, forward(x, labels)) are tested by their owner's test file.
DISCRIMINATORS = [
    name for name in transgan.list_models(role="discriminator") if "num_classes" not in network_options(name)
]
NETWORKS = TRANSLATORS + DISCRIMINATORS
CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def tiny(arch: str, **overrides) -> nn.Module:
    return build_network(arch, **{**tiny_config(arch), **overrides})


def make_input(arch: str, net: nn.Module, batch: int = 2) -> torch.Tensor:
    return example_inputs(arch, net)[0][:batch]


def conv_weights(net: nn.Module) -> torch.Tensor:
    return torch.cat([m.weight.detach().flatten() for m in net.modules() if isinstance(m, CONVS)])


def test_registry_has_the_built_in_networks():
    for name in ("resnet_9blocks", "resnet_6blocks", "unet_256", "unet_128", "mobile_resnet"):
        assert name in TRANSLATORS
    for name in ("basic", "n_layers", "pixel"):
        assert name in DISCRIMINATORS


@pytest.mark.parametrize("arch", NETWORKS)
def test_every_parameter_gets_a_gradient(arch):
    torch.manual_seed(0)
    net = tiny(arch).train()
    net(make_input(arch, net)).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"


def test_size_multiples_and_non_square_inputs():
    assert build_network("resnet_9blocks", ngf=4).size_multiple == 4
    assert build_network("unet_128", ngf=4).size_multiple == 128
    assert build_network("unet", ngf=4, num_downs=5).size_multiple == 32
    # The reference U-Net is built for one size, but any multiple of 2**num_downs works.
    unet = build_network("unet", ngf=4, num_downs=5).eval()
    assert unet(torch.zeros(1, 3, 64, 96)).shape == (1, 3, 64, 96)
    resnet = build_network("resnet_6blocks", ngf=4).eval()
    assert resnet(torch.zeros(1, 3, 20, 36)).shape == (1, 3, 20, 36)


@pytest.mark.parametrize(("n_layers", "size", "expected"), [(3, 256, 30), (3, 64, 6), (5, 256, 6), (1, 32, 14)])
def test_patchgan_output_size(n_layers, size, expected):
    net = build_network("n_layers", ndf=4, n_layers=n_layers).eval()
    assert net(torch.zeros(1, 3, size, size)).shape == (1, 1, expected, expected)


def test_pixel_discriminator_keeps_resolution():
    net = build_network("pixel", ndf=4, input_nc=6).eval()
    assert net(torch.zeros(1, 6, 9, 7)).shape == (1, 1, 9, 7)


@pytest.mark.parametrize("arch", NETWORKS)
def test_reference_init(arch):
    options = network_options(arch)
    wide = {name: 16 for name in ("ngf", "ndf") if name in options}
    norm = {"norm": "batch"} if "norm" in options else {}
    net = tiny(arch, **wide, **norm)
    weights = conv_weights(net)
    assert abs(weights.mean()) < 0.003
    assert weights.std() == pytest.approx(0.02, rel=0.15)
    for module in net.modules():
        if isinstance(module, (*CONVS, nn.BatchNorm2d)) and module.bias is not None:
            assert torch.all(module.bias == 0)
    bn_weights = [m.weight.detach() for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    if bn_weights:
        gamma = torch.cat(bn_weights)
        assert abs(gamma.mean() - 1) < 0.01 and gamma.std() < 0.04


@pytest.mark.parametrize("init", ["xavier", "kaiming", "orthogonal"])
def test_other_inits(init):
    torch.manual_seed(0)
    net = build_network("basic", ndf=8, init=init, init_gain=0.5)
    weight = net.model[8].weight.detach().flatten(1)  # 32 -> 64 channels, 4x4: fan_in 512, fan_out 1024
    if init == "xavier":
        assert weight.std() == pytest.approx(0.5 * math.sqrt(2 / (512 + 1024)), rel=0.1)
    elif init == "kaiming":
        assert weight.std() == pytest.approx(math.sqrt(2 / 512), rel=0.1)
    else:
        torch.testing.assert_close(weight @ weight.T, 0.25 * torch.eye(64), atol=1e-5, rtol=0)


def test_use_bias_rule_and_norm_layers():
    assert use_bias("batch") is False and use_bias("instance") is True and use_bias("none") is True
    batch, instance = norm_layer("batch")(8), norm_layer("instance")(8)
    assert batch.affine and batch.track_running_stats
    assert not instance.affine and not instance.track_running_stats
    assert isinstance(norm_layer("none")(8), nn.Identity)
    with pytest.raises(TransganError, match="norm 'group'"):
        norm_layer("group")
    with pytest.raises(TransganError, match="init 'uniform'"):
        init_weights(nn.Conv2d(1, 1, 1), "uniform")


@pytest.mark.parametrize("arch", [arch for arch in NETWORKS if "norm" in network_options(arch)])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_bias_only_where_no_affine_norm_follows(arch, norm):
    net = tiny(arch, norm=norm)
    followed_by_batch_norm, bias_free = 0, []
    for prefix, sequence in net.named_modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        for index, (layer, after) in enumerate(zip(sequence, list(sequence)[1:])):
            if isinstance(layer, CONVS) and isinstance(after, nn.BatchNorm2d):
                followed_by_batch_norm += 1
                assert layer.bias is None
            elif isinstance(layer, CONVS) and layer.bias is None:
                bias_free.append(f"{prefix}.{index}")
    assert (followed_by_batch_norm > 0) == (norm == "batch")
    # The reference's exceptions, kept for its key layout: the U-Net's outermost and innermost down convs
    # take the bias rule of the norm although no norm follows them.
    if norm == "batch" and arch.startswith("unet"):
        innermost = max(bias_free, key=len)
        assert bias_free == ["model.model.0", innermost] and innermost.endswith(".model.1")
    else:
        assert bias_free == []


@pytest.mark.parametrize("arch", [arch for arch in NETWORKS if "spectral_norm" in network_options(arch)])
def test_spectral_norm_option(arch, tmp_path):
    torch.manual_seed(0)
    net = tiny(arch, spectral_norm=True).train()
    keys = net.state_dict().keys()
    for name, module in net.named_modules():
        if isinstance(module, CONVS):  # the plain weight is replaced by the parametrization's tensors
            assert f"{name}.weight" not in keys and f"{name}.parametrizations.weight.original" in keys
    x = make_input(arch, net)
    for _ in range(10):  # power iterations run in train-mode forwards
        net(x)
    net.eval()
    for module in net.modules():
        if isinstance(module, CONVS):
            assert nn.utils.parametrize.is_parametrized(module, "weight")
            sigma = torch.linalg.matrix_norm(module.weight.detach().flatten(1), ord=2)
            assert sigma == pytest.approx(1.0, abs=0.05)
    # The power-iteration vectors travel in the model file: the loaded network gives the same scores.
    loaded = transgan.load(transgan.save(net, tmp_path / "sn.safetensors"))
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))


@pytest.mark.parametrize(
    ("arch", "option", "value"),
    [
        ("resnet_9blocks", "padding", "circular"),
        ("mobile_resnet", "padding", "circular"),
        ("unet_256", "norm", "layer"),
        ("basic", "init", "uniform"),
        ("mobile_resnet", "channels", "16_16"),
        ("unet", "num_downs", 3),
    ],
)
def test_bad_option_values_give_one_clear_error(arch, option, value):
    with pytest.raises(TransganError, match=option):
        build_network(arch, **{option: value})


@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
@pytest.mark.parametrize("arch", ["resnet_6blocks", "mobile_resnet"])
def test_padding_options(arch, padding):
    net = tiny(arch, padding=padding, dropout=True).eval()
    x = make_input(arch, net, batch=1)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))  # dropout is off in eval mode
    assert any(isinstance(m, nn.Dropout) for m in net.modules())
    pads = {nn.ReflectionPad2d: "reflect", nn.ReplicationPad2d: "replicate"}
    # The stem and output convs always reflect-pad; the residual blocks follow the option.
    block_pads = {pads[type(m)] for name, m in net.named_modules() if "conv_block" in name and type(m) in pads}
    assert block_pads == (set() if padding == "zero" else {padding})


def test_unet_dropout_sits_in_the_middle_levels():
    net = build_network("unet_256", ngf=4, dropout=True)
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 3  # num_downs - 5, as in the reference


def test_mobile_resnet_matches_gan_compression_size_and_clamps_input():
    net = build_network("mobile_resnet").eval()
    assert sum(p.numel() for p in net.parameters()) == 356_867  # GAN Compression's horse2zebra model
    x = torch.linspace(-3, 3, 3 * 16 * 16).reshape(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), net(x.clamp(-1, 1)))
