"""The exception types the CLI turns into a single clear error line (no traceback), with their exit codes."""

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later"; what a job script or torchrun restart sees after a preemption
INTERRUPTED_EXIT = 130  # Ctrl-C, as shells report it


class TransganError(Exception):
    """A mistake the user can fix: the message names the file, option or value and what to do."""


class TrainingInterrupted(TransganError):
    """Ctrl-C: the current step finished and a checkpoint was written."""

    exit_code = INTERRUPTED_EXIT


class TrainingPreempted(TrainingInterrupted):
    """A preemption signal (SIGTERM, SIGUSR1...): the current step finished and a checkpoint was written."""

    exit_code = PREEMPTED_EXIT
