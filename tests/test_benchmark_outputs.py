"""Every benchmark prints JSON and takes the path its results go to as an option (--out, --json-out or --json);
none reads an output folder from the environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))
OUTPUT_OPTION = re.compile(r"""add_argument\(\s*["'](--out|--json-out|--json)["']""")


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 10


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.name)
def test_benchmark_prints_json_and_takes_its_output_path_as_an_option(path):
    source = path.read_text()
    assert OUTPUT_OPTION.search(source), f"{path.name}: add --out PATH (or --json-out PATH) for its results"
    assert re.search(r"print\([^)]*json\.dumps|print\(text\)|print\(json_text\)", source), (
        f"{path.name}: print the JSON"
    )
    assert not re.search(r"""environ(\.get)?[\[(]\s*["']OUT["']""", source), (
        f"{path.name}: takes its output folder from the environment"
    )
