"""`transgan <verb> [task] --help` imports no torch (seen in `python -X importtime`), and each built-in task's
torch-free config entry matches the task the registry builds."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from transgan.registry import TASKS
from transgan.tasks.configs import BUILTIN_TASK_CONFIGS

VERBS = ["train", "generate", "convert", "export", "translate", "bench", "serve", "eval", "pretrained", "plugins"]


def imported_modules(*args: str) -> set[str]:
    """The modules `python -X importtime -m transgan ARGS` imports (its stderr lists each one)."""
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "transgan", *args], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Usage:" in result.stdout, result.stdout
    return {match.strip() for match in re.findall(r"^import time:[^|]*\|[^|]*\|(.*)$", result.stderr, re.M)}


def test_train_task_help_imports_no_torch_in_importtime():
    modules = imported_modules("train", "cyclegan", "--help")
    # The parse works (modules loaded by importlib.import_module, as the config entries are, are not listed; the
    # imports they make are, torch included).
    assert "transgan.cli.train" in modules and "transgan.tasks.configs.shared" in modules
    assert "torch" not in modules and "torchvision" not in modules
    assert "transgan.tasks.cyclegan" not in modules  # the task module (network code) stays unloaded


# Every help screen, one after another in one process (fast); torch is checked after each, so the first one
# that imports it is named.
EVERY_HELP = """
import sys
from transgan.cli.app import build_app
from transgan.tasks.configs import BUILTIN_TASK_CONFIGS
app = build_app()
screens = [[verb, "--help"] for verb in VERBS] + [["train", task, "--help"] for task in sorted(BUILTIN_TASK_CONFIGS)]
for args in [["--help"], *screens]:
    try:
        app(args, standalone_mode=False)
    except SystemExit:
        pass
    if "torch" in sys.modules:
        print("IMPORTED TORCH:", " ".join(args))
        break
"""


def test_no_help_screen_imports_torch():
    script = f"VERBS = {VERBS!r}\n" + EVERY_HELP
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Usage:" in result.stdout
    assert "IMPORTED TORCH" not in result.stdout, result.stdout.split("IMPORTED TORCH: ")[1]


@pytest.mark.parametrize("task", TASKS.names())
def test_every_built_in_task_has_a_matching_torch_free_config_entry(task):
    entry, task_class = BUILTIN_TASK_CONFIGS.get(task), TASKS.get(task)
    if TASKS.entry(task).origin.is_plugin:
        pytest.skip("a plugin's task: its help comes from the task class")
    assert entry is not None, (
        f"built-in task '{task}' has no entry in transgan/tasks/configs/__init__.py: move its config dataclass to a "
        "torch-free module there and add a TaskConfigEntry, so `transgan train --help` needs no torch"
    )
    assert entry.config_class() is task_class.config_class
    assert entry.summary == task_class.__doc__.strip().splitlines()[0]
    assert entry.task_module == task_class.__module__


def test_config_modules_import_no_torch():
    modules = sorted({entry.config.split(":")[0] for entry in BUILTIN_TASK_CONFIGS.values()})
    probe = f"import sys, {', '.join(modules)}; print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr[-2000:]


def test_task_help_lists_the_options_of_its_config():
    result = subprocess.run(
        [sys.executable, "-m", "transgan", "train", "cyclegan", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "Unpaired image-to-image translation (CycleGAN)" in result.stdout
    for flag in ("--lambda-identity", "--pool-size", "--mbstd-group-size", "--steps", "--resume"):
        assert flag in result.stdout, flag
