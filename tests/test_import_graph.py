"""The import graph of transgan/ and cli/, read with `ast`: no circles, and the directions DESIGN.md sets."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# cli/ installs as transgan.cli (setuptools package-dir), so its modules are named that way.
PACKAGES = {"transgan": ROOT / "transgan", "transgan.cli": ROOT / "cli"}
# export/ and inference/ run a trained model: they never import training, tasks or datasets.
FORBIDDEN = {
    (runner, training)
    for runner in ("transgan.export", "transgan.inference")
    for training in ("transgan.trainer", "transgan.tasks", "transgan.data")
}
# `python -m transgan` runs the command line: the one module of the library that may import cli.
ENTRY_POINTS = {"transgan.__main__"}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of transgan/ and cli/ (tests/ and benchmarks/ aside)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if package == "transgan" and parts[:1] == ["cli"]:
                continue
            found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its file (top level, functions, TYPE_CHECKING blocks)."""

    def project_module(dotted: str) -> str | None:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(filter(None, (project_module(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # `from pkg import module` imports the module itself
                full = f"{base}.{alias.name}"
                target = full if full in known else project_module(base)
                if target:
                    targets.add(target)
    targets.discard(name)
    return targets


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_parser_sees_circles_and_relative_imports(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    source = tmp_path / "pkg"
    source.mkdir()
    (source / "__init__.py").write_text("")
    (source / "one.py").write_text("from . import two\nfrom .two import thing\n")
    (source / "two.py").write_text("def f():\n    from pkg.one import g\n")
    known = {"pkg": source / "__init__.py", "pkg.one": source / "one.py", "pkg.two": source / "two.py"}
    assert imports("pkg.one", known["pkg.one"], known) == {"pkg.two"}
    assert imports("pkg.two", known["pkg.two"], known) == {"pkg.one"}  # an import inside a function counts


def test_the_graph_covers_the_project():
    edges = graph()
    assert "transgan.inference.engines" in edges and "transgan.cli.translate" in edges
    assert "transgan.inference.torch_engine" in edges["transgan.inference.compiled"]
    assert sum(len(targets) for targets in edges.values()) > 100


def test_no_import_circles():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize(("source", "target"), sorted(FORBIDDEN))
def test_forbidden_directions(source, target):
    wrong = sorted(
        f"{module} imports {imported}"
        for module, targets in graph().items()
        if within(module, source)
        for imported in targets
        if within(imported, target)
    )
    assert not wrong, "; ".join(wrong)


def test_the_library_never_imports_the_command_line():
    wrong = sorted(
        f"{module} imports {imported}"
        for module, targets in graph().items()
        if not within(module, "transgan.cli") and module not in ENTRY_POINTS
        for imported in targets
        if within(imported, "transgan.cli")
    )
    assert not wrong, "; ".join(wrong)
