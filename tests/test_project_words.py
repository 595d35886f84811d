"""The project speaks of itself, its users and their machines: no word of work sessions, issues or tickets,
machines lent, or an outside runner's output folder in the README, the package, the CLI, tests or benchmarks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = ["README.md", "transgan", "cli", "tests", "benchmarks"]
SUFFIXES = {".py", ".md", ".toml", ".txt", ".js", ".html", ".css", ".json", ".cfg", ".yaml", ".yml", ""}

# (pattern, what it speaks of). Case-insensitive, whole words.
FORBIDDEN = [
    (r"(?-i:\$OUT\b|\bOUT/|[\"']OUT[\"'])", "an outside runner's output folder"),
    (r"\blent\b|\blend(s|ing)? (a |the |this |one )?(machine|gpu|device|accelerator)", "machines being lent"),
    (r"\bthe issue\b|\bissue'?s\b|\bissue #?\d+|\bticket", "issues or tickets"),
    (r"\b(outside|external|steering) runner\b", "an outside runner"),
    (r"\bsessions?\b", "work sessions"),
]
# ONNX Runtime's sessions are its API's own word; pytest's session scope and POSIX sessions (setsid) likewise.
SESSION_CONTEXT = re.compile(
    r"onnxruntime|InferenceSession|\bort\.|session_config|session\.run|scope=.session|start_new_session|setsid"
)


def project_files() -> list[Path]:
    files = []
    for tree in TREES:
        path = ROOT / tree
        candidates = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files += [p for p in candidates if p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return sorted(files)


def hits(text: str, allow_sessions: bool) -> list[str]:
    """`line: phrase (what it speaks of)` for each forbidden phrase in `text`."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, meaning in FORBIDDEN:
            if meaning == "work sessions" and allow_sessions:
                continue
            for match in re.finditer(pattern, line, re.IGNORECASE):
                found.append(f"{number}: '{match.group(0)}' ({meaning})")
    return found


def test_rules_catch_what_they_mean_and_spare_onnx_runtime():
    assert hits("none was lent to this session", allow_sessions=False) == [
        "1: 'lent' (machines being lent)",
        "1: 'session' (work sessions)",
    ]
    assert len(hits("results go to $OUT/report.json; the issue's target", allow_sessions=False)) == 2
    assert hits('Path(os.environ["OUT"], "x.json")', allow_sessions=False)
    assert hits("Short of ticket 12", allow_sessions=False)
    assert hits("ort.InferenceSession(path); session.run(None, feeds)", allow_sessions=True) == []
    assert hits("the output folder; an issue of precision; lending library", allow_sessions=False) == []


@pytest.mark.parametrize("path", project_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_forbidden_words(path):
    if path == Path(__file__).resolve():
        return  # this file names the phrases it forbids
    text = path.read_text(encoding="utf-8", errors="replace")
    found = hits(text, allow_sessions=bool(SESSION_CONTEXT.search(text)))
    assert found == [], f"{path.relative_to(ROOT)}: " + "; ".join(found)
