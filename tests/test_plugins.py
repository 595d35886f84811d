"""Entry-point plugins: discovery, lazy loading, broken and duplicate plugins, the example package end to end."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from transgan.cli.app import build_app
from typer.testing import CliRunner

import transgan
from transgan.registry import LOSSES, NETWORKS, PluginWarning, Registry, RegistryError


def write_distribution(site: Path, name: str, version: str, entry_points: dict[str, dict[str, str]]) -> None:
    """An installed distribution as pip leaves it: a dist-info folder with METADATA and entry_points.txt."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    sections = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(sections))


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A fresh registry (own group, one built-in) and a folder on sys.path to install plugin packages into."""
    tag = uuid.uuid4().hex[:8]  # unique module and group names: nothing leaks between tests
    site = tmp_path / "site"
    site.mkdir()
    builtin = f"tp_builtin_{tag}"
    (site / f"{builtin}.py").write_text("def made_here():\n    return 'built-in'\n")
    monkeypatch.syspath_prepend(str(site))
    registry = Registry("widget", f"transgan_test_{tag}.widgets", [])
    registry.add("made_here", __import__(builtin).made_here)

    def install(package: str, version: str, plugins: dict[str, str], modules: dict[str, str]) -> None:
        for module, source in modules.items():
            (site / f"{module}_{tag}.py").write_text(source)
        targets = {name: target.replace("{tag}", tag) for name, target in plugins.items()}
        write_distribution(site, f"{package}-{tag}", version, {registry.entry_point_group: targets})

    return registry, install, tag


def test_entry_points_are_discovered_with_their_package_and_version(plugin_site):
    registry, install, tag = plugin_site
    install(
        "widgets-extra",
        "1.2.3",
        {"shiny": "tp_extra_{tag}:register"},
        {"tp_extra": "def register(registry):\n    registry.add('shiny', lambda: 'shiny', role='translator')\n"},
    )
    assert registry.names() == ["made_here", "shiny"]
    entry = registry.entry("shiny")
    assert entry.obj() == "shiny" and entry.info == {"role": "translator"}
    assert (entry.origin.package, entry.origin.version) == (f"widgets-extra-{tag}", "1.2.3")
    assert entry.origin.plugin == "shiny" and entry.origin.target == f"tp_extra_{tag}:register"
    assert not registry.entry("made_here").origin.is_plugin and registry.plugin_errors == []


def test_a_broken_plugin_is_one_clear_error_and_the_built_ins_keep_working(plugin_site):
    registry, install, tag = plugin_site
    install("widgets-broken", "0.4", {"fragile": "tp_broken_{tag}"}, {"tp_broken": "import no_such_module_xyz\n"})
    install(
        "widgets-fine",
        "2.0",
        {"fine": "tp_fine_{tag}:register"},
        {"tp_fine": "def register(r):\n    r.add('fine', len)\n"},
    )
    with pytest.warns(PluginWarning) as caught:
        assert registry.names() == ["fine", "made_here"]  # the other plugin and the built-in are there
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "plugin 'fragile'" in message and f"widgets-broken-{tag} 0.4" in message
    assert "No module named 'no_such_module_xyz'" in message and "\n" not in message
    assert registry.get("made_here")() == "built-in"
    # asking for something that is missing says which plugin failed
    with pytest.raises(RegistryError, match="unknown widget 'fragile_widget'.*plugin 'fragile'.*failed to load"):
        registry.get("fragile_widget")


def test_a_duplicate_name_skips_the_whole_plugin_and_names_both_packages(plugin_site):
    registry, install, tag = plugin_site
    first = "def register(r):\n    r.add('twin', abs)\n"
    # registers a new name first, then a taken one: the new name must not stay behind half-loaded
    second = "def register(r):\n    r.add('extra', min)\n    r.add('made_here', max)\n    r.add('twin', max)\n"
    install("widgets-a", "1.0", {"a": "tp_a_{tag}:register"}, {"tp_a": first})
    install("widgets-b", "1.0", {"b": "tp_b_{tag}:register"}, {"tp_b": second})
    with pytest.warns(PluginWarning, match=rf"plugin 'b'.*widgets-b-{tag} 1.0.*'made_here' is already registered by "):
        names = registry.names()
    assert names == ["made_here", "twin"]
    assert registry.get("made_here")() == "built-in" and registry.get("twin") is abs
    [failure] = registry.plugin_errors
    assert failure.origin.package == f"widgets-b-{tag}" and "transgan" in failure.reason


def test_a_plugin_registers_variants_of_built_ins_and_a_bad_one_is_skipped(plugin_site):
    registry, install, tag = plugin_site
    good = "def register(r):\n    r.add_variant('made_here_too', 'made_here', 'The built-in, again.')\n"
    bad = "def register(r):\n    r.add('fine_first', len)\n    r.add_variant('orphan', 'no_such_base', 'Nothing.')\n"
    install("widgets-var", "1.0", {"var": "tp_var_{tag}:register"}, {"tp_var": good})
    install("widgets-orphan", "1.0", {"orphan": "tp_orphan_{tag}:register"}, {"tp_orphan": bad})
    with pytest.warns(PluginWarning, match=rf"plugin 'orphan'.*widgets-orphan-{tag}.*no widget 'no_such_base'"):
        assert registry.names() == ["made_here", "made_here_too"]  # the bad plugin left nothing behind
    entry = registry.entry("made_here_too")
    assert entry.obj() == "built-in" and entry.obj.__doc__ == "The built-in, again."
    assert entry.origin.package == f"widgets-var-{tag}" and not registry.entry("made_here").origin.is_plugin


def test_an_entry_point_must_name_a_module_or_a_function(plugin_site):
    registry, install, tag = plugin_site
    install("widgets-odd", "1.0", {"odd": "tp_odd_{tag}:Thing"}, {"tp_odd": "class Thing:\n    pass\n"})
    with pytest.warns(PluginWarning, match="names a type; name a module .* or a function taking the registry"):
        assert registry.names() == ["made_here"]


def test_a_plugin_module_registers_on_import_under_its_own_origin(plugin_site):
    """The module form: the plugin imports a registry and registers with the decorator, like the built-ins."""
    registry, install, tag = plugin_site
    holder = f"tp_holder_{tag}"
    # the plugin reaches this test's registry through a module, as a real one reaches transgan.registry
    sys.modules[holder] = type(sys)("holder")
    sys.modules[holder].REGISTRY = registry
    try:
        source = (
            f"from {holder} import REGISTRY\n\n@REGISTRY.register('decorated', role='sampler')\ndef f():\n    pass\n"
        )
        install("widgets-mod", "3.1", {"mod": "tp_mod_{tag}"}, {"tp_mod": source})
        entry = registry.entry("decorated")
        assert (entry.origin.package, entry.origin.plugin) == (f"widgets-mod-{tag}", "mod")
        assert entry.info == {"role": "sampler"} and entry.obj.__module__ == f"tp_mod_{tag}"
    finally:
        del sys.modules[holder]


def transgan_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "transgan", *args], capture_output=True, text=True, env=env)


def test_cli_loads_plugins_on_demand_and_survives_broken_ones(tmp_path):
    """Real entry points in the real groups, seen by a fresh `transgan` process through PYTHONPATH."""
    site, marker = tmp_path / "site", tmp_path / "imported.txt"
    site.mkdir()
    (site / "tp_marker_nets.py").write_text(
        "import os, pathlib\n"
        "from torch import nn\n"
        "from transgan.registry import NETWORKS\n"
        "pathlib.Path(os.environ['TP_MARKER']).write_text('imported')\n"
        "NETWORKS.register('marker_net', role='translator')(lambda input_nc=3, output_nc=3: nn.Conv2d(3, 3, 1))\n"
    )
    (site / "tp_broken_task.py").write_text("raise RuntimeError('this plugin is broken on purpose')\n")
    (site / "tp_dup_loss.py").write_text("def register(registry):\n    registry.add('vanilla', object())\n")
    (site / "tp_task.py").write_text(
        "from transgan.registry import TASKS\n"
        "from transgan.tasks.pix2pix import Pix2PixTask\n"
        "@TASKS.register('pix2pix_plugin')\n"
        "class PluginPix2Pix(Pix2PixTask):\n"
        "    'Pix2pix, registered by a plugin.'\n"
    )
    entry_points = {
        "transgan.networks": {"marker": "tp_marker_nets"},
        "transgan.tasks": {"broken": "tp_broken_task", "task": "tp_task"},
        "transgan.losses": {"dup": "tp_dup_loss:register"},
    }
    write_distribution(site, "tp-cli-plugins", "0.0.1", entry_points)
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "TP_MARKER": str(marker), "COLUMNS": "200"}

    top = transgan_cli("--help", env=env)
    assert top.returncode == 0 and "plugins" in top.stdout, top.stderr
    assert not marker.exists() and top.stderr == ""  # no plugin imported, so none reported

    # `train` resolves its task commands: the task plugins load (one is broken), network plugins do not
    train = transgan_cli("train", "--help", env=env)
    assert train.returncode == 0, train.stderr
    assert all(task in train.stdout for task in ("pix2pix", "cyclegan", "cgan", "pix2pix_plugin"))
    lines = train.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plugin error: task plugin 'broken' (tp_broken_task)"), train.stderr
    assert "tp-cli-plugins 0.0.1" in lines[0] and "RuntimeError: this plugin is broken on purpose" in lines[0]
    assert not marker.exists()
    # a plugin task is a `train` sub-command like the built-ins, its options made from its config
    task = transgan_cli("train", "pix2pix_plugin", "--help", env=env)
    assert task.returncode == 0 and "Pix2pix, registered by a plugin." in task.stdout, task.stderr
    assert "--lambda-l1" in task.stdout and "--steps" in task.stdout

    listing = transgan_cli("plugins", "--json", env=env)
    assert listing.returncode == 0 and listing.stderr == "", listing.stderr
    assert marker.exists()
    report = json.loads(listing.stdout)
    rows = {(row["kind"], row["name"]): row for row in report["entries"]}
    assert rows["network", "marker_net"]["package"] == "tp-cli-plugins"
    assert rows["network", "marker_net"]["entry_point"] == "tp_marker_nets"
    assert rows["loss", "vanilla"]["package"] == "transgan" and rows["loss", "vanilla"]["plugin"] is None
    assert rows["task", "pix2pix_plugin"]["package"] == "tp-cli-plugins"
    errors = {(row["kind"], row["plugin"]): row for row in report["errors"]}
    assert set(errors) == {("task", "broken"), ("loss", "dup")}
    assert "'vanilla' is already registered by transgan" in errors["loss", "dup"]["reason"]

    table = transgan_cli("plugins", env=env)
    assert table.returncode == 0 and "marker_net" in table.stdout and "tp-cli-plugins 0.0.1" in table.stdout
    failed = table.stdout.split("plugins that failed to load (skipped):\n")[1].splitlines()
    assert len(failed) == 2 and any("plugin 'broken'" in line and "broken on purpose" in line for line in failed)


def example_installed() -> bool:
    try:
        importlib.metadata.distribution("transgan-plugin-example")
    except importlib.metadata.PackageNotFoundError:
        message = "transgan-plugin-example is not installed (pip install -e examples/transgan-plugin-example)"
        if os.environ.get("TRANSGAN_REQUIRE_REAL_DATA") == "1":
            pytest.fail(message + "; CI (TRANSGAN_REQUIRE_REAL_DATA=1) must install it")
        pytest.skip(message)
    return True


def invoke(*args: object) -> str:
    result = CliRunner().invoke(build_app(), [str(arg) for arg in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_example_plugin_trains_exports_and_translates_through_the_cli(tmp_path):
    example_installed()
    rng = np.random.default_rng(0)
    for side in ("A", "B"):
        (tmp_path / "pairs" / side).mkdir(parents=True)
        for i in range(3):
            pixels = (rng.random((32, 32, 3)) * 255).astype("uint8")
            Image.fromarray(pixels).save(tmp_path / "pairs" / side / f"{i}.png")

    report = json.loads(invoke("plugins", "--json"))
    origins = {(row["kind"], row["name"]): row["package"] for row in report["entries"]}
    assert origins["network", "tiny_translator"] == "transgan-plugin-example"
    assert origins["loss", "lsgan_symmetric"] == "transgan-plugin-example"
    assert NETWORKS.entry("tiny_translator").info["role"] == "translator" and "lsgan_symmetric" in LOSSES

    run = tmp_path / "run"
    tiny = ["--arch", "tiny_translator", "--gan-loss", "lsgan_symmetric", "--ngf", "4", "--ndf", "4"]
    quiet = ["--preprocess", "none", "--num-workers", "0", "--no-progress", "--no-tensorboard", "--steps", "2"]
    invoke("train", "pix2pix", "--data", tmp_path / "pairs", *tiny, *quiet, "--out", run)
    model = transgan.read_model(run / "model.safetensors")
    assert model.meta["networks"]["G"]["arch"] == "tiny_translator"
    assert 'gan_loss = "lsgan_symmetric"' in (run / "config.toml").read_text()

    onnx_path = tmp_path / "tiny.onnx"
    assert "max abs diff" in invoke("export", run, onnx_path)
    (tmp_path / "in").mkdir()
    Image.fromarray((rng.random((30, 42, 3)) * 255).astype("uint8")).save(tmp_path / "in" / "odd.png")
    invoke("translate", onnx_path, tmp_path / "in", tmp_path / "out", "--device", "cpu")
    assert Image.open(tmp_path / "out" / "odd.png").size == (42, 30)  # padded to even sizes inside, cropped back
