"""Video in and out: a real clip (horse frames + an audio track) translates with its frames, rate, size and sound."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from conftest import real_data_path
from PIL import Image
from transgan.cli.app import build_app
from typer.testing import CliRunner

av = pytest.importorskip("av", reason="PyAV is the optional extra `video` (pip install -e '.[dev]' brings it)")

from transgan.errors import TransganError  # noqa: E402
from transgan.inference.engines import open_engine  # noqa: E402
from transgan.inference.video import (  # noqa: E402
    UnreadableVideo,
    translate_pixels,
    translate_video,
    translate_videos,
    write_video,
)

SIZE = (128, 96)  # width, height: small, not square
FPS = 10
FRAMES = 6


def make_clip(path: Path, horses: list[Path], size=SIZE, fps=FPS, audio=True) -> Path:
    """An H.264 MP4 of real horse photos, one per frame, with a 440 Hz AAC tone as long as the video."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        if audio:
            sound = out.add_stream("aac", rate=16000)
            sound.layout = "mono"
        for index, horse in enumerate(horses):
            pixels = np.asarray(Image.open(horse).convert("RGB").resize(size, Image.Resampling.BICUBIC))
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio:
            samples = int(16000 * len(horses) / fps)
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32)[None]
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start : start + 1024]), "fltp", "mono")
                chunk.sample_rate, chunk.pts = 16000, start
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path


def read_video(path: Path) -> tuple[list[np.ndarray], dict]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        facts = {
            "rate": stream.average_rate,
            "size": (stream.codec_context.width, stream.codec_context.height),
            "codec": stream.codec_context.name,
            "audio": [s.codec_context.name for s in container.streams.audio],
        }
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    with av.open(str(path)) as container:
        facts["audio_frames"] = sum(1 for _ in container.decode(audio=0)) if container.streams.audio else 0
    return frames, facts


@pytest.fixture(scope="module")
def horses() -> list[Path]:
    return sorted(real_data_path("horse2zebra", "testA").glob("*.png"))[:FRAMES]


@pytest.fixture(scope="module")
def engine():
    return open_engine("horse2zebra-mobile", engine="torch", device="cpu")  # shipped: no download


def test_clip_translates_with_its_frames_rate_size_and_audio(tmp_path, horses, engine):
    clip = make_clip(tmp_path / "clip.mp4", horses)
    seen = []
    summary = translate_video(
        engine, clip, tmp_path / "out" / "zebras.mp4", batch_size=4, on_progress=lambda *a: seen.append(a)
    )
    source_frames, source = read_video(clip)
    frames, facts = read_video(tmp_path / "out" / "zebras.mp4")
    assert len(frames) == len(source_frames) == FRAMES == summary.frames
    assert facts["rate"] == source["rate"] == FPS
    assert facts["size"] == source["size"] == SIZE
    assert facts["codec"] == "h264"
    assert facts["audio"] == ["aac"] and facts["audio_frames"] == source["audio_frames"] > 0  # copied through
    assert summary.audio == "copied (aac)"
    assert seen == [(4, FRAMES), (FRAMES, FRAMES)]  # progress in frames, per batch
    assert not list((tmp_path / "out").glob(".*partial*"))  # written under a temporary name, then renamed
    # Each output frame is the model's translation of the decoded input frame, in order, up to H.264's loss
    # (measured: 3.9 .. 4.8 levels of 255 at the default crf 18 on these small striped frames)...
    expected = translate_pixels(engine, source_frames, len(source_frames))
    errors = [np.abs(got.astype(int) - want.astype(int)).mean() for got, want in zip(frames, expected)]
    assert max(errors) < 7.0, errors
    # ...and not the input itself (17 .. 20 levels away): the horses got their stripes.
    changed = [np.abs(got.astype(int) - src.astype(int)).mean() for got, src in zip(frames, source_frames)]
    assert min(changed) > 2 * max(errors), (changed, errors)


def test_unreadable_videos_are_named_and_the_others_still_run(tmp_path, horses, engine):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    make_clip(folder / "sub" / "good.mp4", horses[:3], audio=False)
    # A real Matroska file whose codec id no FFmpeg knows: the container opens, its video cannot be decoded.
    data = make_clip(tmp_path / "template.mkv", horses[:2], audio=False).read_bytes()
    assert data.count(b"V_MPEG4/ISO/AVC") == 1
    (folder / "alien.mkv").write_bytes(data.replace(b"V_MPEG4/ISO/AVC", b"V_QUUX4/ISO/ZZZ"))
    (folder / "junk.mp4").write_bytes(b"not a video at all")
    warnings = []
    summary = translate_videos(engine, folder, tmp_path / "out", on_warning=warnings.append)
    assert [clip.target for clip in summary.translated] == [tmp_path / "out" / "sub" / "good.mp4"]
    assert len(read_video(tmp_path / "out" / "sub" / "good.mp4")[0]) == 3
    reasons = dict(summary.unreadable)
    assert set(reasons) == {folder / "alien.mkv", folder / "junk.mp4"}
    assert "codec" in reasons[folder / "alien.mkv"]
    assert "Invalid data" in reasons[folder / "junk.mp4"]
    assert len(warnings) == 2 and all("\n" not in line for line in warnings)
    assert not (tmp_path / "out" / "alien.mp4").exists()  # nothing half-written for a failed clip
    # A second run skips what is done, so an interrupted folder resumes.
    again = translate_videos(engine, folder, tmp_path / "out")
    assert again.skipped_existing == 1 and not again.translated
    with pytest.raises(UnreadableVideo, match="junk.mp4"):
        translate_video(engine, folder / "junk.mp4", tmp_path / "junk_out.mp4")


def test_write_video_keeps_frames_and_makes_odd_sizes_even(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (33, 47, 3), dtype=np.uint8) for _ in range(5)]
    written, facts = read_video(write_video(frames, tmp_path / "strip.mp4", fps=8, crf=0))
    assert len(written) == 5 and facts["rate"] == 8 and facts["size"] == (46, 32)  # 4:2:0 needs even sizes
    with pytest.raises(TransganError, match="write video as"):
        write_video(frames, tmp_path / "strip.gif")


def run_cli(*args) -> Result:
    return CliRunner().invoke(build_app(), [str(arg) for arg in args])


def test_translate_command_takes_a_clip_or_a_folder_of_images_and_videos(tmp_path, horses):
    clip = make_clip(tmp_path / "clip.mp4", horses[:2], size=(64, 48))
    result = run_cli("translate", "horse2zebra-mobile", clip, tmp_path / "zebras.mp4", "--device", "cpu", "--crf", "23")
    assert result.exit_code == 0, result.output
    assert "2 frames at 10 fps, 64x48" in result.output and "audio copied (aac)" in result.output
    assert read_video(tmp_path / "zebras.mp4")[1]["audio"] == ["aac"]
    # a folder: images and videos side by side, one clip unreadable -> named, the rest written, exit 1
    folder = tmp_path / "in"
    (folder / "clips").mkdir(parents=True)
    Image.open(horses[0]).convert("RGB").resize((64, 64)).save(folder / "horse.png")
    clip.rename(folder / "clips" / "clip.mp4")
    (folder / "clips" / "broken.mov").write_bytes(b"\0" * 64)
    result = run_cli("translate", "horse2zebra-mobile", folder, tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 1, result.output
    assert (tmp_path / "out" / "horse.png").is_file() and (tmp_path / "out" / "clips" / "clip.mp4").is_file()
    assert "unreadable: " in result.output and "broken.mov" in result.output
    assert "1 videos translated" in result.output and "1 unreadable" in result.output


def test_generate_writes_an_interpolation_as_mp4(tmp_path):
    result = run_cli("generate", "mnist-cgan", "--interpolate", "--class", "1", "--class", "8", "--steps", "5",
                     "--n", "2", "--out", tmp_path / "walk.mp4")  # fmt: skip
    assert result.exit_code == 0, result.output
    frames, facts = read_video(tmp_path / "walk.mp4")
    assert len(frames) == 5 and facts["size"] == (560, 280)  # two 28 px rows side by side, enlarged 10x
    first, last = frames[0].astype(int), frames[-1].astype(int)
    assert np.abs(first - last).mean() > 10  # a walk from 1 to 8, not a still
    result = run_cli("generate", "mnist-cgan", "--class", "1", "--out", tmp_path / "still.mp4")
    assert isinstance(result.exception, TransganError) and "add --interpolate" in str(result.exception)
