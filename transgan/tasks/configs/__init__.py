"""The built-in tasks' option dataclasses, reachable without torch: `transgan train TASK --help` builds its
option table from these alone, and loads the task modules (and plugins) only when it must.

A built-in task plugs in with one line in BUILTIN_TASK_CONFIGS below: its config class lives in a torch-free
module here (transgan/tasks/configs/<task>.py), its task module imports the class from there, and the summary
is the first line of the task class's docstring (tests/test_cli_help.py checks all three against TASKS).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskConfigEntry:
    """Where a built-in task's config class lives, its one-line summary and the task module it describes."""

    config: str  # "module:Class", a module that imports no torch
    summary: str  # the first line of the task class's docstring (the command's help)
    task_module: str  # the module in TASKS' built-in list that registers the task

    def config_class(self) -> type:
        """The config dataclass (its module imported; no torch)."""
        module, name = self.config.split(":")
        return getattr(importlib.import_module(module), name)


BUILTIN_TASK_CONFIGS: dict[str, TaskConfigEntry] = {
    "pix2pix": TaskConfigEntry(
        "transgan.tasks.configs.pix2pix:Pix2PixConfig",
        "Paired image-to-image translation (pix2pix): U-Net + PatchGAN, GAN + L1 loss.",
        "transgan.tasks.pix2pix",
    ),
    "cyclegan": TaskConfigEntry(
        "transgan.tasks.configs.cyclegan:CycleGANConfig",
        "Unpaired image-to-image translation (CycleGAN): two generators, two discriminators, cycle loss.",
        "transgan.tasks.cyclegan",
    ),
    "cgan": TaskConfigEntry(
        "transgan.tasks.configs.cgan:CGANConfig",
        "Class-conditional or unconditional image generation (cgan: CBN + projection D, cDCGAN, WGAN-GP).",
        "transgan.tasks.cgan",
    ),
    "stylegan": TaskConfigEntry(
        "transgan.tasks.configs.stylegan:StyleGANConfig",
        "StyleGAN2 (conditional or not) as StyleGAN2-ADA trains it: logistic loss, lazy R1 and path length, mixing.",
        "transgan.tasks.stylegan",
    ),
    "cut": TaskConfigEntry(
        "transgan.tasks.configs.cut:CUTConfig",
        "Contrastive Unpaired Translation: G (A -> B), D (PatchGAN on B) and F (PatchNCE's MLP heads).",
        "transgan.tasks.cut",
    ),
    "fastcut": TaskConfigEntry(
        "transgan.tasks.configs.cut:FastCUTConfig",
        "FastCUT: CUT without the identity PatchNCE loss, with lambda_nce 10 and flip equivariance; shorter.",
        "transgan.tasks.cut",
    ),
    "progan": TaskConfigEntry(
        "transgan.tasks.configs.progan:ProGANConfig",
        "Progressive growing (Karras et al. 2018): stages from the base grid up to --image-size, each new one",
        "transgan.tasks.progan",
    ),
}


def covers_builtins(builtin_modules: list[str]) -> bool:
    """Whether every built-in task module has an entry here (else listing the tasks must import them)."""
    return set(builtin_modules) <= {entry.task_module for entry in BUILTIN_TASK_CONFIGS.values()}
