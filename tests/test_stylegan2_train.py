"""The stylegan task on the trainer: StyleGAN2-ADA's phase list and lazy-regularisation optimizers, --cfg, and
2 processes training like 1 with the combined batch (fresh draws per phase, path length, w_avg included)."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch
from test_cgan import SIZE, write_shapes
from test_distributed import free_port
from test_trainer import quiet_config

from transgan.errors import TransganError
from transgan.logs import read_metrics
from transgan.tasks.stylegan import StyleGANConfig
from transgan.train import build_trainer, train
from transgan.training_state import list_checkpoints, read_training_checkpoint

TINY = dict(image_size=SIZE, latent_dim=8, w_dim=8, channel_base=64, channel_max=8, conv_clamp=0.0)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("shapes") / "data", per_class=4)


def test_official_phases_optimizers_and_schedule(shapes, tmp_path):
    config = StyleGANConfig(data=str(shapes), r1_every=4, pl_every=2, **TINY)
    trainer = build_trainer("stylegan", config, quiet_config(tmp_path / "run", steps=4, batch_size=4, device="cpu"))
    assert [(p.name, p.optimizer_name, p.interval, p.lazy) for p in trainer.phases] == [
        ("Gmain", "G", 1, False), ("Greg", "G", 2, True), ("Dmain", "D", 1, False), ("Dreg", "D", 4, True),
    ]  # fmt: skip
    for name, k in (("G", 2), ("D", 4)):  # the official mb_ratio k / (k + 1) on lr and betas
        group = trainer.optimizers[name].param_groups[0]
        assert group["lr"] == pytest.approx(0.0025 * k / (k + 1))
        assert group["betas"] == pytest.approx((0.0, 0.99 ** (k / (k + 1))))
    trainer.fit()
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [row["step"] for row in rows if "G/pl" in row] == [1, 3]  # steps 0 and 2
    assert [row["step"] for row in rows if "D/r1" in row] == [1]  # step 0
    # R1's default gamma comes from the global batch: 0.0002 * 16^2 / 4.
    task = trainer.task
    assert task.r1_gamma() == pytest.approx(0.0002 * SIZE**2 / 4)
    # Fresh z per phase (reproducible per step), fake labels drawn from the dataset's labels.
    assert not torch.equal(task.new_draws("Gmain").z(4), task.new_draws("Dmain").z(4))
    assert torch.equal(task.new_draws("Gmain").z(4), task.new_draws("Gmain").z(4))
    task.label_table = torch.tensor([1] * 30 + [0] * 2)
    drawn = task.new_draws("Dmain").labels(400)
    assert set(drawn.tolist()) == {0, 1} and 0.8 < float(drawn.float().mean()) < 0.99


def test_cfg_takes_the_official_configs(shapes):
    from transgan.tasks.configs.stylegan import apply_cfg

    cifar, spec = apply_cfg(StyleGANConfig(data=str(shapes), cfg="cifar", image_size=32))
    assert (cifar.channel_base, cifar.channel_max, cifar.w_dim, cifar.mapping_layers) == (32768, 512, 512, 2)
    assert (cifar.pl_weight, cifar.mixing_prob, cifar.architecture_d, cifar.mbstd_group_size) == (0, 0, "orig", 32)
    assert (spec.batch_size, spec.r1_gamma, spec.ema_kimg) == (64, 0.01, 500.0)
    auto, spec = apply_cfg(StyleGANConfig(data=str(shapes), cfg="auto", image_size=32, channel_max=128))
    assert (auto.channel_base, auto.channel_max, auto.mapping_layers) == (16384, 128, 2)  # a set value wins
    assert spec.batch_size == 32 and spec.r1_gamma is None  # gamma from the global batch
    with pytest.raises(TransganError, match="--cfg"):
        build_trainer("stylegan", StyleGANConfig(data=str(shapes), cfg="paper1024", **TINY), quiet_config("x"))


# mbstd off: its groups would span the global batch in one process and each half in two.
DDP = dict(TINY, mbstd_group_size=0, r1_every=2, pl_every=2, mixing_prob=0.9)
TRAIN = dict(device="cpu", steps=3, checkpoint_every=3)


def _worker(rank: int, port: int, shapes, out, errors) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        train("stylegan", StyleGANConfig(data=str(shapes), **DDP), quiet_config(out, batch_size=2, **TRAIN))
    except BaseException as error:
        errors.put(f"rank {rank}: {error!r}")
        raise


def test_two_processes_train_like_one_with_the_combined_batch(shapes, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(
            "stylegan", StyleGANConfig(data=str(shapes), **DDP), quiet_config(tmp_path / "one", batch_size=4, **TRAIN)
        )
    finally:
        torch.set_num_threads(threads)
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    port = free_port()
    workers = [context.Process(target=_worker, args=(r, port, shapes, tmp_path / "two", errors)) for r in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    messages = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert [w.exitcode for w in workers] == [0, 0], messages

    one = read_training_checkpoint(dict(list_checkpoints(tmp_path / "one" / "checkpoints"))[3])
    two = read_training_checkpoint(dict(list_checkpoints(tmp_path / "two" / "checkpoints"))[3])
    compared = [key for key in one.tensors if key.startswith(("net.", "opt.", "ema.")) or "pl_mean" in key]
    assert any("w_avg" in key for key in compared) and any("pl_mean" in key for key in compared)
    for key in compared:
        torch.testing.assert_close(two.tensors[key], one.tensors[key], rtol=1e-4, atol=1e-5, msg=key)
