"""When a run stops or checkpoints early: Ctrl-C, preemption signals (SIGTERM, SLURM's SIGUSR1), --max-minutes
and --checkpoint-minutes, agreed between processes so that all of them act after the same step."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import torch

from transgan import distributed
from transgan.config import TrainConfig, signal_names
from transgan.errors import (  # noqa: F401 (exit codes and stops re-exported)
    INTERRUPTED_EXIT,
    PREEMPTED_EXIT,
    TrainingInterrupted,
    TrainingPreempted,
    TransganError,
)

AGREE_EVERY = 10  # steps between the processes' agreements (a collective that waits for the GPU: not every step)


@dataclass
class Decision:
    """What the processes agreed to do after a step."""

    stop: bool = False
    checkpoint: bool = False


class StopControl:
    """Catches the stop signals while training (restoring the caller's handlers after) and answers, after each
    step, whether to stop and whether a time-based checkpoint is due."""

    def __init__(
        self,
        *,
        max_minutes: float,
        checkpoint_minutes: float,
        stop_signals: str,
        rank: int,
        world_size: int,
        device: torch.device,
    ):
        self.max_seconds, self.checkpoint_seconds = max_minutes * 60, checkpoint_minutes * 60
        self.signals = [getattr(signal, f"SIG{name}") for name in signal_names(stop_signals)]
        self.rank, self.world_size, self.device = rank, world_size, device
        self.received: int | None = None  # the first stop signal received
        self.reason = ""  # what stopped the run, for the last line (a signal's name, or the launcher's exit)
        self._first_at = 0.0
        # Under torchrun the parent is its agent. An agent killed by a signal it does not handle (SIGUSR1 unless
        # TORCHELASTIC_SIGNALS_TO_HANDLE names it) leaves its workers running unsupervised: they stop as if
        # preempted instead, checkpoint included.
        self._launcher = os.getppid() if os.environ.get("TORCHELASTIC_RUN_ID") else None
        self._previous: dict[int, Any] = {}
        self._agreed_step, self._agreed = -1, Decision()

    @classmethod
    def for_run(cls, config: TrainConfig, rank: int, world_size: int, device: torch.device) -> StopControl:
        """The stop control a run's options ask for."""
        return cls(
            max_minutes=config.max_minutes,
            checkpoint_minutes=config.checkpoint_minutes,
            stop_signals=config.stop_signals,
            rank=rank,
            world_size=world_size,
            device=device,
        )

    def __enter__(self) -> StopControl:
        self.started = self.last_checkpoint = time.monotonic()
        for number in [signal.SIGINT, *self.signals]:
            self._previous[number] = signal.signal(number, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _on_signal(self, number: int, frame: Any) -> None:
        # torchrun passes the terminal's Ctrl-C (and its own SIGTERM) on to its workers, which may have it
        # already: a repeat within 2 s is that copy, not a second request.
        if self.world_size > 1 and time.monotonic() - self._first_at < 2.0:
            return
        if self.received is not None and number == signal.SIGINT:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        if self.received is None:
            self._stop(number, signal.Signals(number).name)

    def _stop(self, number: int, reason: str) -> None:
        self._first_at = time.monotonic()
        self.received, self.reason = number, reason
        if self.rank == 0:
            again = " (Ctrl-C again to stop at once)" if number == signal.SIGINT else ""
            print(f"\n{reason}: finishing this step and saving a checkpoint{again}", flush=True)

    def checkpointed(self) -> None:
        """A checkpoint was written: the time-based interval starts again."""
        self.last_checkpoint = time.monotonic()

    def after_step(self, step: int) -> Decision:
        """Whether to stop (signal, --max-minutes) and whether a --checkpoint-minutes checkpoint is due.
        Several processes must act after the same step, so they decide together every AGREE_EVERY steps."""
        now = time.monotonic()
        if self._launcher is not None and self.received is None and os.getppid() != self._launcher:
            self._stop(signal.SIGTERM, f"the torchrun launcher (pid {self._launcher}) is gone")
        local = [
            self.received is not None,
            self.max_seconds > 0 and now - self.started > self.max_seconds,
            self.checkpoint_seconds > 0 and now - self.last_checkpoint > self.checkpoint_seconds,
        ]
        if self.world_size == 1:
            return Decision(stop=local[0] or local[1], checkpoint=local[2])
        if step % AGREE_EVERY or self._agreed_step == step:
            return Decision()
        signalled, time_up, due = distributed.any_process(local, self.device)
        if signalled and self.received is None:  # every process reports the stop, whichever got the signal
            self.received, self.reason = signal.SIGTERM, "another process was asked to stop"
        self._agreed_step = step
        return Decision(stop=signalled or time_up, checkpoint=due)

    def interruption(self, step: int, where: str) -> TrainingInterrupted | None:
        """The error to end with after a signal-driven stop (None when no signal came)."""
        if self.received is None:
            return None
        if self.received == signal.SIGINT:
            return TrainingInterrupted(f"interrupted at step {step}; checkpoint saved; continue with {where}")
        return TrainingPreempted(
            f"{self.reason} at step {step}: checkpoint saved; exit {PREEMPTED_EXIT}; continue with {where} "
            "(or the same command with --resume auto)"
        )


def ignore_stop_signals_in_worker(signal_numbers: tuple[int, ...], worker_id: int) -> None:
    """DataLoader worker_init_fn: SLURM, `timeout` and `scancel` signal the whole process group, data workers
    included. A worker that died of the stop signal would end the run before its checkpoint; the main process
    alone decides, and it ends the workers itself after the checkpoint."""
    for number in signal_numbers:
        signal.signal(number, signal.SIG_IGN)


def stop_signal_numbers(stop_signals: str) -> tuple[int, ...]:
    """Ctrl-C and the run's --stop-signals, as numbers."""
    return (signal.SIGINT, *(getattr(signal, f"SIG{name}") for name in signal_names(stop_signals)))


class DeferredWorkerFailures:
    """While training, a data worker's death is reported by the next batch fetch, not by torch's SIGCHLD handler.

    torch's handler raises in the main thread wherever it is, possibly halfway through an optimizer step, which
    leaves nothing consistent to checkpoint. The fetch reports the same failure (within its 5 s status check)
    at a step boundary, where the trainer still holds a whole step to save."""

    def __enter__(self) -> DeferredWorkerFailures:
        self._previous = signal.getsignal(signal.SIGCHLD)
        return self

    def after_loader_started(self) -> None:
        """Call once the first batch came: torch installs its handler when the first worker iterator starts."""
        handler = signal.getsignal(signal.SIGCHLD)
        if callable(handler) and getattr(handler, "__module__", "").startswith("torch.utils.data"):
            self._torch_handler = handler
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)

    def __exit__(self, *exc: Any) -> None:
        if getattr(self, "_torch_handler", None) is not None:
            signal.signal(signal.SIGCHLD, self._torch_handler)  # other loaders in this process keep their check
