"""GANTrainer: the one training loop. It steps a task's phases and owns devices, precision, optimizers and EMA;
the plan (rates, schedule) comes resolved from recipe.py, stopping from stopping.py, files from run_files.py
and logs from monitor.py. It knows no concrete network or task."""

from __future__ import annotations

import gc
import math
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate

from transgan import distributed
from transgan.checkpoint import ModelFile
from transgan.checkpoint import save as save_model
from transgan.ema import EMA
from transgan.errors import TransganError
from transgan.logs import RunLogger, make_progress, truncate_metrics
from transgan.monitor import TrainingDiverged, TrainingMonitor, summary  # noqa: F401 (re-exported)
from transgan.nets.test_time import test_time
from transgan.optimizers import build_optimizers
from transgan.recipe import LRSchedule, resolve_plan
from transgan.run_config import RunConfig
from transgan.run_files import RunFiles, WriteFailed
from transgan.stopping import (  # noqa: F401 (TrainingInterrupted, TrainingPreempted re-exported)
    DeferredWorkerFailures,
    StopControl,
    TrainingInterrupted,
    TrainingPreempted,
    stop_signal_numbers,
)
from transgan.stream import BatchStream
from transgan.tasks.base import GANTask, Phase
from transgan.training_state import restore_training_checkpoint


class GANTrainer:
    """Trains `task` as `run` says; writes everything under `run.train.out`."""

    def __init__(self, task: GANTask, run: RunConfig):
        self.task, self.run, self.config = task, run, run.train
        config = self.config
        process = distributed.setup(config.device)  # one process, or one of torchrun's
        self.rank, self.world_size, self.device = process.rank, process.world_size, process.device
        if config.precision == "fp16" and self.device.type != "cuda":
            raise TransganError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")
        self.plan = plan = resolve_plan(config, task.recipe())
        self._place_networks()
        self._fixed = {id(p) for p in task.frozen_parameters()}  # Freeze-D: in no optimizer, never a gradient
        for parameter in task.frozen_parameters():
            parameter.requires_grad_(False)
        self.set_phases(task.phases())
        self.ema = EMA(task.networks, task.ema_networks(), plan.ema, plan.ema_rampup, plan.ema_half_life_images)
        cuda = self.device.type == "cuda"
        self.stream = BatchStream(
            task.dataset,
            plan.batch_size,
            config.seed,
            self.rank,
            self.world_size,
            config.num_workers,
            cuda,
            task.stages(),
            worker_signals=stop_signal_numbers(config.stop_signals),
        )
        self.schedule = LRSchedule(plan.lr_policy, plan.epochs, plan.decay_epochs, self.stream.batches_per_epoch())
        self.total_steps = config.steps or self.stream.total_steps or self.schedule.steps
        if self.total_steps > self.schedule.steps and plan.lr_policy != "constant" and self.rank == 0:
            print(
                f"warning: --steps {self.total_steps} goes past the {plan.lr_policy} learning-rate schedule "
                f"({plan.epochs}+{plan.decay_epochs} epochs = {self.schedule.steps} steps); the rest trains at lr 0. "
                "Raise --epochs/--decay-epochs to stretch it."
            )
        self.step = 0
        self.run_dir = Path(config.out)
        self.files = RunFiles(self.run_dir, config.keep_last, config.best_metric, config.best_mode)
        logger = RunLogger(self.run_dir, config.tensorboard, enabled=self.rank == 0)
        self.monitor = TrainingMonitor(logger, self.device, self.rank, self.world_size)
        self._unjudged: dict[str, float] = {}  # values logged since the last checkpoint: they judge "best"
        self._saved_step = -1
        self.fixed_batch = default_collate([task.dataset[(i, i)] for i in range(min(8, len(task.dataset)))])
        self.evaluator = self._make_evaluator() if config.eval_every > 0 and self.rank == 0 else None

    # -- set-up -------------------------------------------------------------------------------------
    def _place_networks(self) -> None:
        config, networks = self.config, self.task.networks
        self.task.device = self.device
        networks.to(self.device, memory_format=torch.channels_last if config.channels_last else torch.preserve_format)
        networks.train()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # input sizes are fixed in training: pick the fastest kernels
        cuda = self.device.type == "cuda"
        distributed.prepare_networks(networks, config.seed, self.rank, self.world_size, config.sync_bn, cuda)
        if config.compile:
            for net in networks.values():
                net.compile()  # in place: state-dict keys stay the same, so checkpoints do not change

    def set_phases(self, phases: list[Phase]) -> None:
        """The phases each step runs, with fresh optimizers: one per optimizer name the phases give, shared by
        the phases naming it (StyleGAN2's Greg/Dreg step their network's Adam), and a loss scaler per phase."""
        self.phases = phases
        fused = self.device.type == "cuda"  # fused Adam: one kernel per optimizer instead of one per tensor
        self.shared = build_optimizers(phases, self._parameters, self.plan, self.config.eps, fused)
        self.optimizers = {name: shared.optimizer for name, shared in self.shared.items()}
        use_scaler = self.config.precision == "fp16"
        self.scalers = {p.name: torch.amp.GradScaler(self.device.type, enabled=use_scaler) for p in phases}

    def _make_evaluator(self):
        # Set up now, so a missing feature extractor or bad --eval-data fails before step 1, not hours in.
        from transgan.evaluation import TrainingEvaluator  # inference code: loaded only when used

        return TrainingEvaluator(self.config.eval_options(), self.live_model, self.device, self.run_dir)

    def _parameters(self, phase: Phase) -> list[nn.Parameter]:
        """What the phase's optimizer updates: its networks' parameters, less the frozen ones."""
        networks = [self.task.networks[name] for name in phase.networks]
        return [p for net in networks for p in net.parameters() if id(p) not in self._fixed]

    def autocast(self):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def make_loader(self) -> DataLoader:
        """The DataLoader at the current step (its stage, epoch and batch)."""
        return self.stream.loader(self.step)

    # -- the loop -----------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> Path:
        """Train until `total_steps` (or a stop); returns the model file written at the end."""
        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._resume()
        if self.rank == 0:
            self.run.write(self.run_dir / "config.toml")
        stop = StopControl.for_run(config, self.rank, self.world_size, self.device)
        data_failure, batches = None, None
        try:
            with (
                stop,
                DeferredWorkerFailures() as workers,
                make_progress(config.progress and self.rank == 0) as progress,
            ):
                bar = progress.add_task(self.task.name, total=self.total_steps, completed=self.step, status="")
                stopping = self.step >= self.total_steps
                batches = self.stream.batches(self.step)
                while not stopping:
                    try:
                        batch = next(batches)
                    except Exception as error:  # a data worker died (killed, out of memory): keep the work done
                        if self.world_size > 1:
                            raise  # the other processes wait in a collective: torchrun restarts from a checkpoint
                        data_failure = _without_frames(error)  # frames would keep the loader and its workers
                        break
                    workers.after_loader_started()
                    self._train_step(batch)
                    self.step += 1
                    status, stopping = self._after_step(stop)
                    progress.update(bar, completed=self.step, **({"status": status} if status else {}))
                    stopping = stopping or self.step >= self.total_steps
                if self._saved_step != self.step and not (data_failure and self.step == 0):
                    self.save_checkpoint()
        finally:
            # Data workers ignore the stop signals, so end them here (their loader shuts them down when the
            # stream closes) rather than leave them to the exit, which could only wait for them.
            if batches is not None:
                batches.close()
                del batches
                gc.collect()  # the loader's iterator shuts its workers down when collected
            self.monitor.logger.close()
        hint = f"--resume {self.run_dir}" + (f" --nproc {self.world_size}" if self.world_size > 1 else "")
        interruption = stop.interruption(self.step, hint)
        if interruption is not None:
            raise interruption
        if isinstance(data_failure, TransganError) and self.step == 0:
            raise data_failure  # a data mistake met at once (an unreadable image...): its own line says which
        if data_failure is not None:
            text = str(data_failure).strip()
            first_line = text.splitlines()[0] if text else type(data_failure).__name__
            saved = f"checkpoint saved; continue with {hint}" if self.step else "nothing trained yet"
            failure = TransganError(f"loading the data failed after step {self.step} ({first_line}); {saved}")
            failure.exit_code = 1  # not a usage mistake (2): the run may simply be continued
            raise failure from None
        return self.files.model_path

    def _train_step(self, batch: dict[str, Any]) -> None:
        factor = self.schedule.factor(self.step)
        stage, alpha = self.stream.stage_at(self.step)
        if self.stream.staged:  # growing networks: the task sets its depth, alpha and data resolution
            self.task.set_stage(stage, alpha)
            self.ema.follow_stage(self.task.networks)
        # Lazy regularisers (R1 every k steps) follow the trainer's step, resumes included; a task drawing its
        # own latents draws them for the global batch and keeps its rank's share.
        self.task.step, self.task.rank, self.task.world_size = self.step, self.rank, self.world_size
        with self.autocast():
            self.task.forward(batch)
        stepped: list[str] = []
        for phase in self.phases:
            if self.step % phase.interval:
                continue
            optimizer, scaler = self.optimizers[phase.optimizer_name], self.scalers[phase.name]
            self.shared[phase.optimizer_name].set_lr(self.plan, factor)
            parameters = self._parameters(phase)
            with self._frozen(phase.frozen):
                optimizer.zero_grad(set_to_none=True)
                with self.autocast():
                    loss, metrics = phase.loss()
                weight = phase.interval if phase.lazy else 1  # a lazy regulariser's loss counts for k steps
                scaler.scale(loss * weight if weight != 1 else loss).backward()
                if self.world_size > 1:  # still scaled: an inf on any process reaches all, so all skip the step
                    distributed.average_gradients(parameters, self.world_size)
                scaler.unscale_(optimizer)
                if phase.zero_nonfinite_grads:
                    for p in parameters:
                        if p.grad is not None:
                            torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
                max_norm = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm)
                scaler.step(optimizer)
                scaler.update()
            stepped += [name for name in phase.networks if name not in stepped]
            self.monitor.add({f"loss/{phase.name}": loss, f"grad_norm/{phase.name}": grad_norm, **metrics}, loss)
        # Once per step, after every phase (as StyleGAN2-ADA): a network stepped by two phases (main and
        # regularisation) still moves its EMA copy once.
        global_batch = self.stream.batch_sizes[stage] * self.world_size  # for the EMA's ramp-up
        self.ema.update(self.task.networks, stepped, global_batch, self.stream.images_seen(self.step))
        self.monitor.count_images(self.stream.batch_sizes[stage])

    @contextmanager
    def _frozen(self, names: list[str]):
        """Networks evaluated in a phase but not trained by it get no gradients (D in the G phase)."""
        for name in names:
            self.task.networks[name].requires_grad_(False)
        try:
            yield
        finally:
            for name in names:
                for parameter in self.task.networks[name].parameters():
                    parameter.requires_grad_(id(parameter) not in self._fixed)  # Freeze-D's blocks stay off

    def _after_step(self, stop: StopControl) -> tuple[str | None, bool]:
        """Logs, samples, evaluation and checkpoints due after this step; returns (progress status, stop?)."""
        config, status = self.config, None
        due = lambda every: every > 0 and (self.step % every == 0 or self.step == self.total_steps)  # noqa: E731
        if due(config.log_every):
            self._check_finite()
            rates = {f"lr/{name}": opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}
            logged = self.monitor.log(self.step, rates)
            self._unjudged.update(logged)
            status = summary(logged)
        if due(config.sample_every):
            self.save_samples()
        evaluated = due(config.eval_every)  # from the config alone, so every rank agrees; rank 0 evaluates
        if evaluated and self.evaluator is not None:
            values = self.evaluator()
            self.monitor.record(self.step, values)
            self._unjudged.update(values)
            print(f"eval (step {self.step}): " + " ".join(f"{k.split('/')[-1]}={v:.4g}" for k, v in values.items()))
        decision = stop.after_step(self.step)
        best_by_eval = evaluated and (config.best_metric or "").startswith("eval/")
        if due(config.checkpoint_every) or decision.checkpoint or best_by_eval:
            self.save_checkpoint()
        if self._saved_step == self.step:
            stop.checkpointed()
        return status, decision.stop

    def _check_finite(self, weights: bool = False) -> None:
        # Losses are checked at every log; weights too before a checkpoint, so no checkpoint holds NaN.
        nets = self.task.networks if weights else None
        self.monitor.raise_if_diverged(self.step, self.files.latest, nets)

    # -- outputs ------------------------------------------------------------------------------------
    def inference_networks(self) -> dict[str, nn.Module]:
        """The generators to sample and export with: EMA copies when EMA is on."""
        return self.ema.or_live(self.task.networks, self.task.inference_networks())

    def live_model(self) -> ModelFile:
        """The model file the current weights would make, in memory (for evaluation and samples)."""
        return ModelFile.from_networks(self.inference_networks(), task=self.task.name, **self.task.model_file_kwargs())

    def save_samples(self) -> None:
        """A grid of samples made the way the model file runs at test time (e.g. pix2pix: the reference's way)."""
        if self.rank != 0:
            return
        model = self.live_model()
        with ExitStack() as modes:
            for net in model.networks.values():
                modes.enter_context(test_time(net, model.test_time, seed=0))
            images = self.task.sample_grid(self.fixed_batch, model.networks)
        self.monitor.logger.save_grid(self.step, images, nrow=len(self.fixed_batch[next(iter(self.fixed_batch))]))

    def save_checkpoint(self) -> None:
        """A step checkpoint and the model file, written by rank 0; every process returns only when they are
        complete, and all stop together when the write failed."""
        self._check_finite(weights=True)  # on every process, so that they all stop together
        if self.world_size > 1:
            # Batch-norm statistics differ by process (each saw its own images): all take rank 0's, the ones
            # the checkpoint holds, so a resumed run and an uninterrupted one continue from the same state.
            distributed.broadcast_state(self.task.networks.values(), buffers_only=True)
        failure = None
        if self.rank == 0:
            try:
                best = self.files.update_best(self._unjudged)
                self.files.write_checkpoint(self.step, self._state(), self._write_model, best)
            except WriteFailed as error:
                failure = error
        self._unjudged = {}
        if self.world_size > 1 and distributed.any_process([failure is not None], self.device)[0] and not failure:
            raise WriteFailed(f"process 0 could not write the checkpoint of step {self.step} (its message says why)")
        if failure is not None:
            raise failure
        self._saved_step = self.step

    def _state(self) -> dict[str, Any]:
        stage, alpha = self.stream.stage_at(self.step)  # kept for the record: the step alone determines both
        counters = {"step": self.step, "stage": stage, "alpha": alpha}
        counters.update({"best_value": self.files.best_value, "world_size": self.world_size})
        return {
            "networks": dict(self.task.networks.items()),
            "ema": self.ema.copies,
            "optimizers": self.optimizers,
            "scalers": self.scalers,
            "extra_state": self.task.extra_state(),
            "counters": counters,
            "config": self.run.to_dict(),
        }

    def _write_model(self, path: Path) -> None:
        save_model(self.inference_networks(), path, task=self.task.name, **self.task.model_file_kwargs())

    def _resume(self) -> None:
        checkpoint = self.files.read_latest(f"--resume {self.run_dir}")
        restore_training_checkpoint(
            checkpoint,
            networks=dict(self.task.networks.items()),
            ema=self.ema.copies,
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
        self.step = counters["step"]  # the data position, stage and alpha follow from it
        self._saved_step = self.step
        self.files.best_value = counters.get("best_value")
        # Every process loaded rank 0's random state; the others take their own stream again.
        distributed.seed_rank(self.config.seed, self.rank, self.step)
        if self.rank == 0:
            truncate_metrics(self.run_dir / "metrics.jsonl", self.step)


def _without_frames(error: BaseException) -> BaseException:
    """`error` with no traceback along its chain: the frames of a failed batch fetch hold the DataLoader iterator,
    which must be released for its workers (that ignore the stop signals) to be shut down."""
    link: BaseException | None = error
    while link is not None:
        link.__traceback__ = None
        link = link.__cause__ or link.__context__
    return error
