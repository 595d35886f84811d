"""GANTrainer: the one training loop. It steps a task's phases and owns devices, precision, optimizers,
learning-rate schedules, EMA, checkpoints, logs and Ctrl-C; it knows no concrete network or task."""

from __future__ import annotations

import copy
import math
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from transgan.checkpoint import copy_atomic
from transgan.checkpoint import save as save_model
from transgan.config import TrainConfig, dump_toml
from transgan.errors import TransganError
from transgan.health import diagnose
from transgan.logs import RunLogger, make_progress, plot_learning_curves, read_metrics, truncate_metrics
from transgan.sampler import ResumableSampler
from transgan.tasks.base import GANTask, Phase
from transgan.training_state import (
    list_checkpoints,
    prune_checkpoints,
    read_training_checkpoint,
    restore_training_checkpoint,
    save_training_checkpoint,
)


class TrainingDiverged(TransganError):
    """A loss became NaN or infinite."""


class TrainingInterrupted(TransganError):
    """Ctrl-C: the current step finished and a checkpoint was written."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TransganError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
    return torch.device(name)


def lr_factor(policy: str, progress_epochs: float, epochs: int, decay_epochs: int, progress: float) -> float:
    """Learning-rate multiplier. `linear` is the reference's rule: constant for `epochs`, then a linear
    decay over `decay_epochs` (stepped per epoch); `cosine` follows the fraction `progress` of the run."""
    if policy == "constant":
        return 1.0
    if policy == "linear":
        return max(0.0, 1.0 - max(0, math.floor(progress_epochs) + 1 - epochs) / float(decay_epochs + 1))
    if policy == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    raise TransganError(f"--lr-policy {policy}: unknown; use constant, linear or cosine")


class GANTrainer:
    """Trains `task` with `config`; writes everything under `config.out`. `run_config` is the resolved
    configuration (task + train) stored in the run directory and in every checkpoint."""

    def __init__(self, task: GANTask, config: TrainConfig, run_config: dict[str, Any]):
        self.task, self.config, self.run_config = task, config, run_config
        self.run_dir = Path(config.out)
        self.device = resolve_device(config.device)
        self.rank, self.world_size = 0, 1
        self._check_precision()
        task.device = self.device
        memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        task.networks.to(self.device, memory_format=memory_format)
        task.networks.train()
        if config.compile:
            for net in task.networks.values():
                net.compile()  # in place: state-dict keys stay the same, so checkpoints do not change

        defaults = task.default_optimizer()
        if config.lr is not None:  # the reference's single --lr: both rates, unless one is given on its own
            defaults = {**defaults, "lr_g": config.lr, "lr_d": config.lr}
        pick = lambda key: getattr(config, key) if getattr(config, key) is not None else defaults[key]  # noqa: E731
        self.phases: list[Phase] = task.phases(pick("lr_g"), pick("lr_d"), (pick("beta1"), pick("beta2")))
        fused = self.device.type == "cuda"  # fused Adam: one kernel per phase instead of one per tensor
        self.optimizers = {
            p.name: torch.optim.Adam(self._parameters(p), lr=p.lr, betas=p.betas, eps=config.eps, fused=fused)
            for p in self.phases
        }
        use_scaler = config.precision == "fp16"
        self.scalers = {p.name: torch.amp.GradScaler(self.device.type, enabled=use_scaler) for p in self.phases}
        self.ema = (
            {name: copy.deepcopy(task.networks[name]).eval() for name in task.ema_networks()} if config.ema else {}
        )
        for net in self.ema.values():
            net.requires_grad_(False)

        self.sampler = ResumableSampler(
            len(task.dataset), config.batch_size, config.seed, True, self.rank, self.world_size
        )
        if self.sampler.batches_per_epoch == 0:
            raise TransganError(
                f"--batch-size {config.batch_size} is larger than the dataset ({len(task.dataset)} items)"
            )
        schedule = task.schedule
        self.epochs = config.epochs if config.epochs is not None else schedule.epochs
        self.decay_epochs = config.decay_epochs if config.decay_epochs is not None else schedule.decay_epochs
        self.lr_policy = config.lr_policy or schedule.lr_policy
        self.schedule_steps = (self.epochs + self.decay_epochs) * self.sampler.batches_per_epoch
        self.total_steps = config.steps or self.schedule_steps
        if self.total_steps > self.schedule_steps and self.lr_policy != "constant":
            print(
                f"warning: --steps {self.total_steps} goes past the {self.lr_policy} learning-rate schedule "
                f"({self.epochs}+{self.decay_epochs} epochs = {self.schedule_steps} steps); the rest trains at lr 0. "
                "Raise --epochs/--decay-epochs to stretch it."
            )
        self.step = self.epoch = self.batch_in_epoch = 0
        self._sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        self._counts: dict[str, int] = defaultdict(int)
        self._finite = torch.ones((), dtype=torch.bool, device=self.device)
        self._stop_requested = False
        self._last_logged: dict[str, float] = {}
        self.best_value: float | None = None
        if config.best_mode not in ("min", "max"):
            raise TransganError(f"--best-mode {config.best_mode}: use min or max")
        self.logger: RunLogger | None = None
        self.fixed_batch = default_collate([task.dataset[(i, i)] for i in range(min(8, len(task.dataset)))])

    # -- setup helpers ------------------------------------------------------------------------------
    def _check_precision(self) -> None:
        precision = self.config.precision
        if precision not in ("fp32", "bf16", "fp16"):
            raise TransganError(f"--precision {precision}: use fp32, bf16 or fp16")
        if precision == "fp16" and self.device.type != "cuda":
            raise TransganError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")

    def _parameters(self, phase: Phase) -> list[nn.Parameter]:
        return [p for name in phase.networks for p in self.task.networks[name].parameters()]

    def autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    # -- the loop -----------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> Path:
        """Train until `total_steps`; returns the path of the model file written at the end."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._resume()
        dump_toml(self.run_config, self.run_dir / "config.toml")
        self.logger = RunLogger(self.run_dir, self.config.tensorboard, enabled=self.rank == 0)
        loader = DataLoader(
            self.task.dataset,
            batch_size=self.config.batch_size,
            sampler=self.sampler,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.config.num_workers > 0,
            # Its own generator: creating an iterator must not draw from the global RNG (exact resume).
            generator=torch.Generator(),
        )
        previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)
        started, started_step = time.perf_counter(), self.step
        try:
            with make_progress(self.config.progress and self.rank == 0) as progress:
                bar = progress.add_task(self.task.name, total=self.total_steps, completed=self.step, status="")
                while self.step < self.total_steps and not self._stop_requested and not self._time_is_up(started):
                    self.sampler.set_position(self.epoch, self.batch_in_epoch)
                    for batch in loader:
                        self._train_step(batch)
                        self.step += 1
                        self.batch_in_epoch += 1
                        status = self._after_step(started, started_step)
                        progress.update(bar, completed=self.step, **({"status": status} if status else {}))
                        if self.step >= self.total_steps or self._stop_requested or self._time_is_up(started):
                            break
                    if self.batch_in_epoch >= self.sampler.batches_per_epoch:
                        self.epoch, self.batch_in_epoch = self.epoch + 1, 0
            self.save_checkpoint()
            return self.export_model()
        finally:
            signal.signal(signal.SIGINT, previous_handler)
            self.logger.close()
            if self._stop_requested:
                raise TrainingInterrupted(
                    f"interrupted at step {self.step}; checkpoint saved in {self.checkpoint_dir}; "
                    f"continue with --resume {self.run_dir}"
                )

    def _time_is_up(self, started: float) -> bool:
        return self.config.max_minutes > 0 and time.perf_counter() - started > self.config.max_minutes * 60

    def _train_step(self, batch: dict[str, Any]) -> None:
        self._set_learning_rates()
        with self.autocast():
            self.task.forward(batch)
        for phase in self.phases:
            if self.step % phase.interval:
                continue
            for name in phase.frozen:
                self.task.networks[name].requires_grad_(False)
            optimizer, scaler = self.optimizers[phase.name], self.scalers[phase.name]
            optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                loss, metrics = phase.loss()
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(self._parameters(phase), max_norm)
            scaler.step(optimizer)
            scaler.update()
            for name in phase.frozen:
                self.task.networks[name].requires_grad_(True)
            self._update_ema(phase)
            self._finite &= torch.isfinite(loss.detach())
            self._accumulate({f"loss/{phase.name}": loss, f"grad_norm/{phase.name}": grad_norm, **metrics})

    def _set_learning_rates(self) -> None:
        # The schedule depends on epochs only, never on --steps, so where a run stops (and resumes) does not
        # change the learning rates it trains with.
        epochs_done = self.step / self.sampler.batches_per_epoch
        progress = self.step / self.schedule_steps
        factor = lr_factor(self.lr_policy, epochs_done, self.epochs, self.decay_epochs, progress)
        for phase in self.phases:
            for group in self.optimizers[phase.name].param_groups:
                group["lr"] = phase.lr * factor

    @torch.no_grad()
    def _update_ema(self, phase: Phase) -> None:
        for name in phase.networks:
            if name in self.ema:
                live, average = self.task.networks[name], self.ema[name]
                torch._foreach_lerp_(list(average.parameters()), list(live.parameters()), 1.0 - self.config.ema)
                for ema_buffer, buffer in zip(average.buffers(), live.buffers()):
                    ema_buffer.copy_(buffer)

    def _accumulate(self, values: dict[str, torch.Tensor]) -> None:
        for key, value in values.items():
            self._sums[key] += value.detach().float()
            self._counts[key] += 1

    def _after_step(self, started: float, started_step: int) -> str | None:
        config, status = self.config, None
        if self.step % config.log_every == 0 or self.step == self.total_steps:
            status = self._log(started, started_step)
        if self.step % config.sample_every == 0 or self.step == self.total_steps:
            self.save_samples()
        if self.step % config.checkpoint_every == 0:
            self.save_checkpoint()
        return status

    def _log(self, started: float, started_step: int) -> str:
        self._raise_if_diverged()
        values = {key: (self._sums[key] / self._counts[key]).item() for key in self._sums}
        self._sums.clear()
        self._counts.clear()
        elapsed = time.perf_counter() - started
        values["speed/images_per_s"] = (self.step - started_step) * self.config.batch_size * self.world_size / elapsed
        for phase in self.phases:
            values[f"lr/{phase.name}"] = self.optimizers[phase.name].param_groups[0]["lr"]
        self.logger.log(self.step, values)
        self._last_logged = values
        if self.rank == 0:
            for warning in diagnose(read_metrics(self.logger.metrics_path)[-10:]):
                print(f"warning (step {self.step}): {warning}")
        return " ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in values.items() if k.startswith("loss/"))

    def _raise_if_diverged(self, check_weights: bool = False) -> None:
        # Losses are checked at every log; weights too before a checkpoint, so no checkpoint holds NaN.
        finite = bool(self._finite)
        if finite and check_weights:
            finite = all(bool(torch.isfinite(p).all()) for p in self.task.networks.parameters())
        if not finite:
            latest = list_checkpoints(self.checkpoint_dir)
            kept = f"the last good checkpoint is {latest[-1][1]}" if latest else "no checkpoint had been written yet"
            raise TrainingDiverged(
                f"a loss became NaN or infinite before step {self.step}; training stopped and {kept}. "
                "Lower the learning rate, use fp32, or enable --grad-clip"
            )

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        if self._stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        print("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)")
        self._stop_requested = True

    # -- outputs ------------------------------------------------------------------------------------
    def inference_networks(self) -> dict[str, nn.Module]:
        """The generators to sample and export with: EMA copies when EMA is on."""
        return {name: self.ema.get(name, self.task.networks[name]) for name in self.task.inference_networks()}

    def save_samples(self) -> None:
        networks = self.inference_networks()
        was_training = {name: net.training for name, net in networks.items()}
        for net in networks.values():
            net.eval()
        images = self.task.sample_grid(self.fixed_batch, networks)
        for name, net in networks.items():
            net.train(was_training[name])
        self.logger.save_grid(self.step, images, nrow=len(self.fixed_batch[next(iter(self.fixed_batch))]))

    def save_checkpoint(self) -> None:
        if self.rank != 0:
            return
        self._raise_if_diverged(check_weights=True)
        path = self.checkpoint_dir / f"step_{self.step:08d}.safetensors"
        save_training_checkpoint(
            path,
            networks=dict(self.task.networks.items()),
            ema=self.ema,
            optimizers=self.optimizers,
            scalers=self.scalers,
            extra_state=self.task.extra_state(),
            counters={
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "best_value": self._updated_best(),
            },
            config=self.run_config,
        )
        prune_checkpoints(self.checkpoint_dir, self.config.keep_last)
        model = self.export_model()
        if self.best_value is not None and self.best_value == self._last_logged.get(self.config.best_metric):
            # This checkpoint is the best so far: keep copies that pruning never removes.
            copy_atomic(path, self.checkpoint_dir / "best.safetensors")
            copy_atomic(model, self.run_dir / "model_best.safetensors")
        plot_learning_curves(self.logger.metrics_path, self.run_dir / "curves.png")

    def _updated_best(self) -> float | None:
        """The best value of --best-metric so far, counting the latest log."""
        value = self._last_logged.get(self.config.best_metric) if self.config.best_metric else None
        if value is not None and math.isfinite(value):
            better = min if self.config.best_mode == "min" else max
            self.best_value = value if self.best_value is None else better(self.best_value, value)
        return self.best_value

    def export_model(self) -> Path:
        path = self.run_dir / "model.safetensors"
        if self.rank == 0:
            save_model(self.inference_networks(), path, task=self.task.name, **self.task.model_file_kwargs())
        return path

    def _resume(self) -> None:
        found = list_checkpoints(self.checkpoint_dir)
        if not found:
            raise TransganError(f"--resume {self.run_dir}: no checkpoint in {self.checkpoint_dir}")
        checkpoint = read_training_checkpoint(found[-1][1])
        restore_training_checkpoint(
            checkpoint,
            networks=dict(self.task.networks.items()),
            ema=self.ema,
            optimizers=self.optimizers,
            scalers=self.scalers,
        )
        self.task.load_extra_state(checkpoint.section("task"))
        counters = checkpoint.meta["counters"]
        self.step, self.epoch, self.batch_in_epoch = counters["step"], counters["epoch"], counters["batch_in_epoch"]
        self.best_value = counters.get("best_value")
        truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
