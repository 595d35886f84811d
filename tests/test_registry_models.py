"""Every registered network and adversarial loss, plugins included: built tiny, run, saved, loaded and checked.

A new built-in or an installed plugin is tested here without writing a test. A network's tiny options come
from its registration's `test_config` entry, else from TINY_DEFAULTS (the shared option names it has).
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import Tensor, nn

import transgan
from transgan.errors import TransganError
from transgan.losses import adversarial_loss
from transgan.nets import build_network, network_options
from transgan.registry import LOSSES, NETWORKS, Registry, RegistryError

# For networks without a test_config: these options shrink where a network has one of the same name and type.
TINY_DEFAULTS = {"ngf": 4, "ndf": 4, "latent_dim": 8, "num_classes": 3, "image_size": 32, "embed_dim": 4}
MIN_SIDE = 32  # images for translators and discriminators: the smallest multiple of size_multiple from here
BATCH = 2


def tiny_config(arch: str) -> dict:
    info = NETWORKS.entry(arch).info
    if "test_config" in info:
        return dict(info["test_config"])
    options = network_options(arch)
    return {name: value for name, value in TINY_DEFAULTS.items() if type(options.get(name)) is type(value)}


def role_of(arch: str) -> str:
    role = NETWORKS.entry(arch).info.get("role")
    assert role in ("translator", "sampler", "discriminator"), f"{arch}: register it with a role"
    return role


def example_inputs(arch: str, net: nn.Module, seed: int = 0) -> tuple[Tensor, ...]:
    """What the trainer and engines feed the network: z (+ labels) for samplers, images (+ labels) otherwise."""
    config, generator = net.transgan_config, torch.Generator().manual_seed(seed)
    labels = (torch.arange(BATCH) % config["num_classes"],) if config.get("num_classes") else ()
    if role_of(arch) == "sampler":
        return (net.sample_latent(BATCH, generator), *labels)
    channels = config.get("input_nc", config.get("channels", 3))
    multiple = getattr(net, "size_multiple", 1)
    side = config.get("image_size") or multiple * math.ceil(MIN_SIDE / multiple)
    images = torch.rand(BATCH, channels, side, side, generator=generator) * 2 - 1
    return (images, *labels)


@pytest.fixture(scope="module", params=transgan.list_models())
def built(request) -> tuple[str, nn.Module, tuple[Tensor, ...]]:
    arch = request.param
    torch.manual_seed(0)
    net = build_network(arch, **tiny_config(arch))
    return arch, net, example_inputs(arch, net)


def test_every_network_declares_a_known_role():
    for arch in transgan.list_models():
        role_of(arch)


def test_forward_shapes_and_gradients(built):
    arch, net, inputs = built
    net.train()
    inputs = tuple(x.clone().requires_grad_(True) if x.is_floating_point() else x for x in inputs)
    out = net(*inputs)
    config, role = net.transgan_config, role_of(arch)
    assert out.shape[0] == BATCH and torch.isfinite(out).all(), arch
    if role == "translator":
        assert out.shape == (BATCH, config.get("output_nc", 3), *inputs[0].shape[2:])
        assert out.abs().max() <= 1, "translators output images in [-1, 1]"
        assert isinstance(net.size_multiple, int) and net.size_multiple >= 1  # the engines pad to it
    elif role == "sampler":
        side = config["image_size"]
        assert out.shape == (BATCH, config.get("channels", 3), side, side)
        assert hasattr(net, "sample_latent") and net.latent_dim == inputs[0].shape[1]
    out.float().square().mean().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads), f"{arch}: no or non-finite parameter gradients"
    assert any(g.abs().sum() > 0 for g in grads)
    # Gradients reach the input: D's score trains G through the image, and z drives a sampler.
    assert inputs[0].grad is not None and inputs[0].grad.abs().sum() > 0 and torch.isfinite(inputs[0].grad).all()


def test_model_file_round_trip(built, tmp_path):
    arch, net, inputs = built
    with torch.no_grad():
        net.train()(*inputs)  # moves batch-norm statistics and spectral-norm vectors off their initial values
    path = transgan.save(net, tmp_path / f"{arch}.safetensors")
    loaded = transgan.load(path)
    assert loaded.transgan_arch == arch and loaded.transgan_config == net.transgan_config
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(net.eval()(*inputs), loaded(*inputs))


@pytest.mark.parametrize("arch", transgan.list_models())
def test_config_is_every_option_and_unknown_options_are_one_clear_error(arch):
    options = network_options(arch)
    assert set(tiny_config(arch)) <= set(options), f"{arch}: test_config names options it does not have"
    with pytest.raises(TransganError, match=f"network '{arch}' has no option colour"):
        build_network(arch, colour="red")


# ----- adversarial losses -----

REAL, FAKE = torch.tensor([0.5, 1.5, -0.25, 0.0]), torch.tensor([-0.5, 0.25, -2.0, 0.0])


def scalar(value: Tensor) -> float:
    assert value.dim() == 0 and value.dtype == torch.float32 and torch.isfinite(value)
    return value.item()


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_shapes_and_averaging(name):
    """Scalars in float32, and a mean over every element: logits (N,) and patch maps (N, 1, H, W) alike."""
    loss = adversarial_loss(name)
    flat = [scalar(v) for v in (*loss.discriminator(REAL, FAKE), loss.generator(FAKE))]
    patch = [
        scalar(v)
        for v in (
            *loss.discriminator(REAL.view(2, 1, 2, 1), FAKE.view(2, 1, 2, 1)),
            loss.generator(FAKE.view(2, 1, 2, 1)),
        )
    ]
    doubled = [scalar(v) for v in (*loss.discriminator(REAL.repeat(2), FAKE.repeat(2)), loss.generator(FAKE.repeat(2)))]
    assert patch == pytest.approx(flat, rel=1e-6) and doubled == pytest.approx(flat, rel=1e-6)


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_is_finite_for_extreme_and_half_precision_logits(name):
    loss = adversarial_loss(name)
    extreme = torch.tensor([-80.0, -20.0, 20.0, 80.0])
    for real, fake in ((extreme, extreme.flip(0)), (REAL.half(), FAKE.half()), (extreme.half(), extreme.half())):
        for value in (*loss.discriminator(real, fake), loss.generator(fake)):
            scalar(value)


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_sign_conventions_the_trainer_relies_on(name):
    """A higher D output means 'more real': D's loss pushes real predictions up and fake ones down, G's
    pushes fake ones up. Checked where D is undecided (0.5) and, for G, where D calls the fake fake (-1)."""
    loss = adversarial_loss(name)
    real = torch.full((4,), 0.5, requires_grad=True)
    fake = torch.full((4,), 0.5, requires_grad=True)
    loss_real, loss_fake = loss.discriminator(real, fake)
    # Each term sees only its own predictions (the trainer logs and weighs them separately).
    real_by_real, fake_by_real = torch.autograd.grad(loss_real, [real, fake], allow_unused=True)
    real_by_fake, fake_by_fake = torch.autograd.grad(loss_fake, [real, fake], allow_unused=True)
    assert real_by_real is not None and (real_by_real < 0).all(), "loss_real must fall as real predictions rise"
    assert fake_by_fake is not None and (fake_by_fake > 0).all(), "loss_fake must rise as fake predictions rise"
    assert all(cross is None or not cross.any() for cross in (fake_by_real, real_by_fake))
    fake_for_G = torch.full((4,), -1.0, requires_grad=True)
    (grad_G,) = torch.autograd.grad(loss.generator(fake_for_G), fake_for_G)
    assert (grad_G < 0).all() and torch.isfinite(grad_G).all(), "G's loss must fall as D scores its fakes higher"


@pytest.mark.parametrize("name", LOSSES.names())
def test_label_smoothing_is_applied_or_refused(name):
    """real_label < 1 either raises one clear error (no target to smooth) or changes the real term only."""
    loss = adversarial_loss(name)
    plain_real, plain_fake = loss.discriminator(REAL, FAKE)
    try:
        smooth_real, smooth_fake = loss.discriminator(REAL, FAKE, 0.9)
    except TransganError as error:
        assert "real_label" in str(error) and "\n" not in str(error)
        return
    assert scalar(smooth_fake) == pytest.approx(scalar(plain_fake))
    assert scalar(smooth_real) != pytest.approx(scalar(plain_real))


# ----- variants: a builder plus fixed options -----


def test_variants_are_their_base_with_fixed_options():
    for variant, base, fixed in (("resnet_9blocks", "resnet", {"n_blocks": 9}), ("unet_128", "unet", {"num_downs": 7})):
        assert list(network_options(variant)) == [name for name in network_options(base) if name not in fixed]
        torch.manual_seed(0)
        a = build_network(variant, ngf=4)
        torch.manual_seed(0)
        b = build_network(base, ngf=4, **fixed)
        assert a.transgan_config == {k: v for k, v in b.transgan_config.items() if k not in fixed}
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
        with pytest.raises(TransganError, match=f"no option {next(iter(fixed))}"):
            build_network(variant, **fixed)  # fixed means fixed: a model file of the variant cannot change it
        assert NETWORKS.entry(variant).info["role"] == NETWORKS.entry(base).info["role"]


def test_add_variant_checks_its_base_and_trims_the_test_config():
    registry = Registry("widget", "transgan_test_variants.widgets", [])

    def base(width: int = 8, depth: int = 3, *, norm: str = "batch") -> tuple:
        return width, depth, norm

    registry.add("base", base, role="translator", test_config={"width": 2, "depth": 1})
    registry.add_variant("deep", "base", "The base with 6 levels.", depth=6)
    entry = registry.entry("deep")
    assert entry.obj(4) == (4, 6, "batch") and entry.obj(width=2, norm="none") == (2, 6, "none")
    assert entry.info == {"role": "translator", "test_config": {"width": 2}} and entry.obj.__doc__.startswith("The")
    assert list(inspect.signature(entry.obj).parameters) == ["width", "norm"]
    with pytest.raises(TypeError):
        entry.obj(depth=2)
    with pytest.raises(RegistryError, match="no widget 'missing' is registered"):
        registry.add_variant("other", "missing", "doc", depth=1)
    with pytest.raises(RegistryError, match="the base has no option colour"):
        registry.add_variant("other", "base", "doc", colour="red")
    with pytest.raises(RegistryError, match="'deep' is already registered"):
        registry.add_variant("deep", "base", "doc", depth=2)
    registry.add("loose", lambda *sizes: sizes)
    with pytest.raises(RegistryError, match="named options only"):
        registry.add_variant("looser", "loose", "doc")
