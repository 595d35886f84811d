"""`transgan train` through the CLI: options, --config files, resume, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

from PIL import Image
from test_trainer import write_images

from transgan.logs import read_metrics

TINY = ["--arch", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--preprocess", "none", "--num-workers", "0"]
QUIET = ["--no-progress", "--no-tensorboard", "--log-every", "1", "--checkpoint-every", "2"]


def transgan(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "transgan", *args], capture_output=True, text=True, cwd=cwd)


def test_cyclegan_trains_and_resumes_through_the_cli(tmp_path):
    write_images(tmp_path / "a", 3, seed=1)
    write_images(tmp_path / "b", 4, seed=2)
    run = tmp_path / "run"
    args = ["train", "cyclegan", "--domain-a", str(tmp_path / "a"), "--domain-b", str(tmp_path / "b"), *TINY, *QUIET]
    first = transgan(*args, "--steps", "2", "--out", str(run))
    assert first.returncode == 0, first.stderr
    resumed = transgan("train", "cyclegan", "--resume", str(run), "--steps", "4")
    assert resumed.returncode == 0, resumed.stderr
    assert [row["step"] for row in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4]
    assert (run / "samples").is_dir() and (run / "model.safetensors").is_file()

    # the stored config trains a new run with the same options
    again = transgan("train", "cyclegan", "--config", str(run / "config.toml"), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr


def test_user_mistakes_are_one_line(tmp_path):
    cases = [
        (["train", "pix2pix", "--data", str(tmp_path / "missing"), "--steps", "1"], "missing"),
        (["train", "pix2pix", "--steps", "1"], "--data is required"),
        (["train", "cyclegan", "--resume", str(tmp_path)], "not a transgan run directory"),
        (["train", "pix2pix", "--config", str(tmp_path / "nope.toml")], "config file not found"),
    ]
    (tmp_path / "bad.toml").write_text("[train]\nstepz = 3\n")
    cases.append((["train", "pix2pix", "--config", str(tmp_path / "bad.toml")], "unknown option stepz"))
    for args, expected in cases:
        result = transgan(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.stderr


def test_cyclegan_on_real_facades_folders_runs_resumes_and_writes_samples(real_data, tmp_path):
    """Facades photos vs label maps as two unpaired domains (real 256x256 PNGs, cropped small to stay fast)."""
    facades = real_data("facades", "test")
    run = tmp_path / "run"
    args = ["train", "cyclegan", "--domain-a", str(facades / "B"), "--domain-b", str(facades / "A")]
    sizes = ["--preprocess", "resize_and_crop", "--load-size", "72", "--crop-size", "64"]
    tiny = ["--arch", "resnet_6blocks", "--ngf", "4", "--ndf", "4", "--num-workers", "2", "--sample-every", "2"]
    first = transgan(*args, *sizes, *tiny, *QUIET, "--steps", "2", "--out", str(run))
    assert first.returncode == 0, first.stderr
    resumed = transgan("train", "cyclegan", "--resume", str(run), "--steps", "4")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_00000002.png", "step_00000004.png"]
    grid = Image.open(run / "samples" / "step_00000004.png")
    assert grid.size[0] > 64 * 6 and grid.size[1] > 64 * 5  # 6 rows (A, fake B, rec A, B, fake A, rec B) of 8
