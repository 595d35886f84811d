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

from transgan import distributed
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

STOP_CHECK_EVERY = 10  # steps between the processes' agreement on stopping (Ctrl-C, --max-minutes)


class TrainingDiverged(TransganError):
    """A loss became NaN or infinite."""


class TrainingInterrupted(TransganError):
    """Ctrl-C: the current step finished and a checkpoint was written."""


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
        # Several processes (torchrun): each trains on its slice of every global batch and gradients are
        # averaged across them; see distributed.py and _prepare_data_parallel.
        process = distributed.setup(config.device)
        self.rank, self.world_size, self.device = process.rank, process.world_size, process.device
        self._check_precision()
        task.device = self.device
        memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        task.networks.to(self.device, memory_format=memory_format)
        task.networks.train()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # input sizes are fixed in training: pick the fastest kernels
        self._prepare_data_parallel()
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
        if self.total_steps > self.schedule_steps and self.lr_policy != "constant" and self.rank == 0:
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
        self._stop_agreed_at, self._stop_agreed = -1, False  # the processes' last agreement on stopping
        self._first_interrupt = 0.0
        self._last_logged: dict[str, float] = {}
        self.best_value: float | None = None
        if config.best_mode not in ("min", "max"):
            raise TransganError(f"--best-mode {config.best_mode}: use min or max")
        self.logger: RunLogger | None = None
        self.fixed_batch = default_collate([task.dataset[(i, i)] for i in range(min(8, len(task.dataset)))])
        self.evaluator = None
        if config.eval_every > 0 and self.rank == 0:
            # Set up now, so a missing feature extractor or bad --eval-data fails before step 1, not hours in.
            from transgan.evaluation import TrainingEvaluator, live_model  # inference code: loaded only when used

            model_now = lambda: live_model(self.inference_networks(), task.name, **task.model_file_kwargs())  # noqa: E731
            self.evaluator = TrainingEvaluator(config, model_now, self.device, self.run_dir)

    # -- setup helpers ------------------------------------------------------------------------------
    def _check_precision(self) -> None:
        precision = self.config.precision
        if precision not in ("fp32", "bf16", "fp16"):
            raise TransganError(f"--precision {precision}: use fp32, bf16 or fp16")
        if precision == "fp16" and self.device.type != "cuda":
            raise TransganError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")

    def _prepare_data_parallel(self) -> None:
        """Data parallelism without torch's DDP wrapper, whose one-forward-one-backward model does not fit GAN
        phases (D runs frozen inside the G phase, the fakes are shared by phases): every process starts from
        rank 0's weights, runs the same phases on its own slice of the global batch, and each phase's
        gradients are averaged across processes right after backward (before the scaler, clipping and the
        optimizer step), so all processes take the same step a single process would take on the global batch."""
        if self.config.sync_bn and self.world_size > 1:
            if self.device.type != "cuda":
                raise TransganError("--sync-bn needs CUDA GPUs (torch's SyncBatchNorm); on CPU leave it off")
            for name in list(self.task.networks):
                # Same parameter and buffer names, so checkpoints and model files do not change.
                self.task.networks[name] = nn.SyncBatchNorm.convert_sync_batchnorm(self.task.networks[name])
        if self.world_size > 1:
            distributed.broadcast_state(self.task.networks.values())
            distributed.seed_rank(self.config.seed, self.rank)  # different noise/dropout on each process

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
        if self.rank == 0:
            dump_toml(self.run_config, self.run_dir / "config.toml")
        self.logger = RunLogger(self.run_dir, self.config.tensorboard, enabled=self.rank == 0)
        loader = self.make_loader()
        previous_handler = signal.signal(signal.SIGINT, self._on_interrupt)
        started, started_step = time.perf_counter(), self.step
        try:
            with make_progress(self.config.progress and self.rank == 0) as progress:
                bar = progress.add_task(self.task.name, total=self.total_steps, completed=self.step, status="")
                while self.step < self.total_steps and not self._should_stop(started):
                    self.sampler.set_position(self.epoch, self.batch_in_epoch)
                    for batch in loader:
                        self._train_step(batch)
                        self.step += 1
                        self.batch_in_epoch += 1
                        status = self._after_step(started, started_step)
                        progress.update(bar, completed=self.step, **({"status": status} if status else {}))
                        if self.step >= self.total_steps or self._should_stop(started):
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
                    + (f" --nproc {self.world_size}" if self.world_size > 1 else "")
                )

    def make_loader(self) -> DataLoader:
        """The training DataLoader: worker processes that live across epochs, pinned memory on CUDA (so the
        copy to the GPU overlaps compute) and the resumable sampler's order."""
        return DataLoader(
            self.task.dataset,
            batch_size=self.config.batch_size,
            sampler=self.sampler,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=self.config.num_workers > 0,
            # Its own generator: creating an iterator must not draw from the global RNG (exact resume).
            generator=torch.Generator(),
        )

    def _time_is_up(self, started: float) -> bool:
        return self.config.max_minutes > 0 and time.perf_counter() - started > self.config.max_minutes * 60

    def _should_stop(self, started: float) -> bool:
        """Ctrl-C or --max-minutes. With several processes they must stop after the same step, so they
        agree every STOP_CHECK_EVERY steps (a collective that waits for the GPU: not at every step)."""
        if self.world_size == 1:
            return self._stop_requested or self._time_is_up(started)
        if self.step % STOP_CHECK_EVERY == 0 and self._stop_agreed_at != self.step:
            # A signal may arrive between two calls at the same step: only the agreed answer counts.
            flags = distributed.any_process([self._stop_requested, self._time_is_up(started)], self.device)
            self._stop_agreed_at, self._stop_agreed = self.step, any(flags)
            self._stop_requested = flags[0]  # every process reports the interrupt, whichever got the signal
        return self._stop_agreed_at == self.step and self._stop_agreed

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
            if self.world_size > 1:  # still scaled: an inf on any process reaches all, so all skip the step
                distributed.average_gradients(self._parameters(phase), self.world_size)
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
        # Decided from the config alone, so every DDP rank agrees; only rank 0 holds an evaluator.
        eval_due = config.eval_every > 0 and (self.step % config.eval_every == 0 or self.step == self.total_steps)
        evaluation = self._evaluate() if eval_due and self.evaluator is not None else {}
        if self.step % config.checkpoint_every == 0 or (eval_due and (config.best_metric or "").startswith("eval/")):
            self.save_checkpoint()  # after an evaluation: the evaluated weights can become `best`
        for key in evaluation:  # later checkpoints hold other weights: this evaluation must not judge them
            self._last_logged.pop(key, None)
        return status

    def _evaluate(self) -> dict[str, float]:
        values = self.evaluator()
        self.logger.log(self.step, values)
        self._last_logged.update(values)
        print(f"eval (step {self.step}): " + " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in values.items()))
        return values

    def _log(self, started: float, started_step: int) -> str:
        self._raise_if_diverged()
        keys = list(self._sums)  # the same keys in the same order on every process: they run the same phases
        means = torch.stack([self._sums[key] / self._counts[key] for key in keys]) if keys else torch.zeros(0)
        if self.world_size > 1 and keys:
            means = distributed.all_reduce_sum(means) / self.world_size  # the metrics of the global batch
        values = dict(zip(keys, means.tolist()))
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
        if self.world_size > 1:  # all processes stop together, not only the one that saw the NaN
            finite = not distributed.any_process([not finite], self.device)[0]
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
        # torchrun passes the terminal's Ctrl-C on to its workers, which got it already: a second SIGINT
        # within 2 s is that copy, not a second Ctrl-C.
        if self.world_size > 1 and time.monotonic() - self._first_interrupt < 2.0:
            return
        if self._stop_requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self._first_interrupt = time.monotonic()
        if self.rank == 0:
            print("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)")
        self._stop_requested = True

    # -- outputs ------------------------------------------------------------------------------------
    def inference_networks(self) -> dict[str, nn.Module]:
        """The generators to sample and export with: EMA copies when EMA is on."""
        return {name: self.ema.get(name, self.task.networks[name]) for name in self.task.inference_networks()}

    def save_samples(self) -> None:
        if self.rank != 0:
            return
        networks = self.inference_networks()
        was_training = {name: net.training for name, net in networks.items()}
        for net in networks.values():
            net.eval()
        images = self.task.sample_grid(self.fixed_batch, networks)
        for name, net in networks.items():
            net.train(was_training[name])
        self.logger.save_grid(self.step, images, nrow=len(self.fixed_batch[next(iter(self.fixed_batch))]))

    def save_checkpoint(self) -> None:
        self._raise_if_diverged(check_weights=True)  # on every process, so that they all stop together
        if self.world_size > 1:
            # Batch-norm statistics differ by process (each saw its own images): all take rank 0's, the ones
            # the checkpoint holds, so a resumed run and an uninterrupted one continue from the same state.
            distributed.broadcast_state(self.task.networks.values(), buffers_only=True)
        if self.rank == 0:
            self._write_checkpoint()
        if self.world_size > 1:
            distributed.barrier()  # nobody goes on, resumes or exits before the checkpoint is complete

    def _write_checkpoint(self) -> None:
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
                "world_size": self.world_size,
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
        if counters.get("world_size", 1) != self.world_size:
            # The data order (and the epoch position) is laid out for the global batch of the first run.
            raise TransganError(
                f"--resume {self.run_dir}: the run trained with {counters.get('world_size', 1)} process(es), "
                f"this one has {self.world_size}; resume with --nproc {counters.get('world_size', 1)}"
            )
        self.step, self.epoch, self.batch_in_epoch = counters["step"], counters["epoch"], counters["batch_in_epoch"]
        self.best_value = counters.get("best_value")
        # Every process loaded rank 0's random state; the others take their own stream again.
        distributed.seed_rank(self.config.seed, self.rank, self.step)
        if self.rank == 0:
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)
