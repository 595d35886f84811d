"""StyleGAN and ProGAN models go where cgan models go: --eval-every while training, `eval model`, `export`
(ONNX parity through the CLI) and `bench`, on tiny networks."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_cgan import SIZE, cli, write_shapes
from test_evaluation import extractor_file, quiet_config  # noqa: F401 (a fixture)

import transgan
from transgan.logs import read_metrics
from transgan.tasks.progan import ProGANConfig
from transgan.tasks.stylegan import StyleGANConfig
from transgan.train import build_trainer

SMALL = dict(image_size=SIZE, latent_dim=8, channel_base=64, channel_max=8)
CONFIGS = {
    "stylegan": lambda data: StyleGANConfig(data=data, w_dim=8, **SMALL),
    "progan": lambda data: ProGANConfig(data=data, stage_images=4, fade_images=2, conditional=True, **SMALL),
}


@pytest.fixture
def shapes_rgb(tmp_path):
    return write_shapes(tmp_path / "shapes", per_class=4, mode="RGB")


@pytest.mark.parametrize("task", ["stylegan", "progan"])
def test_eval_every_eval_model_export_and_bench(task, shapes_rgb, tmp_path, extractor_file):  # noqa: F811
    run = tmp_path / "run"
    train = quiet_config(run, steps=2, batch_size=4, eval_every=1, eval_data=str(shapes_rgb), eval_n=6,
                         eval_metrics="fid,kid", eval_features=str(extractor_file))  # fmt: skip
    build_trainer(task, CONFIGS[task](str(shapes_rgb)), train).fit()
    rows = [row for row in read_metrics(run / "metrics.jsonl") if "eval/fid" in row]
    assert [row["step"] for row in rows] == [1, 2] and rows[0]["eval/fid"] > 0 and "eval/kid" in rows[0]

    result = cli("eval", "model", str(run), "--data", str(shapes_rgb), "--features", str(extractor_file), "--n", "6",
                 "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{") :])["fid"] > 0

    onnx_file = tmp_path / f"{task}.onnx"
    result = cli("export", str(run), str(onnx_file))
    assert result.exit_code == 0, result.output
    G = transgan.load(run / "model.safetensors")
    z = G.sample_latent(3, torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0])  # the shapes have two classes
    with torch.no_grad():
        expected = G(z, labels).numpy()
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = {names[0]: z.numpy()}
    if len(names) > 1:
        feeds[names[1]] = labels.numpy().astype(np.int64)
    got = session.run(None, feeds)[0]
    assert np.abs(got - expected).max() <= 1e-4  # the ONNX parity bound

    result = cli("bench", str(run), "--engine", "torch", "--batch-size", "2", "--iterations", "2", "--warmup", "1",
                 "--device", "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout[result.stdout.index("[") :])
    assert figures[0]["images_per_s"] > 0
