"""`--freeze-d N` (Freeze-D): the first N blocks of every discriminator keep their weights through training and
resume; each discriminator family says what its blocks are."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_cgan import SIZE, write_shapes
from test_trainer import quiet_config, write_images

from transgan.config import TrainConfig
from transgan.errors import TransganError
from transgan.nets import build_network
from transgan.registry import NETWORKS
from transgan.tasks.cgan import CGANConfig
from transgan.tasks.freeze import discriminator_blocks
from transgan.tasks.pix2pix import Pix2PixConfig
from transgan.train import build_trainer, resume, train
from transgan.training_state import list_checkpoints, read_training_checkpoint

FAMILIES = {  # the discriminators written with blocks, and the parameter their first block starts with
    "n_layers": "model.0.weight",
    "n_layers_antialias": "model.0.weight",
    "pixel": "net.0.weight",
    "dcgan_discriminator": "main.0.weight",
    "projection_discriminator": "body.0.bias",
    "stylegan_discriminator": "from_rgb.weight",
    "progan_discriminator": "from_rgb.{last}.weight",
}


def _tiny(arch: str, **options) -> torch.nn.Module:
    return build_network(arch, **{**NETWORKS.entry(arch).info.get("test_config", {}), **options})


@pytest.mark.parametrize("arch", sorted(NETWORKS.names(role="discriminator")))
def test_blocks_split_every_discriminator_parameter_once_in_input_order(arch):
    net = _tiny(arch, num_classes=3) if arch in ("dcgan_discriminator", "projection_discriminator") else _tiny(arch)
    if not hasattr(net, "discriminator_blocks"):
        assert arch not in FAMILIES
        pytest.skip(f"{arch} defines no blocks (--freeze-d refuses it with one line)")
    blocks = discriminator_blocks(net)
    assert len(blocks) >= 3
    in_blocks = [id(p) for block in blocks for p in block.parameters()]
    assert sorted(in_blocks) == sorted(id(p) for p in net.parameters())  # each parameter in exactly one block
    names = {id(p): name for name, p in net.named_parameters()}
    first = {names[id(p)] for p in blocks[0].parameters()}
    if arch in FAMILIES:  # the first block holds the layer that reads the images
        assert FAMILIES[arch].format(last=getattr(net, "stages", 1) - 1) in first


def test_freeze_d_2_keeps_the_first_two_blocks_through_20_steps_and_a_resume(tmp_path):
    write_images(tmp_path / "pairs" / "A", 4, seed=1)
    write_images(tmp_path / "pairs" / "B", 4, seed=2)
    config = Pix2PixConfig(data=str(tmp_path / "pairs"), arch="resnet_6blocks", ngf=4, ndf=4, preprocess="none",
                           freeze_d=2)  # fmt: skip
    out = tmp_path / "run"
    start = build_trainer("pix2pix", config, quiet_config(out, steps=10)).task.networks["D"]
    blocks = discriminator_blocks(start)
    frozen = {name for name, p in start.named_parameters() if any(p is q for b in blocks[:2] for q in b.parameters())}
    assert frozen == {"model.0.weight", "model.0.bias", "model.2.weight", "model.3.weight", "model.3.bias"}
    initial = {name: p.detach().clone() for name, p in start.named_parameters()}

    train("pix2pix", config, quiet_config(out, steps=10, checkpoint_every=5))
    resume(out, steps=20)
    step, path = list_checkpoints(out / "checkpoints")[-1]
    assert step == 20
    D = read_training_checkpoint(path).section("net.D")
    for name, value in initial.items():
        assert torch.equal(D[name], value) == (name in frozen), name


def test_freeze_d_in_a_generation_task_and_too_many_blocks_is_one_line(tmp_path):
    shapes = write_shapes(tmp_path / "shapes")
    train_config = TrainConfig(out=str(tmp_path / "r"), steps=4, batch_size=4, num_workers=0, progress=False,
                               tensorboard=False, device="cpu")  # fmt: skip
    config = CGANConfig(data=str(shapes), image_size=SIZE, ngf=8, ndf=8, latent_dim=16, freeze_d=1)
    trainer = build_trainer("cgan", config, train_config)
    D = trainer.task.networks["D"]
    first = list(discriminator_blocks(D)[0].parameters())
    before = [p.detach().clone() for p in D.parameters()]
    assert first and all(not p.requires_grad for p in first)
    trainer.fit()
    after = list(D.parameters())
    assert all(torch.equal(a, b) == any(a is p for p in first) for a, b in zip(after, before))

    blocks = len(discriminator_blocks(D))
    with pytest.raises(TransganError, match=f"--freeze-d {blocks + 1}: discriminator D .* has {blocks} blocks"):
        build_trainer("cgan", CGANConfig(data=str(shapes), image_size=SIZE, ngf=8, ndf=8, freeze_d=blocks + 1),
                      train_config)  # fmt: skip
    with pytest.raises(TransganError, match="--freeze-d -1"):
        Pix2PixConfig(data=str(shapes), freeze_d=-1)
    assert Path(train_config.out, "checkpoints").is_dir()
