#!/usr/bin/env python3
# /// script
# dependencies = ["nox>=2025.2.9"]
# ///
"""Task runner: `nox -s tests`, `nox -s docs`, `nox -s lint`, `nox -s bench`,
`nox -s build`; `nox -l` lists them, and plain `nox` runs the first three.
Each session installs fastconv into its own virtual environment, with the
dependency groups of pyproject.toml.
"""

from __future__ import annotations

import glob
import shutil

import nox

nox.needs_version = ">=2025.2.9"  # nox.project.dependency_groups
nox.options.default_venv_backend = "venv"

PROJECT = nox.project.load_toml("pyproject.toml")


def _group(name: str) -> list[str]:
    return nox.project.dependency_groups(PROJECT, name)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, as README.md says (extra arguments go to pytest: `nox -s tests -- -m slow`)."""
    session.install(".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the site (warnings are errors), run its examples as doctests, and
    check it in headless chromium (skipped without chromium and chromedriver)."""
    session.install(".[test]", *_group("docs"))
    sphinx = ("python", "-m", "sphinx", "-W", "--keep-going")
    session.run(*sphinx, "-b", "html", "docs", "docs/_build/html")
    session.run(*sphinx, "-b", "doctest", "-D", "plot_gallery=0", "docs", "docs/_build/doctest")  # no gallery rerun
    session.run("python", "-m", "pytest", "-m", "docs", "tests/test_docs_site.py")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy and the other pre-commit hooks over the whole repository."""
    session.install(".[test]", *_group("lint"))
    session.run("pre-commit", "run", "--all-files", "--show-diff-on-failure", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """fastconv against PyTorch and the NumPy reference (`nox -s bench -- --quick`)."""
    session.install(".[bench]")
    session.run("python", "-m", "fastconv", "bench", *session.posargs)


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """The sdist and, built from it, the wheel, in dist/; checked as PyPI would."""
    session.install(*_group("release"))
    shutil.rmtree("dist", ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", "dist")
    session.run("python", "-m", "twine", "check", "--strict", *glob.glob("dist/*"))


if __name__ == "__main__":
    nox.main()
