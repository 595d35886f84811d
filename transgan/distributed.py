"""Data-parallel training: process-group set-up from torchrun's environment, gradient averaging, reductions."""

from __future__ import annotations

import datetime
import os
import random
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from transgan.errors import TrainingInterrupted, TrainingPreempted, TransganError

# Gradients are averaged in buckets of about this many bytes: one collective per bucket instead of one per
# tensor, without a second full copy of every gradient.
BUCKET_BYTES = 32 * 2**20
TIMEOUT_ENV = "TRANSGAN_DIST_TIMEOUT"  # seconds a process waits for the others (rendezvous, collectives)


@dataclass(frozen=True)
class ProcessInfo:
    """Where this process stands: its rank among `world_size` processes, and the device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


_created_group = False  # True when setup() made the process group (then shutdown() destroys it)


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The device of option `--device NAME`; with several processes per node (`local_rank` given) "auto"
    and "cuda" become cuda:LOCAL_RANK, one GPU per process."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TransganError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
    return torch.device(f"cuda:{local_rank}" if name == "cuda" and local_rank is not None else name)


def env_world_size() -> int:
    """Processes in the job as the launcher (torchrun) announced them; 1 outside a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_gpu_count(processes_per_node: int, gpus: int) -> None:
    """NCCL wants one GPU per process: refuse more processes on a node than it has GPUs."""
    if processes_per_node > gpus:
        raise TransganError(
            f"{processes_per_node} processes per node with the NCCL backend need {processes_per_node} GPUs, but this "
            f"node has {gpus}; use --nproc {gpus} (torchrun --nproc-per-node {gpus}) or --device cpu (gloo backend)"
        )


def timeout() -> datetime.timedelta:
    value = os.environ.get(TIMEOUT_ENV, "1800")
    try:
        return datetime.timedelta(seconds=float(value))
    except ValueError:
        raise TransganError(f"${TIMEOUT_ENV}={value!r}: expected a number of seconds") from None


def _reachable(host: str, port: int, seconds: float) -> bool:
    """Whether something accepts TCP connections at host:port within `seconds` (the rendezvous store)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


def setup(device_option: str) -> ProcessInfo:
    """Join the process group that torchrun's environment describes (nccl on CUDA, gloo on CPU); a
    single process when there is none. A group made by the caller beforehand is used as it is."""
    global _created_group
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return ProcessInfo(rank, world_size, local_rank, resolve_device(device_option, local_rank))
    world_size = env_world_size()
    if world_size <= 1:
        return ProcessInfo(0, 1, 0, resolve_device(device_option))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_option.startswith("cuda:"):
        raise TransganError(
            f"--device {device_option} with {world_size} processes: every process would use the same GPU; "
            "use --device cuda (process k of a node trains on cuda:k)"
        )
    device = resolve_device(device_option, local_rank)
    if device.type == "cuda":
        check_gpu_count(int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1)), torch.cuda.device_count())
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    host, port = os.environ.get("MASTER_ADDR", "localhost"), os.environ.get("MASTER_PORT", "29500")
    unreachable = lambda reason: TransganError(  # noqa: E731
        f"process {rank} of {world_size} could not join the rendezvous at {host}:{port} ({reason}); check that "
        "the first node is up and reachable on that address and port, that every node uses the same "
        f"--rdzv-endpoint and --nnodes, or raise ${TIMEOUT_ENV} (seconds)"
    )
    wait = timeout()
    client = rank != 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    if client and not _reachable(host, int(port), wait.total_seconds()):
        # Checked here first: torch's own store client logs a C++ stack trace for every failed attempt.
        raise unreachable(f"nothing answered for {wait.total_seconds():g} s")
    try:
        # device_id binds NCCL to this process's GPU now (barriers then know which GPU to use).
        bound = {"device_id": device} if device.type == "cuda" else {}
        store = _attempt_store(host, int(port), rank, world_size, wait)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=wait, **bound)
    except (RuntimeError, TimeoutError, ValueError) as error:  # DistNetworkError/DistStoreError are RuntimeErrors
        raise unreachable((str(error).strip().splitlines() or [type(error).__name__])[0][:200]) from error
    _created_group = True
    return ProcessInfo(rank, world_size, local_rank, device)


def _attempt_store(host: str, port: int, rank: int, world_size: int, timeout: datetime.timedelta) -> dist.Store:
    """The rendezvous store, with this restart attempt's keys kept apart. torchrun's agent store outlives its
    workers, and a process group made by a restarted worker would otherwise read the previous attempt's
    addresses and try to connect to dead processes (seen with torch 2.14 and gloo: "connectFullMesh failed ...
    Connection refused" after a --max-restarts restart, until the timeout)."""
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's agent hosts it
    store = dist.TCPStore(host, port, world_size, is_master=not agent_store and rank == 0, timeout=timeout)
    return dist.PrefixStore(f"transgan/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def shutdown(success: bool = True) -> None:
    """Leave the process group setup() made. After success every process waits for the others first, so
    none exits while rank 0 still writes files; after an error it leaves at once (the others may be
    inside a collective that will never complete; the launcher stops them)."""
    global _created_group
    if not _created_group:
        return
    if success:
        dist.barrier()
    dist.destroy_process_group()
    _created_group = False


def seed_rank(seed: int, rank: int, step: int = 0) -> None:
    """Give rank > 0 its own random stream (noise, dropout, image pools) derived from (seed, rank, step);
    rank 0 keeps the stream a single process would have."""
    if rank > 0:
        derived = (seed * 1_000_003 + rank * 7_919 + step) % 2**63
        torch.manual_seed(derived)
        random.seed(derived)


def prepare_networks(networks: nn.ModuleDict, seed: int, rank: int, world_size: int, sync_bn: bool, cuda: bool) -> None:
    """Data parallelism without torch's DDP wrapper, whose one-forward-one-backward model does not fit GAN
    phases (D runs frozen inside the G phase, the fakes are shared by phases): every process starts from
    rank 0's weights, runs the same phases on its own slice of the global batch, and each phase's
    gradients are averaged across processes right after backward (average_gradients, before the scaler,
    clipping and the optimizer step), so all processes take the step one process would take on the global batch."""
    if world_size <= 1:
        return
    if sync_bn:
        if not cuda:
            raise TransganError("--sync-bn needs CUDA GPUs (torch's SyncBatchNorm); on CPU leave it off")
        for name in list(networks):
            # Same parameter and buffer names, so checkpoints and model files do not change.
            networks[name] = nn.SyncBatchNorm.convert_sync_batchnorm(networks[name])
    broadcast_state(networks.values())
    seed_rank(seed, rank)  # different noise/dropout on each process


def _buckets(tensors: list[torch.Tensor]) -> Iterable[list[torch.Tensor]]:
    """Consecutive groups of one dtype and at most BUCKET_BYTES (one tensor may exceed it alone); the same
    groups on every process, since every process passes the same tensors in the same order."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    for group in by_dtype.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for tensor in group:
            if bucket and size + tensor.numel() * tensor.element_size() > BUCKET_BYTES:
                yield bucket
                bucket, size = [], 0
            bucket.append(tensor)
            size += tensor.numel() * tensor.element_size()
        if bucket:
            yield bucket


@torch.no_grad()
def average_gradients(parameters: Iterable[nn.Parameter], world_size: int) -> None:
    """Replace each gradient by its mean over all processes: the gradient of the loss over the global batch.

    A parameter that got no gradient on this process counts as zero here, so every process sends the same
    buckets (a missing gradient on one rank must not desynchronise the collectives)."""
    grads = []
    for p in parameters:  # the order is the same on every process: the phase's networks, in registration order
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    for bucket in _buckets(grads):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        flat /= world_size
        offset = 0
        for g in bucket:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


@torch.no_grad()
def broadcast_state(modules: Iterable[nn.Module], src: int = 0, buffers_only: bool = False) -> None:
    """Copy parameters and buffers (batch-norm statistics, spectral-norm vectors) from rank `src` to all."""
    tensors = [t for m in modules for t in ((*m.buffers(),) if buffers_only else (*m.parameters(), *m.buffers()))]
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.broadcast(flat, src)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum over processes of `tensor` (a new tensor; the input is left as it is)."""
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def any_process(flags: list[bool], device: torch.device) -> list[bool]:
    """For each flag: true on any process? (So that all processes take the same branch.)"""
    values = torch.tensor([float(flag) for flag in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def barrier() -> None:
    dist.barrier()


# What `--nproc` passes on to its processes, and how long it waits for their checkpoints before killing them.
LAUNCHER_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"
LAUNCHER_SHUTDOWN_SECONDS = 600


def launch(nproc: int, args: list[str], device_option: str) -> None:
    """Run `python -m transgan ARGS` in `nproc` processes on this machine through torchrun (standalone
    rendezvous on a free port), as `torchrun --nproc-per-node NPROC -m transgan ARGS` would."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if env_world_size() > 1:
        raise TransganError("--nproc given inside a torchrun job: use either torchrun or --nproc, not both")
    if nproc < 1:
        raise TransganError(f"--nproc {nproc}: use a number of processes >= 1")
    if resolve_device(device_option).type == "cuda":
        check_gpu_count(nproc, torch.cuda.device_count())
    # Share the cores among the processes (torchrun would give each one thread, with a warning).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # The launcher passes every stop signal on to the processes (torchrun's agent would die of SLURM's SIGUSR1
    # and leave them unsupervised) and gives them time to finish the step and write the checkpoint.
    stops = ["--signals-to-handle", LAUNCHER_SIGNALS, "--shutdown-timeout", str(LAUNCHER_SHUTDOWN_SECONDS)]
    launch_args = parse_args(["--standalone", "--nproc-per-node", str(nproc), *stops, "--module", "transgan", *args])
    try:
        run(launch_args)
    except ChildFailedError as error:
        failures = sorted(error.failures.items())
        rank, failure = failures[0]
        raise TransganError(
            f"training stopped: process {rank} of {nproc} exited with code {failure.exitcode} "
            "(its error is printed above)"
        ) from None
    except SignalException as signal_error:
        stopped = TrainingInterrupted if signal_error.sigval == signal.SIGINT else TrainingPreempted
        raise stopped(
            f"{signal_error.sigval.name}: the {nproc} processes finished their step and saved a checkpoint (their "
            f"lines above say at which step); continue with --resume RUN_DIR --nproc {nproc} (or --resume auto)"
        ) from None
