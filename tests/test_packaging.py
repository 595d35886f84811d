"""The built wheel installs `transgan` and `transgan.cli` (no top-level `cli`) and its commands run."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lend_site_packages(python: Path) -> None:
    """Let the venv of `python` import torch & co. from the environment running this test (no 5 GB install).

    Through a .pth file listing this interpreter's site-packages folders: they come after the venv's own, so
    transgan comes from the wheel. `--system-site-packages` would not do: it lends the base interpreter's
    folders, which lack torch when the tests run inside a virtual environment. Listed as plain paths, their
    own .pth files (an editable transgan among them) are not run.
    """
    venv_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], capture_output=True, text=True
    )
    assert venv_site.returncode == 0, venv_site.stderr
    outer = [entry for entry in sys.path if Path(entry).name in ("site-packages", "dist-packages")]
    (Path(venv_site.stdout.strip()) / "outer-environment.pth").write_text("".join(f"{entry}\n" for entry in outer))


def test_wheel_in_a_fresh_venv(tmp_path):
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("transgan-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "transgan/cli/app.py" in names and "transgan/pretrained/index.json" in names
    assert not any(name.startswith("cli/") for name in names)
    packages = {p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("transgan/**/__init__.py")}
    assert all(f"{package}/__init__.py" in names for package in packages), "a package is missing from pyproject"

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    lend_site_packages(python)
    installed = subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], capture_output=True)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    check = "import transgan, transgan.cli.app, importlib.util as u; print(transgan.__file__, u.find_spec('cli'))"
    result = subprocess.run([python, "-c", check], capture_output=True, text=True, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    location, cli_spec = result.stdout.split()
    assert str(env_dir) in location and cli_spec == "None"
    for command in ([env_dir / "bin" / "transgan", "--version"], [python, "-m", "transgan", "--help"]):
        ran = subprocess.run(command, capture_output=True, text=True, cwd=elsewhere)
        assert ran.returncode == 0, ran.stderr
    assert (
        "transgan 0.1.0"
        in subprocess.run([env_dir / "bin" / "transgan", "--version"], capture_output=True, text=True).stdout
    )
