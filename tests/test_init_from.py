"""`--init-from`: a new run starts from another model's weights (run directory, model file, pretrained name,
reference .pth), layer by layer where the shapes fit, with one table and the source's hash in config.toml."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_trainer import quiet_config, write_images

from transgan.config import load_toml
from transgan.convert.reference import load_reference_checkpoint
from transgan.errors import TransganError
from transgan.models import open_model, pretrained_path
from transgan.nets import test_time as test_time_modes
from transgan.tasks.cyclegan import CycleGANConfig
from transgan.tasks.pix2pix import Pix2PixConfig
from transgan.train import build_trainer, plan_run, train

TINY = dict(arch="resnet_6blocks", ngf=4, ndf=4, preprocess="none")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("init_from")
    write_images(root / "pairs" / "A", 4, seed=1)
    write_images(root / "pairs" / "B", 4, seed=2)
    return root


@pytest.fixture(scope="module")
def source_run(folders):
    """A short pix2pix run: its model file (G) and its checkpoint (G and D) are the sources."""
    out = folders / "source"
    train("pix2pix", Pix2PixConfig(data=str(folders / "pairs"), **TINY), quiet_config(out, steps=3))
    return out


def test_pix2pix_from_a_model_file_at_lr_0_gives_the_source_outputs_exactly(folders, source_run, tmp_path, capsys):
    source = source_run / "model.safetensors"
    config = Pix2PixConfig(data=str(folders / "pairs"), **TINY)
    out = tmp_path / "tuned"
    train("pix2pix", config, quiet_config(out, steps=3, lr=0.0, seed=7, init_from=str(source)))
    printed = capsys.readouterr().out
    assert "init from model file" in printed and "optimizers and learning-rate schedules start fresh" in printed
    rows = {
        line.split()[0]: line.split()
        for line in printed.splitlines()
        if line.startswith("  G ") or line.startswith("  D ")
    }
    assert rows["G"][1] == "G" and rows["G"][4:6] == ["0", "0"]  # G: all loaded, nothing new or misfit
    assert rows["D"][1:4] == ["-", "0", "0"] and int(rows["D"][4]) > 0  # D: a model file has no D: all new

    images = torch.rand(3, 3, 32, 32) * 2 - 1
    outputs = []
    for path in (source, out / "model.safetensors"):
        model = open_model(path)
        G, _ = model.generator()
        with test_time_modes.test_time(G, model.test_time, seed=0), torch.no_grad():
            outputs.append(G(images))
    assert torch.equal(outputs[0], outputs[1])

    recorded = load_toml(out / "config.toml")["train"]
    assert recorded["init_from"] == str(source) and recorded["init_from_sha256"] == sha256(source)


def test_a_run_directory_gives_its_discriminator_too_and_ema_starts_from_the_loaded_weights(
    folders, source_run, tmp_path
):
    config = Pix2PixConfig(data=str(folders / "pairs"), **TINY)
    trainer = build_trainer("pix2pix", config, quiet_config(tmp_path / "r", ema=0.99, init_from=str(source_run)))
    checkpoint = sorted((source_run / "checkpoints").glob("step_*.safetensors"))[-1]
    from transgan.training_state import read_training_checkpoint

    stored = read_training_checkpoint(checkpoint)
    for name in ("G", "D"):
        for key, value in trainer.task.networks[name].state_dict().items():
            assert torch.equal(value, stored.tensors[f"net.{name}.{key}"]), (name, key)
    for key, value in trainer.ema.copies["G"].state_dict().items():
        assert torch.equal(value, stored.tensors[f"net.G.{key}"]), key
    assert trainer.run.train.init_from_sha256 == sha256(checkpoint)


def test_one_more_discriminator_layer_loads_the_rest_and_a_new_width_is_refused(folders, source_run, tmp_path, capsys):
    deeper = Pix2PixConfig(data=str(folders / "pairs"), **TINY, netd="n_layers", n_layers_d=4)
    build_trainer("pix2pix", deeper, quiet_config(tmp_path / "deeper", init_from=str(source_run)))
    printed = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in printed.splitlines() if line.startswith(("  G ", "  D "))}
    assert rows["G"][2] != "0" and rows["G"][4:6] == ["0", "0"]
    # D: the first conv, three conv+norm pairs load (7 layers); the old output conv has the wrong shape for the
    # new fourth conv; the fourth conv's norm and the new output conv are new.
    assert rows["D"][2] == "7" and rows["D"][4] == "2" and rows["D"][5] == "1"
    assert "did not fit: D.model.11.weight (32x32x4x4 here, 1x32x4x4 in the source)" in printed

    wider = Pix2PixConfig(data=str(folders / "pairs"), **{**TINY, "ngf": 8})
    with pytest.raises(TransganError, match="none of its weights fit this run's networks"):
        build_trainer(
            "pix2pix", wider, quiet_config(tmp_path / "wider", init_from=str(source_run / "model.safetensors"))
        )


def test_cyclegan_from_a_reference_pth_starts_from_its_weights(folders, tmp_path, real_data, capsys):
    path = real_data("reference_checkpoints", "resnet_9blocks_instance_ngf16_legacy_running_stats.pth")
    config = CycleGANConfig(
        domain_a=str(folders / "pairs" / "A"), domain_b=str(folders / "pairs" / "B"),
        arch="resnet_9blocks", ngf=16, ndf=4, preprocess="none",
    )  # fmt: skip
    trainer = build_trainer("cyclegan", config, quiet_config(tmp_path / "r", init_from=str(path)))
    reference = load_reference_checkpoint(path, "resnet_9blocks").state_dict()
    G_A = trainer.task.networks["G_A"].state_dict()
    assert G_A.keys() == reference.keys() and all(torch.equal(G_A[k], reference[k]) for k in reference)
    assert not torch.equal(trainer.task.networks["G_B"].state_dict()["model.1.weight"], reference["model.1.weight"])
    assert "state dict" in capsys.readouterr().out
    assert trainer.run.train.init_from_sha256 == sha256(path)


def test_cyclegan_mobile_from_the_shipped_horse2zebra_generator(folders, tmp_path):
    config = CycleGANConfig(
        domain_a=str(folders / "pairs" / "A"), domain_b=str(folders / "pairs" / "B"),
        arch="mobile_resnet", ndf=4, preprocess="none",
    )  # fmt: skip
    trainer = build_trainer("cyclegan", config, quiet_config(tmp_path / "r", init_from="horse2zebra-mobile"))
    shipped = open_model("horse2zebra-mobile").networks["G"].state_dict()
    G_A = trainer.task.networks["G_A"].state_dict()
    assert all(torch.equal(G_A[k], shipped[k]) for k in shipped)  # horse -> zebra is the run's AtoB
    assert trainer.run.train.init_from_sha256 == sha256(pretrained_path("horse2zebra-mobile"))


def test_init_from_and_resume_are_exclusive_and_a_changed_source_is_refused(folders, source_run, tmp_path):
    with pytest.raises(TransganError, match="--resume continues a run from its own checkpoint"):
        plan_run("pix2pix", str(source_run), None, {}, {"init_from": str(source_run)})
    config = Pix2PixConfig(data=str(folders / "pairs"), **TINY)
    recorded = quiet_config(tmp_path / "r", init_from=str(source_run / "model.safetensors"), init_from_sha256="0" * 64)
    with pytest.raises(TransganError, match="not the recorded --init-from-sha256"):
        build_trainer("pix2pix", config, recorded)
    result = subprocess.run(
        [sys.executable, "-m", "transgan", "train", "pix2pix", "--resume", str(source_run), "--init-from", "x"],
        capture_output=True, text=True,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "give one of them" in lines[0], result.stderr


def test_a_stylegan2_snapshot_gives_its_g_and_d(real_data):
    from transgan.convert.stylegan_pickle import convert_snapshot
    from transgan.init_from import read_source

    path = real_data("stylegan2_reference", "snapshot_cond32", "network-snapshot.pkl")
    source = read_source(path)
    assert sorted(source.networks) == ["D", "G"] and source.sha256() == sha256(path)
    for name in ("G", "D"):  # the live G (what training continued from), not G_ema
        expected = convert_snapshot(path, name).state_dict()
        assert all(torch.equal(source.networks[name][key], value) for key, value in expected.items())
