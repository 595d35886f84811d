"""When a run stops or checkpoints early: Ctrl-C, preemption signals (SIGTERM, SLURM's SIGUSR1), --max-minutes
and --checkpoint-minutes, agreed between processes so that all of them act after the same step."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Any

import torch

from transgan import distributed
from transgan.config import TrainConfig, signal_names
from transgan.errors import TransganError

AGREE_EVERY = 10  # steps between the processes' agreements (a collective that waits for the GPU: not every step)
PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later"; what a job script or torchrun restart sees after a preemption
INTERRUPTED_EXIT = 130  # Ctrl-C, as shells report it


class TrainingInterrupted(TransganError):
    """Ctrl-C: the current step finished and a checkpoint was written."""

    exit_code = INTERRUPTED_EXIT


class TrainingPreempted(TrainingInterrupted):
    """A preemption signal (SIGTERM, SIGUSR1...): the current step finished and a checkpoint was written."""

    exit_code = PREEMPTED_EXIT


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
        self._first_at = 0.0
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
            self._first_at = time.monotonic()
            self.received = number
            if self.rank == 0:
                name = signal.Signals(number).name
                print(f"\n{name}: finishing this step and saving a checkpoint" + (" (Ctrl-C again to stop at once)"
                      if number == signal.SIGINT else ""), flush=True)  # fmt: skip

    def checkpointed(self) -> None:
        """A checkpoint was written: the time-based interval starts again."""
        self.last_checkpoint = time.monotonic()

    def after_step(self, step: int) -> Decision:
        """Whether to stop (signal, --max-minutes) and whether a --checkpoint-minutes checkpoint is due.
        Several processes must act after the same step, so they decide together every AGREE_EVERY steps."""
        now = time.monotonic()
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
            self.received = signal.SIGTERM
        self._agreed_step = step
        return Decision(stop=signalled or time_up, checkpoint=due)

    def interruption(self, step: int, where: str) -> TrainingInterrupted | None:
        """The error to end with after a signal-driven stop (None when no signal came)."""
        if self.received is None:
            return None
        if self.received == signal.SIGINT:
            return TrainingInterrupted(f"interrupted at step {step}; checkpoint saved; continue with {where}")
        name = signal.Signals(self.received).name
        return TrainingPreempted(
            f"{name} at step {step}: checkpoint saved; exit {PREEMPTED_EXIT}; continue with {where} "
            "(or the same command with --resume auto)"
        )
