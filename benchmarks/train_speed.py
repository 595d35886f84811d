"""Training speed and memory: transgan's trainer step vs a plain reference-style step, interleaved; prints JSON.

    python benchmarks/train_speed.py --device cpu --size 256 --batch-size 1 --steps 4 --task cyclegan
    python benchmarks/train_speed.py --device cuda --size 256 --batch-size 1 8 --variants bf16+cl fp16+cl
    python benchmarks/train_speed.py --quick        # tiny CPU smoke run (tests, CI)

Each row times full training iterations, data loading included, after warm-up: the real GANTrainer (built
through the library, its own DataLoader and `_train_step`) and, on the same machine in the same process, a
baseline written the straightforward way the reference trains (fp32, default memory format, two Adam
optimizers, no compile, every forward pass on its own, reference-style DataLoader). Both start from the same
weights. Variants run in alternating blocks (A, B, B, A, ...) so machine load hits them alike.

Memory: on CUDA `peak_mb` is the variant's parameters, gradients and Adam state plus the largest rise of
torch.cuda.max_memory_allocated over one of its blocks (what the other variants hold is not counted). On CPU
the process max RSS covers all variants together, so it is reported once (`process_max_rss_mb`), not per row.
Needs ../shared/data (horse2zebra testA and official_fake_B as the two cyclegan domains, facades for pix2pix).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from transgan.config import TrainConfig, to_dict
from transgan.errors import TransganError
from transgan.registry import TASKS
from transgan.run_config import RunConfig
from transgan.trainer import GANTrainer

DATA = Path(os.environ.get("TRANSGAN_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
NO_EVENTS = 10**9  # log/sample/checkpoint intervals the benchmark never reaches


# -- the plain baseline: the reference's training step, written the straightforward way ---------------------
class ReferenceGANLoss(nn.Module):
    """The reference GANLoss: MSE (lsgan) or BCE-with-logits (vanilla) against an expanded target tensor."""

    def __init__(self, mode: str):
        super().__init__()
        losses = {"lsgan": nn.MSELoss, "vanilla": nn.BCEWithLogitsLoss}
        if mode not in losses:
            raise TransganError(f"--gan-loss {mode}: the plain baseline knows lsgan and vanilla only")
        self.loss = losses[mode]()

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.tensor(1.0 if target_is_real else 0.0, device=prediction.device)
        return self.loss(prediction, target.expand_as(prediction))


class ReferencePool:
    """The reference ImagePool: past fakes, each returned half of the time once the pool is full."""

    def __init__(self, size: int):
        self.size, self.images = size, []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        chosen = []
        for image in images:
            image = torch.unsqueeze(image.data, 0)
            if len(self.images) < self.size:
                self.images.append(image)
                chosen.append(image)
            elif random.uniform(0, 1) > 0.5:
                index = random.randint(0, self.size - 1)
                chosen.append(self.images[index].clone())
                self.images[index] = image
            else:
                chosen.append(image)
        return torch.cat(chosen, 0)


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad = flag


class PlainStep:
    """The reference's optimize_parameters for cyclegan or pix2pix on fp32 copies of the task's networks."""

    def __init__(self, task_name: str, networks: nn.ModuleDict, config: Any, device: torch.device):
        self.task_name, self.c, self.device = task_name, config, device
        self.nets = copy.deepcopy(networks).to(device, memory_format=torch.contiguous_format).train()
        self.gan = ReferenceGANLoss(config.gan_loss)
        adam = lambda *nets: torch.optim.Adam(  # noqa: E731
            itertools.chain(*(n.parameters() for n in nets)), lr=2e-4, betas=(0.5, 0.999)
        )
        if task_name == "cyclegan":
            n = self.nets
            self.opt_G, self.opt_D = adam(n["G_A"], n["G_B"]), adam(n["D_A"], n["D_B"])
            self.pool_A, self.pool_B = ReferencePool(config.pool_size), ReferencePool(config.pool_size)
        else:
            self.opt_G, self.opt_D = adam(self.nets["G"]), adam(self.nets["D"])

    def __call__(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        real_A, real_B = batch["A"].to(self.device), batch["B"].to(self.device)
        return self._cyclegan(real_A, real_B) if self.task_name == "cyclegan" else self._pix2pix(real_A, real_B)

    def _cyclegan(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        c, n, l1 = self.c, self.nets, nn.L1Loss()
        G_A, G_B, D_A, D_B = n["G_A"], n["G_B"], n["D_A"], n["D_B"]
        fake_B = G_A(real_A)
        rec_A = G_B(fake_B)
        fake_A = G_B(real_B)
        rec_B = G_A(fake_A)
        set_requires_grad([D_A, D_B], False)
        self.opt_G.zero_grad()
        loss_idt = 0.0
        if c.lambda_identity > 0:
            loss_idt = l1(G_A(real_B), real_B) * c.lambda_b * c.lambda_identity
            loss_idt = loss_idt + l1(G_B(real_A), real_A) * c.lambda_a * c.lambda_identity
        loss_G = self.gan(D_A(fake_B), True) + self.gan(D_B(fake_A), True)
        loss_G = loss_G + l1(rec_A, real_A) * c.lambda_a + l1(rec_B, real_B) * c.lambda_b + loss_idt
        loss_G.backward()
        self.opt_G.step()
        set_requires_grad([D_A, D_B], True)
        self.opt_D.zero_grad()
        loss_D = 0.0
        for D, real, fake in ((D_A, real_B, self.pool_B.query(fake_B)), (D_B, real_A, self.pool_A.query(fake_A))):
            loss = (self.gan(D(real), True) + self.gan(D(fake.detach()), False)) * 0.5
            loss.backward()  # one backward per discriminator, as the reference's backward_D_A / backward_D_B
            loss_D = loss_D + loss.detach()
        self.opt_D.step()
        return {"G": loss_G.detach(), "D": loss_D}

    def _pix2pix(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        G, D = self.nets["G"], self.nets["D"]
        fake_B = G(real_A)
        set_requires_grad([D], True)
        self.opt_D.zero_grad()
        fake_AB = torch.cat((real_A, fake_B), 1)
        loss_D = (self.gan(D(fake_AB.detach()), False) + self.gan(D(torch.cat((real_A, real_B), 1)), True)) * 0.5
        loss_D.backward()
        self.opt_D.step()
        set_requires_grad([D], False)
        self.opt_G.zero_grad()
        loss_G = self.gan(D(fake_AB), True) + nn.L1Loss()(fake_B, real_B) * self.c.lambda_l1
        loss_G.backward()
        self.opt_G.step()
        return {"G": loss_G.detach(), "D": loss_D.detach()}


# -- building both from one seed --------------------------------------------------------------------------
def task_config(task_name: str, size: int, width: int | None, **overrides: Any) -> Any:
    """The task's reference defaults on the real data at `size` (load size scaled like 286 for 256)."""
    common = {"load_size": round(size * 286 / 256), "crop_size": size, **overrides}
    if width is not None:
        common.update(ngf=width, ndf=width)
    if task_name == "cyclegan":
        domains = {
            "domain_a": str(DATA / "horse2zebra" / "testA"),
            "domain_b": str(DATA / "horse2zebra" / "official_fake_B"),
        }
        return TASKS.get("cyclegan").config_class(**domains, **common)
    if task_name == "pix2pix":
        # unet_256 needs sizes divisible by 256; the reference uses unet_128 at 128x128.
        common.setdefault("arch", "unet_256" if size % 256 == 0 else "unet_128")
        return TASKS.get("pix2pix").config_class(data=str(DATA / "facades" / "test"), **common)
    raise TransganError(f"--task {task_name}: use cyclegan or pix2pix")


def parse_variant(text: str) -> dict[str, Any]:
    """'bf16+cl+compile' -> precision bf16, channels_last, compile."""
    parts = text.split("+")
    if parts[0] not in ("fp32", "bf16", "fp16") or not set(parts[1:]) <= {"cl", "compile"}:
        raise TransganError(f"--variants {text}: use PRECISION[+cl][+compile], e.g. bf16+cl (precision fp32/bf16/fp16)")
    return {"precision": parts[0], "channels_last": "cl" in parts, "compile": "compile" in parts}


def build_pair(
    task_name: str, config: Any, train: TrainConfig, variants: list[str]
) -> tuple[PlainStep, dict[str, GANTrainer]]:
    """The plain baseline and one GANTrainer per variant, all with the weights `train.seed` gives the task."""
    task_class = TASKS.get(task_name)
    torch.manual_seed(train.seed)
    random.seed(train.seed)
    dataset = task_class.build_dataset(config)
    first = task_class(config, dataset)
    plain = PlainStep(task_name, first.networks, config, torch.device(train.device))
    # Copies before any trainer moves or compiles the networks: every variant starts from the same weights.
    tasks = [first] + [copy.deepcopy(first) for _ in variants[1:]]
    trainers = {}
    for task, variant in zip(tasks, variants):
        variant_train = TrainConfig(**{**to_dict(train), **parse_variant(variant)})
        trainers[variant] = GANTrainer(task, RunConfig(task_name, config, variant_train))
    return plain, trainers


# -- timing -----------------------------------------------------------------------------------------------
def state_bytes(modules: list[nn.Module], optimizers: list[torch.optim.Optimizer]) -> int:
    tensors = [t for m in modules for t in m.parameters()] + [p.grad for m in modules for p in m.parameters()]
    tensors += [v for o in optimizers for s in o.state.values() for v in s.values() if torch.is_tensor(v)]
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if t is not None}
    return sum(seen.values())


class Runner:
    """One variant: a step function, its batches (recreating the iterator at each epoch end) and its state."""

    def __init__(self, name: str, step, loader: DataLoader, modules: list[nn.Module], optimizers: list):
        self.name, self.step, self.loader, self.modules, self.optimizers = name, step, loader, modules, optimizers
        self.iterator, self.times, self.peak = iter(loader), [], 0

    def next_batch(self) -> dict[str, Any]:
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)  # the reference pays its worker start-up here, every epoch
            return next(self.iterator)

    def block(self, steps: int, device: torch.device, record: bool) -> None:
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() - state_bytes(self.modules, self.optimizers)
        start = time.perf_counter()
        for _ in range(steps):
            self.step(self.next_batch())
        if cuda:
            torch.cuda.synchronize()  # once per block: the steps themselves run without host syncs
        if record:
            self.times.append((time.perf_counter() - start) / steps)
            if cuda:
                self.peak = max(self.peak, torch.cuda.max_memory_allocated() - before)


def trainer_runner(name: str, trainer: GANTrainer) -> Runner:
    def step(batch: dict[str, Any]) -> None:
        trainer._train_step(batch)
        trainer.step += 1

    optimizers = list(trainer.optimizers.values())
    return Runner(name, step, trainer.make_loader(), list(trainer.task.networks.values()), optimizers)


def plain_runner(plain: PlainStep, dataset, batch_size: int, workers: int) -> Runner:
    # The reference's loader: shuffled, workers restarted every epoch, no pinned memory.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    return Runner("baseline", plain, loader, list(plain.nets.values()), [plain.opt_G, plain.opt_D])


def measure(task_name: str, size: int, batch_size: int, args: argparse.Namespace, out_dir: Path) -> list[dict]:
    device = torch.device(args.device)
    config = task_config(task_name, size, args.width)
    train = TrainConfig(
        out=str(out_dir / f"{task_name}_{size}_{batch_size}"), batch_size=batch_size,
        device=args.device, num_workers=args.num_workers, log_every=NO_EVENTS, sample_every=NO_EVENTS,
        checkpoint_every=NO_EVENTS, progress=False, tensorboard=False, seed=args.seed,
    )  # fmt: skip
    plain, trainers = build_pair(task_name, config, train, args.variants)
    dataset = next(iter(trainers.values())).task.dataset
    runners = [plain_runner(plain, dataset, batch_size, args.num_workers)]
    runners += [trainer_runner(name, trainer) for name, trainer in trainers.items()]
    block = max(1, min(args.block, args.steps))
    rounds = args.warmup + -(-args.steps // block)
    for r in range(rounds):
        for runner in runners if r % 2 == 0 else runners[::-1]:  # A B B A: neither always goes first
            runner.block(1 if r < args.warmup else block, device, record=r >= args.warmup)
    base = statistics.median(runners[0].times)
    rows = []
    for runner in runners:
        seconds = statistics.median(runner.times)
        peak_mb = (
            (runner.peak + state_bytes(runner.modules, runner.optimizers)) / 2**20 if device.type == "cuda" else None
        )
        rows.append({
            "task": task_name, "arch": config.arch, "netd": config.netd, "width": config.ngf, "size": size,
            "batch_size": batch_size, "variant": runner.name, "step_ms": round(seconds * 1000, 2),
            "images_per_s": round(batch_size / seconds, 3), "speedup": round(base / seconds, 3),
            "peak_mb": None if peak_mb is None else round(peak_mb, 1), "timed_steps": len(runner.times) * block,
        })  # fmt: skip
    if device.type == "cuda":
        for row in rows:
            row["peak_vs_baseline"] = round(row["peak_mb"] / rows[0]["peak_mb"], 3)
    return rows


def machine(device: str) -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    info = {"cpu": cpu or platform.processor(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", default=["cyclegan", "pix2pix"], choices=["cyclegan", "pix2pix"])
    parser.add_argument("--size", nargs="+", type=int, default=[256, 128])
    parser.add_argument("--batch-size", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (compile, cudnn)")
    parser.add_argument("--block", type=int, default=5, help="steps per variant between switches")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--variants", nargs="+", help="trainer variants, e.g. fp32 bf16+cl fp16+cl+compile")
    parser.add_argument("--width", type=int, help="ngf = ndf (default: the reference's 64)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny CPU smoke run: width 4, 128x128, 2 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.device, args.size, args.batch_size, args.width = "cpu", [128], [1, 2], 4
        args.steps, args.warmup, args.block, args.num_workers = 2, 1, 1, 0
        # One thread: on a shared CPU a second one waits for the scheduler at every small op.
        args.threads = args.threads or 1
    if not args.variants:
        flags = [args.precision] + ["cl"] * args.channels_last + ["compile"] * args.compile
        args.variants = ["+".join(flags)]
    for variant in args.variants:
        parse_variant(variant)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise TransganError(f"--device {args.device}: no CUDA GPU here; use --device cpu")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for folder in ("horse2zebra/testA", "facades/test"):
        if not (DATA / folder).is_dir():
            raise TransganError(
                f"{DATA / folder} not found: this benchmark needs ../shared/data (or TRANSGAN_REAL_DATA)"
            )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task_name, size, batch_size in itertools.product(args.task, args.size, args.batch_size):
            case = measure(task_name, size, batch_size, args, Path(tmp))
            print("\n".join(json.dumps(row) for row in case), file=sys.stderr, flush=True)  # progress
            rows += case
    report = {
        "machine": machine(args.device),
        "device": args.device,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json",)},
        "process_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "process_max_rss_rise_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024, 1),
        "results": rows,
    }
    text = json.dumps(report, indent=1, default=str)
    print(text)
    target = args.json
    if target:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return report


if __name__ == "__main__":
    try:
        main()
    except TransganError as error:
        sys.exit(f"error: {error}")
