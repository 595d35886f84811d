"""Video in and out with PyAV: streaming decode, frames batched through an engine, H.264 out, audio copied."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from transgan.errors import TransganError
from transgan.inference.engines import Engine
from transgan.inference.pixels import from_network, pad_to_multiple, to_network

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")
# What we write: H.264 (yuv420p) in MP4/MOV/MKV, VP9 in WebM. Other input suffixes are written as .mp4.
OUTPUT_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}
AUDIO_FALLBACK = {".webm": "libopus"}  # when the input's audio cannot be copied into the output container
DEFAULT_FPS = Fraction(25)


class UnreadableVideo(TransganError):
    """A video that cannot be opened or decoded (unknown codec, corrupt data); other inputs still run."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot read video {path} ({reason})")
        self.path = Path(path)
        self.reason = reason


@dataclass
class VideoSummary:
    """One translated clip: frames written, timing, output size and what happened to the audio."""

    source: Path
    target: Path
    frames: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)  # width, height of the output
    audio: str = "none"  # "copied (aac)", "re-encoded (aac -> opus)" or "none"

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


@dataclass
class VideoFolderSummary:
    """The videos of a folder: clips translated, skipped (output exists) and unreadable (with the reason)."""

    translated: list[VideoSummary] = field(default_factory=list)
    skipped_existing: int = 0
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def _av() -> Any:
    """PyAV, or one line saying how to install it (it is the optional extra `video`)."""
    try:
        import av
    except ImportError as error:
        raise TransganError("video needs PyAV: pip install 'transgan[video]' (or pip install av)") from error
    return av


def is_video_file(path: str | Path) -> bool:
    """True when the name has a video suffix (any case); the file need not exist."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def list_videos(folder: str | Path) -> list[Path]:
    """Video files under `folder`, recursively, hidden names left out, sorted by relative path."""
    folder = Path(folder)
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / name for name in files if not name.startswith(".") and is_video_file(name)]
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


def output_path(source: Path, target: Path) -> Path:
    """Where a clip's translation goes: `target` itself when it names a video, else target/<source name>."""
    if target.suffix:
        if target.suffix.lower() not in OUTPUT_CODECS:
            raise TransganError(f"{target}: write video as {', '.join(OUTPUT_CODECS)}")
        return target
    return target / _output_name(source)


def _output_name(source: Path) -> str:
    return source.name if source.suffix.lower() in OUTPUT_CODECS else source.with_suffix(".mp4").name


def translate_video(
    engine: Engine,
    source: str | Path,
    target: str | Path,
    batch_size: int = 8,
    crf: int = 18,
    resize: int | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> VideoSummary:
    """Translate every frame of `source` into the video `target`, streaming: memory stays constant.

    Frames keep their timestamps (so the input's frame rate, constant or variable), the input's size (rounded
    down to even numbers, which 4:2:0 H.264 needs; `resize` scales the shorter side to N first), and the audio
    stream is copied (re-encoded only when the output container cannot hold its codec). The output is written
    under a temporary name and renamed when complete. `on_progress(frames_done, frames_total_or_None)`.
    """
    av = _av()
    if engine.info.get("kind") != "translator":
        raise TransganError(f"this model is a {engine.info.get('kind')}, not a translator: use `transgan generate`")
    if batch_size < 1:
        raise TransganError(f"--batch-size {batch_size}: must be at least 1")
    if not 0 <= crf <= 63:
        raise TransganError(f"--crf {crf}: use 0 (lossless) .. 51 for H.264 (18 looks transparent, 23 is x264's)")
    source, target = Path(source), Path(target)
    codec = OUTPUT_CODECS.get(target.suffix.lower())
    if codec is None:
        raise TransganError(f"{target}: write video as {', '.join(OUTPUT_CODECS)}")
    if source.resolve() == target.resolve():
        raise TransganError(f"{target}: the output would overwrite the input video")
    try:
        reader = av.open(str(source))
    except (av.error.FFmpegError, OSError) as error:
        raise UnreadableVideo(source, _first_line(error)) from error
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    start = time.perf_counter()
    try:
        with reader:
            summary = _transcode(av, engine, reader, source, partial, codec, batch_size, crf, resize, on_progress)
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()
    summary.target = target
    summary.seconds = time.perf_counter() - start
    return summary


def _transcode(av, engine, reader, source, partial, codec, batch_size, crf, resize, on_progress) -> VideoSummary:
    if not reader.streams.video:
        raise UnreadableVideo(source, "it has no video stream")
    video_in = reader.streams.video[0]
    if video_in.codec_context is None:
        # FFmpeg made no decoder for it, so it cannot tell us the codec's name either.
        raise UnreadableVideo(source, f"its video codec is not one that FFmpeg {_ffmpeg_version(av)} can decode")
    video_in.thread_type = "AUTO"  # frame threads: decoding must not starve the model on small CPUs
    audio_in = reader.streams.audio[0] if reader.streams.audio else None
    width, height = _output_size(video_in.codec_context.width, video_in.codec_context.height, resize)
    rate = video_in.average_rate or video_in.guessed_rate or DEFAULT_FPS
    total = video_in.frames or _estimated_frames(video_in, reader, rate)
    summary = VideoSummary(source, partial, fps=float(rate), size=(width, height))
    channels = int(engine.info.get("input_nc", 3))
    with av.open(str(partial), "w") as writer:
        video_out = _video_stream(writer, codec, rate, width, height, crf)
        audio_out, summary.audio = _audio_stream(writer, audio_in, partial.suffix.lower())
        streams = [video_in] + ([audio_in] if audio_in is not None else [])
        pending: list[Any] = []  # (output pts, frame): decoded frames waiting for a full batch
        clock = _Clock(rate, video_in.time_base)
        try:
            for packet in reader.demux(*streams):
                if packet.stream is audio_in:
                    _write_audio(writer, packet, audio_out, summary.audio)
                    continue
                for frame in packet.decode():
                    pending.append((clock.tick(frame.pts), frame))
                    if len(pending) == batch_size:
                        summary.frames += _translate_frames(engine, pending, writer, video_out, channels, batch_size)
                        pending.clear()
                        if on_progress:
                            on_progress(summary.frames, total)
            if pending:
                summary.frames += _translate_frames(engine, pending, writer, video_out, channels, batch_size)
            writer.mux(video_out.encode(None))
            if audio_out is not None and summary.audio.startswith("re-encoded"):
                writer.mux(audio_out.encode(None))
        except av.error.FFmpegError as error:
            raise UnreadableVideo(source, f"{_first_line(error)} after {summary.frames} frames") from error
        if on_progress:
            on_progress(summary.frames, summary.frames)
    if summary.frames == 0:
        raise UnreadableVideo(source, "no frame could be decoded")
    return summary


def _video_stream(writer, codec: str, rate: Fraction, width: int, height: int, crf: int):
    stream = writer.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.codec_context.time_base = 1 / rate  # one tick per frame: see _Clock
    stream.options = {"crf": str(crf), "b": "0"} if codec == "libvpx-vp9" else {"crf": str(crf)}
    return stream


def _audio_stream(writer, audio_in, suffix: str) -> tuple[Any, str]:
    """The output audio stream: a copy of the input's when the container takes its codec, else re-encoded."""
    if audio_in is None:
        return None, "none"
    name = _codec_name(audio_in)
    if name in writer.supported_codecs and (suffix != ".webm" or name in ("opus", "vorbis")):
        return writer.add_stream_from_template(audio_in), f"copied ({name})"
    if audio_in.codec_context is None:
        return None, f"dropped (no decoder for '{name}')"
    fallback = AUDIO_FALLBACK.get(suffix, "aac")
    stream = writer.add_stream(fallback, rate=audio_in.codec_context.sample_rate or 48000)
    return stream, f"re-encoded ({name} -> {fallback.removeprefix('lib')})"


def _write_audio(writer, packet, audio_out, mode: str) -> None:
    if audio_out is None or packet.dts is None:  # dts None: the demuxer's empty flush packet
        return
    if mode.startswith("copied"):
        packet.stream = audio_out
        writer.mux(packet)
        return
    for frame in packet.decode():
        frame.pts = None  # the encoder numbers samples itself; resampling may change their count
        writer.mux(audio_out.encode(frame))


def _translate_frames(engine: Engine, frames: list, writer, video_out, channels: int, batch_size: int) -> int:
    """Run one batch of decoded frames through the engine and hand the results to the encoder, in order."""
    av = _av()
    pixel_format = "gray" if channels == 1 else "rgb24"
    width, height = video_out.width, video_out.height
    pixels = [frame.to_ndarray(format=pixel_format, width=width, height=height) for _, frame in frames]
    for (pts, _), image in zip(frames, translate_pixels(engine, pixels, batch_size)):
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=_frame_format(image))
        out.pts, out.time_base = pts, video_out.codec_context.time_base
        writer.mux(video_out.encode(out))
    return len(frames)


def translate_pixels(engine: Engine, images: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
    """H x W (x C) uint8 images of one size -> translated uint8 images of the same size, one engine call."""
    images = [image[:, :, None] if image.ndim == 2 else image for image in images]
    height, width = images[0].shape[:2]
    multiple = int(engine.info.get("size_multiple") or 1)
    batch = np.stack([pad_to_multiple(image, multiple) for image in images])
    if engine.replans_per_shape and len(images) < batch_size:
        # A short batch would be a new input shape (seconds of re-planning on GPU): repeat the last frame.
        batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - len(images), axis=0)])
    normalization = engine.info.get("normalization") or {"mean": 0.5, "std": 0.5}
    mean, std = float(normalization["mean"]), float(normalization["std"])
    output = from_network(engine.run(to_network(batch, mean, std))[: len(images)], mean, std)
    return [image[:height, :width] for image in output]


def _frame_format(image: np.ndarray) -> str:
    return "gray" if image.ndim == 2 or image.shape[2] == 1 else "rgb24"


class _Clock:
    """Output timestamps in frames of the nominal rate, from the input's own timestamps.

    Following the input's timestamps keeps variable frame rates and the audio in sync; rounding them to whole
    frames undoes containers that store coarse times (Matroska's milliseconds would make 29.97 fps read back as
    29.95). A frame without a timestamp, or one that would not advance, takes the next free slot.
    """

    def __init__(self, rate: Fraction, time_base: Fraction | None):
        self.rate, self.time_base, self.last = rate, time_base, -1

    def tick(self, pts: int | None) -> int:
        slot = self.last + 1
        if pts is not None and self.time_base is not None:
            slot = max(slot, round(pts * self.time_base * self.rate))
        self.last = slot
        return slot


def _output_size(width: int, height: int, resize: int | None) -> tuple[int, int]:
    if resize is not None:
        if resize < 2:
            raise TransganError(f"--resize {resize}: must be at least 2 pixels for a video")
        scale = resize / min(width, height)
        width, height = round(width * scale), round(height * scale)
    # 4:2:0 chroma covers 2x2 pixels: H.264 and VP9 need even sizes, so an odd last row or column is dropped.
    width, height = width - width % 2, height - height % 2
    if width < 2 or height < 2:
        raise TransganError(f"a {width}x{height} video is too small to encode")
    return width, height


def _estimated_frames(stream, reader, rate: Fraction) -> int | None:
    """Frames from the duration, for containers that do not count them (Matroska, MPEG-TS)."""
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif reader.duration is not None:
        seconds = reader.duration / 1_000_000  # the container's duration is in FFmpeg's microseconds
    else:
        return None
    return max(1, round(seconds * rate))


def _codec_name(stream) -> str:
    return stream.codec_context.name if stream.codec_context is not None else "unknown"


def _ffmpeg_version(av) -> str:
    return str(getattr(av, "ffmpeg_version_info", "") or "(PyAV's build)")


def _first_line(error: BaseException) -> str:
    text = (getattr(error, "strerror", None) or str(error)).strip()  # FFmpeg errors: the reason, without errno
    return text.splitlines()[0] if text else type(error).__name__


def translate_videos(
    engine: Engine,
    input_dir: str | Path,
    output_dir: str | Path,
    batch_size: int = 8,
    crf: int = 18,
    resize: int | None = None,
    overwrite: bool = False,
    on_start: Callable[[Path, int], None] | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    select: Callable[[list[Path]], list[Path]] | None = None,
) -> VideoFolderSummary:
    """Translate every video under `input_dir` into `output_dir` (same relative paths); one unreadable clip is
    recorded and reported through `on_warning`, the others still run. `on_start(path, position)` per clip;
    `select(paths)` keeps this process's share when several split the folder (transgan.inference.sharding)."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    summary = VideoFolderSummary()
    clips = list_videos(input_dir)
    for position, source in enumerate(select(clips) if select is not None else clips):
        target = output_dir / source.relative_to(input_dir).parent / _output_name(source)
        if target.exists() and not overwrite:
            summary.skipped_existing += 1
            continue
        if on_start:
            on_start(source, position)
        try:
            summary.translated.append(translate_video(engine, source, target, batch_size, crf, resize, on_progress))
        except UnreadableVideo as error:
            summary.unreadable.append((source, error.reason))
            if on_warning:
                on_warning(str(error))
    return summary


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float = 8, crf: int = 18) -> Path:
    """Encode H x W x 3 (or H x W) uint8 frames as an H.264 MP4 (VP9 for .webm); sizes are made even."""
    av = _av()
    path = Path(path)
    codec = OUTPUT_CODECS.get(path.suffix.lower())
    if codec is None:
        raise TransganError(f"{path}: write video as {', '.join(OUTPUT_CODECS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise TransganError(f"{path}: no frames to write")
    height, width = first.shape[:2]
    width, height = _output_size(width, height, None)
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(partial), "w") as writer:
            stream = _video_stream(writer, codec, rate, width, height, crf)
            for index, image in enumerate(_chain(first, frames)):
                image = np.ascontiguousarray(image[:height, :width])
                frame = av.VideoFrame.from_ndarray(image, format=_frame_format(image))
                frame.pts, frame.time_base = index, stream.codec_context.time_base
                writer.mux(stream.encode(frame))
            writer.mux(stream.encode(None))
        os.replace(partial, path)
    finally:
        if partial.exists():
            partial.unlink()
    return path


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def interpolation_frames(images: Any, steps: int, min_side: int = 256) -> list[np.ndarray]:
    """An interpolation (rows x steps images in [-1, 1], row-major) as frames: frame t shows step t of every
    row side by side, RGB uint8, enlarged (nearest neighbour) so the shorter side is at least `min_side`."""
    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.ndim != 4 or len(array) % steps:
        raise TransganError(f"an animation needs rows x steps images, got shape {tuple(array.shape)} for {steps} steps")
    pixels = np.clip((array + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    if pixels.shape[3] == 1:
        pixels = np.repeat(pixels, 3, axis=3)  # greyscale samples (MNIST) as RGB: players expect colour
    rows = len(pixels) // steps
    grid = pixels.reshape(rows, steps, *pixels.shape[1:])
    scale = max(1, -(-min_side // min(grid.shape[2], grid.shape[3] * rows)))
    frames = [np.concatenate(list(grid[:, t]), axis=1) for t in range(steps)]  # the rows side by side
    return [frame.repeat(scale, axis=0).repeat(scale, axis=1) for frame in frames]


def write_interpolation_video(images: Any, steps: int, path: str | Path, fps: float = 8, min_side: int = 256) -> Path:
    """An interpolation as an MP4 (PyAV, the `video` extra): one frame per step (`interpolation_frames`)."""
    return write_video(interpolation_frames(images, steps, min_side), path, fps=fps)


def write_interpolation_gif(images: Any, steps: int, path: str | Path, fps: float = 8, min_side: int = 256) -> Path:
    """An interpolation as an animated GIF (Pillow, no extra needed) that plays forward then back, looping."""
    from PIL import Image

    frames = [Image.fromarray(frame) for frame in interpolation_frames(images, steps, min_side)]
    frames = frames + frames[-2:0:-1]  # there and back again: the loop has no jump
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)
    return path
