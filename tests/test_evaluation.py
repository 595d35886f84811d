"""`transgan eval model` and --eval-every: tiny models, synthetic folders, an injected TorchScript extractor."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import transgan
from transgan.checkpoint import read_safetensors
from transgan.config import TrainConfig
from transgan.errors import TransganError
from transgan.evaluation import class_counts, evaluate_model, parse_metrics, reference_statistics
from transgan.logs import read_metrics
from transgan.metrics import compare_folders, feature_statistics, load_extractor, paired_metrics, real_statistics
from transgan.metrics import features as features_module
from transgan.models import open_model
from transgan.nets import build_network
from transgan.tasks.cgan import CGANConfig
from transgan.tasks.pix2pix import Pix2PixConfig
from transgan.train import build_trainer
from transgan.training_state import CHECKPOINT_FORMAT

TINY_NETS = dict(arch="resnet_6blocks", ngf=4, ndf=4, load_size=32, crop_size=32, preprocess="none")


# ---------------------------------------------------------------------------------------------- fixtures
def write_images(folder: Path, count: int, seed: int, size: int = 32, mode: str = "RGB") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3 if mode == "RGB" else 1), dtype=np.uint8)
        Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture
def pairs(tmp_path) -> Path:
    write_images(tmp_path / "pairs" / "A", 6, seed=1)
    write_images(tmp_path / "pairs" / "B", 6, seed=2)
    return tmp_path / "pairs"


@pytest.fixture
def extractor_file(tmp_path) -> Path:
    """A tiny TorchScript feature network: what --features PATH loads (no Inception weights needed)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.AdaptiveAvgPool2d(1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated in torch but still loads
        torch.jit.script(net).save(str(tmp_path / "features.pt"))
    return tmp_path / "features.pt"


def translator_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    net = build_network("resnet_6blocks", ngf=4, init_gain=0.5)
    return transgan.save(net, tmp_path / "translator.safetensors", task="pix2pix", directions={"AtoB": "G"})


def sampler_file(tmp_path: Path, num_classes: int = 2, size: int = 16) -> Path:
    torch.manual_seed(0)
    G = build_network("cbn_generator", latent_dim=8, num_classes=num_classes, image_size=size, channels=1, ngf=8)
    names = ["circle", "square", "star"][:num_classes]
    return transgan.save(G, tmp_path / "sampler.safetensors", task="cgan", class_names=names)


def quiet_config(out: Path, **changes) -> TrainConfig:
    base = dict(out=str(out), num_workers=0, progress=False, tensorboard=False, log_every=1, sample_every=1000)
    return TrainConfig(**{**base, **changes})


def invoke(*args: str):
    from transgan.cli.eval import app

    return CliRunner().invoke(app, [str(arg) for arg in args])


# ---------------------------------------------------------------------------------------------- eval model
def test_class_counts_are_balanced():
    assert class_counts(9, 2) == [5, 4] and class_counts(10, 0) == [10] and sum(class_counts(10000, 7)) == 10000


def test_parse_metrics_rejects_unknown_names():
    assert parse_metrics("fid, KID,paired") == {"fid", "kid", "paired"}
    with pytest.raises(TransganError, match="fid, kid, pr, paired"):
        parse_metrics("fid,lpips")


def test_eval_model_translator_matches_translate_then_eval(tmp_path, pairs, extractor_file):
    model = translator_file(tmp_path)
    result = invoke("model", model, "--data", pairs, "--features", extractor_file, "--kid", "--pr", "--n", 4,
                    "--out", tmp_path / "out", "--batch-size", 3, "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    # The first 4 inputs were translated; paired and FID values are those of the written outputs vs B/.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"{i:03d}.png" for i in range(4)]
    expected = paired_metrics(tmp_path / "out", pairs / "B")
    assert scores["pairs"] == 4 and scores["l1"] == pytest.approx(expected["l1"]) and scores["l1"] > 0.01
    assert scores["psnr"] == pytest.approx(expected["psnr"]) and scores["ssim"] == pytest.approx(expected["ssim"])
    extractor = load_extractor(str(extractor_file))
    folders = compare_folders(pairs / "B", tmp_path / "out", extractor, kid=True, pr=True)
    for key in ("fid", "kid", "precision", "recall", "real_count", "fake_count"):
        assert scores[key] == pytest.approx(folders[key]), key
    # The outputs are what `transgan translate` writes for the same model (within float rounding: it runs
    # channels_last and in other batches).
    from transgan.inference.engines import open_engine
    from transgan.inference.pipeline import translate_folder

    translate_folder(open_engine(str(model), device="cpu"), pairs / "A", tmp_path / "translated", png=True)
    for name in ("000.png", "003.png"):
        ours = np.array(Image.open(tmp_path / "out" / name)).astype(int)
        assert np.abs(ours - np.array(Image.open(tmp_path / "translated" / name))).max() <= 1


def test_eval_model_translator_paired_only_needs_no_extractor(tmp_path, pairs, monkeypatch):
    monkeypatch.setattr(features_module, "resolve_inception_weights", lambda *a: pytest.fail("extractor loaded"))
    result = invoke("model", translator_file(tmp_path), "--data", pairs, "--no-fid", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == {"images", "pairs", "l1", "psnr", "ssim"}
    result = invoke("model", translator_file(tmp_path), "--data", pairs / "A", "--no-fid", "--device", "cpu")
    assert isinstance(result.exception, TransganError) and "A/ and B/ sub-folders" in str(result.exception)


def test_eval_model_translator_resize_scales_targets_too(tmp_path, pairs, extractor_file):
    model = open_model(translator_file(tmp_path))
    scores = evaluate_model(model, pairs, metrics=frozenset({"paired"}), resize=16, out_dir=tmp_path / "out")
    assert Image.open(tmp_path / "out" / "000.png").size == (16, 16) and scores["pairs"] == 6
    with pytest.raises(TransganError, match="not empty"):
        evaluate_model(model, pairs, metrics=frozenset({"paired"}), out_dir=tmp_path / "out")


def test_eval_model_sampler_balanced_samples_accuracy_and_fid(tmp_path, extractor_file):
    real = write_images(tmp_path / "real" / "circle", 5, seed=3, size=16, mode="L").parent
    write_images(real / "square", 5, seed=4, size=16, mode="L")
    # A "classifier" that always answers class 0: accuracy is the share of class-0 samples, 5 of 9.
    always_zero = nn.Sequential(nn.Flatten(), nn.LazyLinear(2))
    always_zero(torch.zeros(1, 1, 16, 16))
    with torch.no_grad():
        always_zero[1].weight.zero_()
        always_zero[1].bias.copy_(torch.tensor([1.0, 0.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(always_zero.eval()).save(str(tmp_path / "judge.pt"))
    result = invoke("model", sampler_file(tmp_path), "--data", real, "--n", 9, "--features", extractor_file,
                    "--classifier", tmp_path / "judge.pt", "--out", tmp_path / "samples", "--batch-size", 2,
                    "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["samples"] == 9 and scores["fake_count"] == 9 and scores["real_count"] == 10
    assert scores["accuracy"] == pytest.approx(5 / 9) and scores["accuracy_worst_class"] == 0.0
    assert [len(list((tmp_path / "samples" / name).iterdir())) for name in ("circle", "square")] == [5, 4]
    # The FID is that of the saved PNGs: the samples are measured as the files a user would keep.
    folders = compare_folders(real, tmp_path / "samples", load_extractor(str(extractor_file)))
    assert scores["fid"] == pytest.approx(folders["fid"], rel=1e-6) and scores["fid"] > 0
    again = invoke("model", sampler_file(tmp_path), "--data", real, "--n", 9, "--features", extractor_file,
                   "--batch-size", 2, "--device", "cpu", "--json")  # fmt: skip
    assert json.loads(again.stdout)["fid"] == pytest.approx(scores["fid"])  # same seed, same samples


def test_reference_from_mnist_idx_equals_the_same_images_as_pngs(tmp_path, extractor_file):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (6, 16, 16), dtype=np.uint8), np.array([0, 1, 0, 1, 0, 1], np.uint8)
    idx = tmp_path / "idx"
    idx.mkdir()
    header = bytes([0, 0, 8, 3]) + np.array([6, 16, 16], ">i4").tobytes()
    (idx / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
    label_header = bytes([0, 0, 8, 1]) + np.array([6], ">i4").tobytes()
    (idx / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(label_header + labels.tobytes()))
    for i, pixels in enumerate(images):
        (tmp_path / "pngs").mkdir(exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "pngs" / f"{i}.png")
    extractor = load_extractor(str(extractor_file))
    from_idx = reference_statistics(idx, extractor, image_size=16, channels=1, cache=tmp_path / "idx.npz")
    from_pngs = real_statistics(tmp_path / "pngs", extractor)
    np.testing.assert_allclose(from_idx["features"], from_pngs["features"], rtol=1e-5, atol=1e-6)
    assert from_idx["count"] == 6 and (tmp_path / "idx.npz").is_file()
    mu, _ = feature_statistics(from_pngs["features"])
    cached = reference_statistics(idx, extractor, image_size=16, channels=1, cache=tmp_path / "idx.npz")
    np.testing.assert_allclose(cached["mu"], mu, rtol=1e-5)


def test_eval_model_errors(tmp_path, extractor_file):
    sampler = sampler_file(tmp_path)
    with pytest.raises(TransganError, match="need a translation model"):
        evaluate_model(open_model(sampler), tmp_path, metrics=frozenset({"paired"}))
    with pytest.raises(TransganError, match="need a feature extractor"):
        evaluate_model(open_model(sampler), tmp_path, metrics=frozenset({"fid"}))
    result = invoke("model", sampler, "--data", tmp_path / "missing", "--features", extractor_file, "--device", "cpu")
    assert isinstance(result.exception, TransganError) and "missing does not exist" in str(result.exception)


# ---------------------------------------------------------------------------------------------- during training
def test_eval_during_training_logs_and_keeps_best_by_eval_fid(tmp_path, pairs, extractor_file):
    task = Pix2PixConfig(data=str(pairs), **TINY_NETS)
    # A large learning rate: the outputs of steps 1 and 2 must differ even after rounding to 8 bits.
    options = dict(steps=2, batch_size=2, checkpoint_every=1000, keep_last=1, seed=3, lr_g=0.05, lr_d=0.05)
    plain = build_trainer("pix2pix", task, quiet_config(tmp_path / "plain", **options))
    plain.fit()
    evaluated = build_trainer(
        "pix2pix",
        task,
        quiet_config(
            tmp_path / "run",
            **options,
            eval_every=1,
            eval_data=str(pairs),
            eval_n=4,
            eval_metrics="fid,paired",
            eval_features=str(extractor_file),
            best_metric="eval/fid",
            best_mode="min",
        ),  # fmt: skip
    )
    evaluated.fit()
    rows = [row for row in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/fid" in row]
    assert [row["step"] for row in rows] == [1, 2]
    assert all({"eval/l1", "eval/psnr", "eval/ssim"} <= set(row) for row in rows)
    assert len({row["eval/fid"] for row in rows}) == 2  # each evaluation measured the weights of its step
    best_row = min(rows, key=lambda row: row["eval/fid"])
    _, meta = read_safetensors(tmp_path / "run/checkpoints/best.safetensors", CHECKPOINT_FORMAT)
    assert meta["counters"]["step"] == best_row["step"] and meta["counters"]["best_value"] == best_row["eval/fid"]
    assert (tmp_path / "run" / "model_best.safetensors").is_file() and (tmp_path / "run" / "curves.png").is_file()
    assert (tmp_path / "run" / "eval" / "reference.npz").is_file()  # real features computed once, reused
    final = evaluate_model(open_model(tmp_path / "run"), pairs, extractor=load_extractor(str(extractor_file)),
                           metrics=frozenset({"fid", "paired"}), n=4)  # fmt: skip
    assert rows[-1]["eval/fid"] == pytest.approx(final["fid"]) and rows[-1]["eval/l1"] == pytest.approx(final["l1"])
    # Evaluation leaves training untouched: same weights as without it, networks back in train mode.
    for name, net in plain.task.networks.items():
        for a, b in zip(net.parameters(), evaluated.task.networks[name].parameters()):
            assert torch.equal(a, b), name
    assert all(net.training for net in evaluated.task.networks.values())


def test_eval_during_cgan_training_on_real_folder(tmp_path, extractor_file):
    real = write_images(tmp_path / "real" / "a", 6, seed=5, size=16, mode="L").parent
    write_images(real / "b", 6, seed=6, size=16, mode="L")
    task = CGANConfig(data=str(real), image_size=16, ngf=8, ndf=8, latent_dim=8)
    config = quiet_config(tmp_path / "run", steps=2, batch_size=4, eval_every=1, eval_data=str(real), eval_n=6,
                          eval_metrics="fid,kid,pr", eval_features=str(extractor_file))  # fmt: skip
    build_trainer("cgan", task, config).fit()
    rows = [row for row in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/fid" in row]
    assert [row["step"] for row in rows] == [1, 2]
    assert {"eval/kid", "eval/precision", "eval/recall"} <= set(rows[0]) and rows[0]["eval/fid"] > 0


def test_missing_inception_weights_fail_at_start(tmp_path, pairs, monkeypatch):
    monkeypatch.delenv(features_module.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(features_module, "INCEPTION_URL", (tmp_path / "unreachable.pth").as_uri())
    config = quiet_config(tmp_path / "run", steps=2, eval_every=1, eval_data=str(pairs))
    with pytest.raises(TransganError) as error:
        build_trainer("pix2pix", Pix2PixConfig(data=str(pairs), **TINY_NETS), config)  # before any step
    message = str(error.value)
    assert "\n" not in message and "--eval-inception-weights PATH" in message and "--eval-features PATH" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"eval_data": ""}, "needs --eval-data"),
        ({"eval_metrics": "fid,bleu"}, "--eval-metrics"),
        ({"eval_n": 1}, "--eval-n 1"),
        ({"eval_data": "SAME/A"}, "A/ and B/ sub-folders"),
        ({"eval_features": "missing.pt"}, "--eval-features missing.pt"),
    ],
)
def test_eval_options_are_checked_at_start(tmp_path, pairs, changes, message):
    changes = {key: str(value).replace("SAME", str(pairs)) for key, value in changes.items()}
    changes = {key: int(value) if value.isdigit() else value for key, value in changes.items()}
    config = quiet_config(tmp_path / "run", steps=2, eval_every=1, **{"eval_data": str(pairs), **changes})
    with pytest.raises(TransganError, match=message):
        build_trainer("pix2pix", Pix2PixConfig(data=str(pairs), **TINY_NETS), config)


def test_paired_eval_of_a_generation_task_is_refused(tmp_path):
    real = write_images(tmp_path / "real" / "a", 4, seed=5, size=16, mode="L").parent
    options = dict(steps=1, batch_size=2, eval_every=1, eval_data=str(real), eval_metrics="paired")
    config = quiet_config(tmp_path / "run", **options)
    with pytest.raises(TransganError, match="needs a translation task"):
        build_trainer("cgan", CGANConfig(data=str(real), image_size=16, ngf=8, ndf=8, latent_dim=8), config)


def test_eval_model_runs_pix2pix_the_reference_way_and_gives_live_networks_back(tmp_path, pairs):
    from transgan.checkpoint import ModelFile

    torch.manual_seed(0)
    net = build_network("unet", num_downs=6, ngf=4, norm="batch", dropout=True, init_gain=0.5).train()
    live = ModelFile.from_networks({"G": net}, task="pix2pix", directions={"AtoB": "G"})
    scores = {
        mode: evaluate_model(live, pairs, metrics=frozenset({"paired"}), n=3, test_time=mode, out_dir=tmp_path / mode)
        for mode in ("reference", "eval")
    }
    assert scores["reference"]["l1"] != pytest.approx(scores["eval"]["l1"])
    assert all(module.training for module in net.modules())  # the trainer's network, as it handed it over
    again = evaluate_model(live, pairs, metrics=frozenset({"paired"}), n=3, out_dir=tmp_path / "again")
    assert again == scores["reference"]  # the model's own mode, with the same dropout seed
