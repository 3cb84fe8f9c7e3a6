"""README.md, the front page: every Python snippet in it runs (in a scratch
directory), its links to the docs point at files that exist, and its install
and test commands are the ones CI (.ci/run) runs.

The examples that moved from the README into docs/ run in the docs' doctest
build (`sphinx -b doctest`), not here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEXT = README.read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)
SHELL = "\n".join(re.findall(r"```bash\n(.*?)```", TEXT, flags=re.S))
# Markdown links to files of the repository: [text](path), not web addresses or anchors.
LINKS = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", TEXT) if "://" not in target]
# What a user types to install, run the main job and pass the tests.
COMMANDS = [
    "python -m pip install .",
    "python -m fastconv demo",
    'python -m pip install ".[test]"',
    "python -m pytest",
]


def test_the_readme_has_snippets():
    assert len(SNIPPETS) >= 1


@pytest.mark.parametrize("code", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # snippets may write files
    exec(compile(code, str(README), "exec"), {"__name__": "readme"})


def test_the_readme_stays_a_front_page():
    assert len(TEXT.splitlines()) <= 150, "move the details into docs/ (issue 17)"


@pytest.mark.parametrize("command", COMMANDS)
def test_the_readme_gives_the_commands_ci_runs(command):
    assert command in SHELL.splitlines(), f"README.md lost `{command}`"
    ci = ROOT / ".ci" / "run"
    if not ci.exists():
        pytest.skip("no .ci/run here (the suite runs from a copy of tests/ and README.md)")
    assert command in ci.read_text().splitlines(), f".ci/run no longer runs `{command}`"


def test_the_readme_links_to_the_docs():
    assert "docs/performance.md" in LINKS and "docs/user_guide.md" in LINKS, LINKS
    if not (ROOT / "docs").is_dir():
        pytest.skip("no docs/ here (the suite runs from a copy of tests/ and README.md)")
    missing = [target for target in LINKS if not (ROOT / target).exists()]
    assert missing == []
