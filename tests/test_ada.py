"""ADA: the 'bgc' pipeline against StyleGAN2-ADA's own outputs, the p controller, exact resume, several
processes, and every task's discriminator behind it."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
import torch
from test_cgan import SIZE, write_shapes
from test_distributed import free_port
from test_regularizers import _configs
from test_trainer import quiet_config

from transgan.ada import AdaController, Draws, augment, next_p
from transgan.checkpoint import read_safetensors
from transgan.errors import TransganError
from transgan.logs import read_metrics
from transgan.losses import r1_penalty
from transgan.tasks import regularizers
from transgan.tasks.cgan import CGANConfig
from transgan.tasks.pix2pix import Pix2PixConfig
from transgan.train import build_trainer, resume, train
from transgan.training_state import CHECKPOINT_FORMAT

KIT = ("stylegan2_reference", "augment_bgc_cifar8")
CASES = [(p, seed) for p in ("1.0", "0.3") for seed in (0, 1, 2)]


@pytest.mark.parametrize(("p", "seed"), CASES)
def test_pipeline_equals_the_reference_at_its_seeds(real_data, p, seed):
    """Same seed and p: the same 26 draws in the same order and the same images; replaying the recorded draws
    gives the same images too (so the transforms are checked apart from the draw order)."""
    kit = real_data(*KIT)
    images = torch.from_numpy(np.load(kit / "input.npy"))
    expected = np.load(kit / f"out_p{p}_seed{seed}.npy")
    recorded = np.load(kit / f"draws_p{p}_seed{seed}.npz")

    torch.manual_seed(seed)
    draws = Draws()
    out = augment(images, float(p), draws)
    assert np.abs(out.numpy() - expected).max() <= 1e-5
    assert len(draws.made) == len(recorded.files) == 26
    for made, name in zip(draws.made, recorded.files):
        assert made.shape == recorded[name].shape and np.array_equal(made.numpy(), recorded[name]), name

    torch.manual_seed(seed + 100)  # another RNG state: only the replayed draws count
    replayed = augment(images, float(p), Draws(torch.from_numpy(recorded[name]) for name in recorded.files))
    assert np.abs(replayed.numpy() - expected).max() <= 1e-5
    assert np.abs(out.numpy() - images.numpy()).max() > 0.5  # the kit's images are really transformed


def test_pipeline_is_differentiable_and_treats_pairs_and_grey_images():
    torch.manual_seed(0)
    rgb = torch.randn(4, 3, 16, 16)
    # p 0: every transform is the identity; the 2x wavelet resampling returns the image to float precision.
    assert (augment(rgb, 0.0) - rgb).abs().max() < 1e-5
    # A pix2pix pair (6 channels): both halves get the same geometric and colour transform as one RGB image.
    torch.manual_seed(1)
    pair = augment(torch.cat([rgb, rgb], 1), 1.0)
    torch.manual_seed(1)
    single = augment(rgb, 1.0)
    assert torch.equal(pair[:, :3], single) and torch.equal(pair[:, 3:], single)
    # Grey: no hue or saturation (4 draws fewer), contrast and brightness alike on the one channel.
    draws = Draws()
    grey = augment(rgb[:, :1], 1.0, draws)
    assert grey.shape == (4, 1, 16, 16) and len(draws.made) == 22
    # Differentiable: the gradient reaches the images, and a second-order one (R1) the weights behind it.
    x = rgb.clone().requires_grad_(True)
    w = torch.randn(2, 3, 3, 3, requires_grad=True)
    score = torch.nn.functional.conv2d(augment(x, 1.0), w).square().mean()
    (grad,) = torch.autograd.grad(score, x, create_graph=True)
    grad.square().sum().backward()
    assert grad.abs().sum() > 0 and w.grad.abs().sum() > 0
    with pytest.raises(TransganError, match="D sees 4-channel images") as error:
        augment(torch.zeros(1, 4, 8, 8), 0.5)
    assert "\n" not in str(error.value)


def test_controller_moves_p_by_the_reference_rule():
    """p += sign(r_t - target) * batch * interval / (kimg * 1000), clamped at 0, no upper clamp, float32."""
    controller = AdaController(0.0, target=0.6, kimg=0.1)  # 100 images move p by 1
    batch = 5  # 20 images per interval: +-0.2
    expected, got, p = [], [], np.float32(0.0)
    for rt in (0.9, 0.9, 0.2, 0.6, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0):
        # r_t made by hand: 20 predictions, (1 + rt) / 2 of them positive.
        positives = int(round((1 + rt) / 2 * 20))
        controller.observe(torch.tensor([1.0] * positives + [-1.0] * (20 - positives)))
        controller.adjust(batch)
        step = np.sign(np.float32(rt) - np.float32(0.6)) if rt != 0.6 else 0.0
        p = np.maximum(np.float32(p + step * 20 / 100), np.float32(0))
        expected.append(float(p))
        got.append(float(controller.p))
        assert controller.rt == pytest.approx(rt)
    assert got == expected
    assert expected[:4] == pytest.approx([0.2, 0.4, 0.2, 0.2]) and max(expected) > 1.0  # no upper clamp
    assert float(next_p(torch.tensor(1e-4), -1.0, 0.6, 64 * 4, 500)) == 0.0  # clamped at 0
    assert float(next_p(torch.tensor(0.25), 0.6, 0.6, 64 * 4, 500)) == 0.25  # at the target: no move
    assert float(next_p(torch.tensor(0.0), 0.7, 0.6, 64 * 4, 500)) == pytest.approx(64 * 4 / 500_000)


def test_r1_is_taken_through_ada_and_counts_toward_rt():
    """The regulariser's R1 equals R1 of D behind the pipeline (same draws), and r_t counts the main pass's
    reals and R1's, as StyleGAN2-ADA's Loss/signs/real does."""
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    real, fake = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    regularizer = regularizers.DiscriminatorRegularizer(CGANConfig(aug_p=1.0, r1_gamma=2.0, r1_every=1))
    D(real)  # materialise the lazy layer
    torch.manual_seed(1)
    pred_real, pred_fake = regularizer.discriminate(D, real), regularizer.discriminate(D, fake)
    r1, logged = regularizer.penalties(D, real, fake, 0)
    scores = regularizer.scores(pred_real, pred_fake)
    torch.manual_seed(1)
    augment(real, 1.0), augment(fake, 1.0)  # the main passes' draws
    x = real.clone().requires_grad_(True)
    expected = 2.0 * r1_penalty(D(augment(x, 1.0)), x)
    assert torch.allclose(r1, expected) and expected > 0
    assert float(regularizer.ada.totals[1]) == 8 and scores["ada/p"] == 1.0  # 4 main + 4 R1 predictions


def _cgan_config(shapes, **changes):
    options = dict(image_size=SIZE, latent_dim=8, ngf=4, ndf=4, d_norm="none", ada=True, ada_kimg=0.01)
    return CGANConfig(data=str(shapes), r1_gamma=1.0, r1_every=3, **{**options, **changes})


def test_p_moves_every_fourth_step_and_resumes_exactly(tmp_path):
    """10 steps straight == 5 steps, stop, resume to 10 (mid-interval: the partial r_t sums are state too)."""
    shapes = write_shapes(tmp_path / "shapes", per_class=4, mode="L")
    train("cgan", _cgan_config(shapes), quiet_config(tmp_path / "straight", steps=10, batch_size=4))
    train("cgan", _cgan_config(shapes), quiet_config(tmp_path / "resumed", steps=5, batch_size=4))
    resume(tmp_path / "resumed", steps=10)
    straight, _ = read_safetensors(tmp_path / "straight/checkpoints/step_00000010.safetensors", CHECKPOINT_FORMAT)
    resumed, _ = read_safetensors(tmp_path / "resumed/checkpoints/step_00000010.safetensors", CHECKPOINT_FORMAT)
    assert "task.ada.p" in straight and straight.keys() == resumed.keys()
    assert [key for key in straight if not torch.equal(straight[key], resumed[key])] == []

    rows = read_metrics(tmp_path / "straight" / "metrics.jsonl")
    p = [row["ada/p"] for row in rows]  # the p each step used (logged every step)
    assert all(-1.0 <= row["ada/rt"] <= 1.0 for row in rows)
    changes = [i for i in range(1, len(p)) if p[i] != p[i - 1]]
    assert changes and set(changes) <= {4, 8}  # p moves, and only after steps 3 and 7 (0-based): every 4 steps
    # 16 reals per interval with kimg 0.01: each move is +-1.6 (or a clamp at 0).
    assert all(p[i] == 0.0 or abs(p[i] - p[i - 1]) == pytest.approx(1.6) for i in changes)
    assert [r["ada/p"] for r in read_metrics(tmp_path / "resumed" / "metrics.jsonl")] == p


def _observe_in_process(rank: int, port: int, results) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        controller = AdaController(0.5, kimg=0.1)
        # Rank 0 sees 8 positive of 8 (r_t 1.0), rank 1 sees 1 positive of 4 (r_t -0.5): together 9 of 12.
        predictions = torch.ones(8) if rank == 0 else torch.tensor([0.3, -1.0, -2.0, -0.1])
        controller.observe(predictions)
        controller.adjust(batch_size=3)
        results.put((rank, controller.rt, float(controller.p)))
    finally:
        dist.destroy_process_group()


def test_rt_is_averaged_over_processes():
    """r_t counts every process's reals (9 of 12 positive: 0.5), and p moves by the global batch (2 x 3)."""
    context = multiprocessing.get_context("fork")
    results, port = context.Queue(), free_port()
    workers = [context.Process(target=_observe_in_process, args=(rank, port, results)) for rank in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]
    got = sorted(results.get(timeout=5) for _ in range(2))
    for _, rt, p in got:
        assert rt == pytest.approx((9 - 3) / 12)  # (positives - negatives) / count over both processes
        assert p == pytest.approx(0.5 - 2 * 3 * 4 / 100)  # below the target 0.6: p falls by 24 / 100


def test_bad_values_are_one_line(tmp_path):
    for options, message in [
        (dict(aug_p=1.5), "--aug-p 1.5: must be in \\[0, 1\\]"),
        (dict(aug_p=-0.1), "--aug-p -0.1"),
        (dict(ada=True, ada_target=1.0), "--ada-target 1.0: must be strictly between 0 and 1"),
        (dict(ada=True, ada_target=0.0), "--ada-target 0.0"),
        (dict(ada=True, aug_p=0.5), "--ada with --aug-p: pick one"),
        (dict(ada=True, ada_kimg=0.0), "--ada-kimg 0.0: must be positive"),
        (dict(ada=True, diffaugment="color"), "--diffaugment with --ada/--aug-p"),
    ]:
        with pytest.raises(TransganError, match=message) as error:
            Pix2PixConfig(data="x", **options)
        assert "\n" not in str(error.value)
        with pytest.raises(TransganError, match=message):
            build_trainer("cgan", CGANConfig(data=str(tmp_path / "nothing"), **options), quiet_config(tmp_path))


@pytest.mark.parametrize("task", ["pix2pix", "cyclegan", "cgan", "stylegan", "progan"])
def test_every_task_puts_ada_before_d_and_keeps_p(task, tmp_path, monkeypatch):
    """A fixed --aug-p 1: the pipeline runs on D's inputs in both phases (the G phase's fakes carry G's graph,
    the D phase's do not), p is logged and is part of the task's extra state."""
    config = _configs(tmp_path)[task]
    config = type(config)(**{**config.__dict__, "diffaugment": "", "aug_p": 1.0})
    trainer = build_trainer(task, config, quiet_config(tmp_path / "run", steps=2, batch_size=2))
    calls = []

    def recorded(images, p, draws=None):  # the real pipeline, with a note of each call
        calls.append((images.grad_fn is not None, float(p)))
        return augment(images, p, draws)

    monkeypatch.setattr(regularizers, "augment", recorded)
    trainer.fit()
    assert {through_g for through_g, _ in calls} == {True, False} and {p for _, p in calls} == {1.0}
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert all(row["ada/p"] == 1.0 and -1.0 <= row["ada/rt"] <= 1.0 for row in rows if "D/real" in row)
    state = trainer.task.extra_state()
    assert float(state["ada.p"]) == 1.0
    trainer.task.regularizer.ada.p = torch.tensor(0.25)
    trainer.task.load_extra_state(state)
    assert float(trainer.task.regularizer.ada.p) == 1.0


def test_pix2pix_pairs_share_one_transform(tmp_path):
    config = _configs(tmp_path)["pix2pix"]
    config = Pix2PixConfig(**{**config.__dict__, "diffaugment": "", "aug_p": 1.0, "gp_weight": 0.0})
    trainer = build_trainer("pix2pix", config, quiet_config(tmp_path / "run", steps=1, batch_size=2))
    trainer.fit()
    task = trainer.task
    pair = torch.cat([task.real_A, task.real_A], 1)  # equal halves stay equal: one transform per pair
    seen = task.regularizer.view(pair)
    assert torch.equal(seen[:, :3], seen[:, 3:]) and not torch.equal(seen, pair)
