"""The cut and fastcut tasks on the shared trainer: options, networks and files, seeded draws, exact resume,
and 2 processes equal to 1 with the combined batch."""

from __future__ import annotations

import multiprocessing
import os

import pytest
import torch
from test_distributed import free_port
from test_trainer import quiet_config, write_images

from transgan.checkpoint import read_model, read_safetensors
from transgan.errors import TransganError
from transgan.logs import read_metrics
from transgan.nets.antialias import Downsample, Upsample
from transgan.tasks.cut import CUTConfig, FastCUTConfig
from transgan.train import build_trainer, resume, train
from transgan.training_state import CHECKPOINT_FORMAT, list_checkpoints, read_training_checkpoint

TINY = dict(arch="resnet_6blocks", ngf=4, ndf=4, netf_nc=8, num_patches=16, load_size=24, crop_size=24)
TINY.update(preprocess="none")


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("cut")
    write_images(root / "horses", 5, seed=3, size=24)
    write_images(root / "zebras", 3, seed=4, size=24)
    return root


def config_of(domains, config_class=CUTConfig, **changes):
    return config_class(domain_a=str(domains / "horses"), domain_b=str(domains / "zebras"), **{**TINY, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_patches": 0}, "--num-patches 0: sample at least 1"),
        ({"nce_layers": "0,4,x"}, "--nce-layers 0,4,x: give comma-separated"),
        ({"nce_layers": ""}, "--nce-layers is empty"),
        ({"nce_layers": "-1,4"}, "layer indices start at 0"),
        ({"nce_t": 0.0}, "--nce-t 0.0: the temperature must be positive"),
        ({"lambda_nce": -1.0}, "must be >= 0"),
        ({"netf_nc": 0}, "--netf-nc 0"),
    ],
)
def test_option_values_that_cannot_work_are_one_line(domains, changes, message):
    with pytest.raises(TransganError, match=message):
        config_of(domains, **changes)


def test_errors_found_when_building(domains, tmp_path):
    with pytest.raises(TransganError, match=r"--nce-layers 0,4,40: resnet_6blocks has layers 0\.\.28"):
        build_trainer("cut", config_of(domains, nce_layers="0,4,40"), quiet_config(tmp_path / "a"))
    with pytest.raises(TransganError, match="--arch unet_128: CUT taps the encoder"):
        build_trainer("cut", config_of(domains, arch="unet_128"), quiet_config(tmp_path / "b"))
    with pytest.raises(TransganError, match="--nce-idt .* --input-nc equal to --output-nc"):
        build_trainer("cut", config_of(domains, output_nc=1), quiet_config(tmp_path / "c"))


def test_networks_defaults_and_the_files_a_run_writes(domains, tmp_path):
    trainer = build_trainer("fastcut", config_of(domains, FastCUTConfig), quiet_config(tmp_path / "run", steps=2))
    task = trainer.task
    c = task.config
    assert (c.lambda_nce, c.nce_idt, c.flip_equivariance, c.nce_t, c.init) == (10.0, False, True, 0.07, "xavier")
    assert (task.recipe().epochs, task.recipe().decay_epochs) == (150, 50)
    assert sum(isinstance(m, Downsample) for m in task.networks["G"].modules()) == 2
    assert sum(isinstance(m, Upsample) for m in task.networks["G"].modules()) == 2
    assert sum(isinstance(m, Downsample) for m in task.networks["D"].modules()) == 3  # model.2, .6, .10
    # F exists from step 0 with the encoder's widths (input, 2ngf, 4ngf, 4ngf, 4ngf) and trains in phase G.
    assert task.networks["F"].widths == [3, 8, 16, 16, 16]
    g_phase = next(p for p in trainer.phases if p.name == "G")
    assert [p.name for p in trainer.phases] == ["D", "G"] and g_phase.networks == ["G", "F"]
    f_ids = {id(p) for p in task.networks["F"].parameters()}
    assert f_ids <= {id(p) for group in trainer.optimizers["G"].param_groups for p in group["params"]}
    F_before = [p.detach().clone() for p in task.networks["F"].parameters()]
    model = trainer.fit()
    assert any(not torch.equal(a, b) for a, b in zip(F_before, task.networks["F"].parameters()))
    checkpoint, _ = read_safetensors(tmp_path / "run/checkpoints/step_00000002.safetensors", CHECKPOINT_FORMAT)
    assert any(key.startswith("net.F.") for key in checkpoint)  # the heads and their Adam state resume
    loaded = read_model(model)
    assert list(loaded.networks) == ["G"] and loaded.directions == {"AtoB": "G"}
    info = loaded.info()
    assert (info.task, info.arch, info.config["antialias"], info.config["antialias_up"]) == (
        "fastcut",
        "resnet_6blocks",
        True,
        True,
    )
    with torch.no_grad():
        x = torch.rand(1, 3, 24, 24) * 2 - 1
        torch.testing.assert_close(loaded.primary(x), task.networks["G"].eval()(x))


@pytest.mark.parametrize("layers", [[0, 4, 8, 12, 16], [0, 2], [4, 8, 10]])
def test_one_pass_gives_the_output_and_the_features_encode_gives(layers):
    """The keys the forward pass keeps equal G.encode's features, also when the last requested layer is a norm
    that an in-place ReLU follows (encode stops before it) and when an earlier one is (it does not)."""
    from transgan.nets import build_network

    for antialias in (True, False):
        torch.manual_seed(0)
        net = build_network("resnet_6blocks", ngf=4, antialias=antialias, antialias_up=antialias)
        x = torch.randn(2, 3, 24, 24)
        with torch.no_grad():
            out, features = net.forward_and_encode(x, layers)
            assert torch.equal(out, net(x))
            for ours, theirs in zip(features, net.encode(x, layers), strict=True):
                assert torch.equal(ours, theirs)


def test_draws_follow_the_seed_and_the_step(domains, tmp_path):
    def draws(seed, step):
        torch.manual_seed(seed)
        config = config_of(domains, FastCUTConfig)
        trainer = build_trainer("fastcut", config, quiet_config(tmp_path / f"r{seed}{step}", seed=seed))
        trainer.task.step = step
        trainer.task.forward({"A": torch.zeros(1, 3, 24, 24), "B": torch.zeros(1, 3, 24, 24)})
        return trainer.task.flipped, trainer.task.draw_patch_ids(1024).tolist()

    assert draws(0, 5) == draws(0, 5)
    assert draws(0, 5) != draws(0, 6) and draws(0, 5) != draws(1, 5)
    assert len(set(draws(0, 5)[1])) == 16  # distinct positions


@pytest.mark.parametrize(("task", "config_class"), [("cut", CUTConfig), ("fastcut", FastCUTConfig)])
def test_resume_is_bit_exact_heads_and_their_optimizer_included(domains, tmp_path, task, config_class):
    """4 steps straight == 2 steps, stop, resume to 4 (5 images at batch 2 cross an epoch)."""
    config = config_of(domains, config_class)
    common = dict(batch_size=2, checkpoint_every=2, ema=0.9)
    train(task, config, quiet_config(tmp_path / "straight", steps=4, **common))
    train(task, config, quiet_config(tmp_path / "resumed", steps=2, **common))
    resume(tmp_path / "resumed", steps=4)
    path = "checkpoints/step_00000004.safetensors"
    straight, _ = read_safetensors(tmp_path / "straight" / path, CHECKPOINT_FORMAT)
    resumed, _ = read_safetensors(tmp_path / "resumed" / path, CHECKPOINT_FORMAT)
    assert straight.keys() == resumed.keys() and any(key.startswith("opt.G.") for key in straight)
    assert [key for key in straight if not torch.equal(straight[key], resumed[key])] == []
    losses = lambda run: [(r["step"], r["G/nce"], r["loss/D"]) for r in read_metrics(tmp_path / run / "metrics.jsonl")]  # noqa: E731
    assert losses("straight") == losses("resumed")


# Adam's first steps move a weight by about lr whatever its gradient's size, so a gradient that sits within float
# noise of 0 (the biases in front of an instance norm, whose true gradient is 0) steps by +-lr differently in 1
# and 2 processes; an eps above that noise (PatchNCE's gradients reach 1e3 here) keeps it near 0 in both runs.
# And at CUT's init (gain 0.02) the heads' outputs are tiny, so their L2 normalisation amplifies float noise
# (first-step gradient norms reach 1e7 at these widths); a larger init gain keeps the comparison about data
# parallelism, not about that conditioning.
DDP_TRAIN = dict(device="cpu", eps=10.0, log_every=1, steps=3)
DDP_MODEL = dict(nce_idt=True, init_gain=0.3)


def _worker(rank: int, port: int, domains, errors) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        train("fastcut", config_of(domains, FastCUTConfig, **DDP_MODEL), quiet_config(domains / "ddp", **DDP_TRAIN))
    except BaseException as error:  # reported to the test, which shows it
        errors.put(f"rank {rank}: {error!r}")
        raise


def test_two_processes_equal_one_with_the_combined_batch(domains):
    """FastCUT with the identity loss: flips and patch positions are drawn alike on both processes."""
    train(
        "fastcut",
        config_of(domains, FastCUTConfig, **DDP_MODEL),
        quiet_config(domains / "one", batch_size=2, **DDP_TRAIN),
    )
    context = multiprocessing.get_context("fork")
    errors, port = context.Queue(), free_port()
    workers = [context.Process(target=_worker, args=(rank, port, domains, errors)) for rank in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    messages = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert [w.exitcode for w in workers] == [0, 0], messages
    one = read_training_checkpoint(dict(list_checkpoints(domains / "one" / "checkpoints"))[3]).tensors
    two = read_training_checkpoint(dict(list_checkpoints(domains / "ddp" / "checkpoints"))[3]).tensors
    assert any(key.startswith("net.F.") for key in one) and one.keys() == two.keys()
    for key in (key for key in one if one[key].is_floating_point()):
        # Adam's moments hold the gradients' float noise, which PatchNCE's normalisation amplifies: they agree
        # to 1e-4 of their largest element; the weights to 1e-5.
        scale = max(1.0, float(one[key].abs().max()))
        tolerance = dict(rtol=1e-4, atol=1e-5) if key.startswith("net.") else dict(rtol=1e-3, atol=1e-4 * scale)
        torch.testing.assert_close(two[key], one[key], **tolerance, msg=lambda m, key=key: f"{key}: {m}")
    mine, theirs = read_metrics(domains / "ddp" / "metrics.jsonl"), read_metrics(domains / "one" / "metrics.jsonl")
    assert [row["G/nce"] for row in mine] == pytest.approx([row["G/nce"] for row in theirs], rel=1e-4)
