"""Frozen config dataclasses and their dict/TOML round-trip; imports no torch."""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from transgan.errors import TransganError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

T = TypeVar("T")


def option(default: Any, help: str) -> Any:
    """A config field whose help text the CLI shows (every config field is a command-line option)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """Options of the training loop, shared by every task (the task's own options live in its config)."""

    out: str = option("runs/run", "run directory: checkpoints, logs, samples, model.safetensors")
    steps: int | None = option(None, "total optimisation steps (with --resume: go on until this step)")
    epochs: int | None = option(None, "epochs at the initial learning rate (default: the task's)")
    decay_epochs: int | None = option(None, "epochs of linear learning-rate decay after --epochs (linear policy)")
    max_minutes: float = option(0.0, "stop (checkpoint and model file written) after this many minutes; 0: no limit")
    batch_size: int | None = option(None, "images per step, per process with DDP (default: the task's)")
    seed: int = option(0, "seed of weights, data order and augmentation")
    init_from: str = option(
        "",
        "start a new run from this model's weights where their shapes fit (run directory, model file, pretrained "
        "name, reference / GAN Compression / CUT .pth, StyleGAN2-ADA .pkl); fresh optimizers and schedule",
    )
    init_from_sha256: str = option("", "content hash of --init-from (recorded by the run); given, it must match")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    precision: str = option("fp32", "fp32, bf16 (CPU or CUDA) or fp16 (CUDA, with a gradient scaler)")
    channels_last: bool = option(False, "channels_last memory format (faster convolutions on GPU)")
    compile: bool = option(False, "torch.compile the networks")
    sync_bn: bool = option(False, "with several CUDA processes: batch-norm statistics over the global batch")
    lr: float | None = option(None, "learning rate of every network (the reference's --lr); --lr-g/--lr-d override it")
    lr_g: float | None = option(None, "generator learning rate (default: the task's)")
    lr_d: float | None = option(None, "discriminator learning rate (default: the task's)")
    beta1: float | None = option(None, "Adam beta1 (default: the task's)")
    beta2: float | None = option(None, "Adam beta2 (default: the task's)")
    eps: float = option(1e-8, "Adam epsilon")
    lr_policy: str | None = option(None, "constant, linear or cosine (default: the task's)")
    grad_clip: float = option(0.0, "clip each phase's gradient norm to this; 0 disables")
    ema: float | None = option(None, "EMA decay of generator weights (e.g. 0.999); 0 disables (default: the task's)")
    ema_rampup: float | None = option(
        None,
        "EMA ramp-up: half-life at most this fraction of the images seen (StyleGAN2-ADA: 0.05); 0: off "
        "(default: the task's)",
    )
    num_workers: int = option(2, "DataLoader worker processes decoding images")
    log_every: int = option(50, "steps between metric logs")
    sample_every: int = option(500, "steps between sample grids")
    checkpoint_every: int = option(1000, "steps between checkpoints")
    checkpoint_minutes: float = option(30.0, "also checkpoint after this many minutes since the last one; 0: off")
    stop_signals: str = option(
        "TERM,USR1", "signals that finish the step, checkpoint and exit 75 (preemption: SLURM, Kubernetes, torchrun)"
    )
    keep_last: int = option(3, "step checkpoints to keep")
    best_metric: str | None = option(None, "keep checkpoints/best.safetensors by this logged metric, e.g. G/l1")
    best_mode: str = option("min", "min or max: which direction of --best-metric is better")
    eval_every: int = option(0, "steps between evaluations on --eval-data, logged as eval/<metric>; 0: none")
    eval_data: str = option("", "held-out data: A/ and B/ folders (translation), or real images / a stats .npz")
    eval_n: int = option(1000, "images to translate or generate per evaluation")
    eval_metrics: str = option("fid", "comma-separated: fid, kid, pr (precision/recall), paired (L1/PSNR/SSIM)")
    eval_features: str = option("inception", "evaluation features: inception, or a TorchScript/.pt2/model file")
    eval_inception_weights: str = option("", "FID Inception weights file (default: $TRANSGAN_INCEPTION_WEIGHTS)")
    progress: bool = option(True, "show a progress bar")
    tensorboard: bool = option(True, "write TensorBoard events")

    def __post_init__(self) -> None:
        # Checked once, when the configuration is made (command line, --config file or config.toml).
        choices = {"precision": ("fp32", "bf16", "fp16"), "best_mode": ("min", "max")}
        choices["lr_policy"] = (None, "constant", "linear", "cosine")
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                shown = ", ".join(a for a in allowed if a)
                raise TransganError(f"{_flag(name)} {getattr(self, name)}: use {shown}")
        positive = ("batch_size", "steps", "log_every", "sample_every", "checkpoint_every", "eval_n")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TransganError(f"{_flag(name)} {value}: must be 1 or more")
        for name in ("epochs", "decay_epochs", "num_workers", "keep_last", "eval_every"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise TransganError(f"{_flag(name)} {value}: must be 0 or more")
        for name in ("max_minutes", "checkpoint_minutes", "grad_clip"):
            if getattr(self, name) < 0:
                raise TransganError(f"{_flag(name)} {getattr(self, name)}: must be 0 (off) or more")
        if self.ema is not None and not 0 <= self.ema < 1:
            raise TransganError(f"--ema {self.ema}: use a decay in [0, 1), e.g. 0.999 (0 disables EMA)")
        if self.ema_rampup is not None and self.ema_rampup < 0:
            raise TransganError(f"--ema-rampup {self.ema_rampup}: use 0 (off) or a positive fraction, e.g. 0.05")
        signal_names(self.stop_signals)

    def eval_options(self) -> EvalOptions:
        """The options of --eval-every, as the evaluator takes them."""
        return EvalOptions(
            data=self.eval_data,
            n=self.eval_n,
            metrics=self.eval_metrics,
            features=self.eval_features,
            inception_weights=self.eval_inception_weights,
        )


@dataclass(frozen=True)
class EvalOptions:
    """What evaluation during training needs: held-out data, sample count, metrics, feature extractor."""

    data: str
    n: int = 1000
    metrics: str = "fid"
    features: str = "inception"
    inception_weights: str = ""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


STOP_SIGNALS = ("TERM", "USR1", "USR2", "HUP", "INT")


def signal_names(text: str) -> list[str]:
    """'TERM,USR1' -> ['TERM', 'USR1'] (SIG prefix optional); unknown names raise."""
    names = [name.strip().upper().removeprefix("SIG") for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STOP_SIGNALS]
    if unknown:
        raise TransganError(f"--stop-signals {text!r}: use a comma-separated list of {', '.join(STOP_SIGNALS)}")
    return names


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as a plain dict (nested dataclasses included)."""
    return dataclasses.asdict(config)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Convert a TOML/CLI value to the field's type: lists become tuples for tuple fields, ints floats."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return value if value is None else _coerce(value, options[0], where)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return from_dict(annotation, value, where)
    expected = annotation if isinstance(annotation, type) else None
    if expected in (int, float, str, bool) and not isinstance(value, expected):
        raise TransganError(f"{where}: expected {expected.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a dict; unknown keys are an error that names them and lists the known ones."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TransganError(f"{where}: unknown option {', '.join(unknown)}; known options: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _coerce(value, hints[name], f"{where}.{name}") for name, value in values.items()})


def _without_none(value: Any) -> Any:
    # TOML has no null: a missing key means "the default", which is what None means in our configs.
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_none(v) for v in value]
    return value


def dump_toml(values: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(tomli_w.dumps(_without_none(values)))


def load_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TransganError(f"{path}: config file not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise TransganError(f"{path}: not valid TOML ({error})") from error


def replace(config: T, **changes: Any) -> T:
    """A copy of a frozen config with some fields changed (None values are ignored)."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
