"""sphinx-gallery's hooks for fastconv's docs (named by string in conf.py, so
that Sphinx can pickle its configuration).

The gallery shows the scripts of examples/ and the docs-only tours of
docs/gallery/. sphinx-gallery wants a header file beside the scripts it runs,
and examples/ holds only scripts, so it runs over a copy of both in
docs/_build/.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
GALLERY_SRC = DOCS / "_build" / "gallery_src"
DIGITS_PLOT = GALLERY_SRC / "digits_training.png"

HEADER = """\
Examples
========

Scripts from the repository's ``examples/`` folder, run when the docs are
built; their output and figures are the ones of that run.
"""


def stage() -> str:
    """Copy examples/*.py and a header into GALLERY_SRC; return its path."""
    shutil.rmtree(GALLERY_SRC, ignore_errors=True)
    GALLERY_SRC.mkdir(parents=True)
    (GALLERY_SRC / "GALLERY_HEADER.rst").write_text(HEADER)
    for script in [*(DOCS.parent / "examples").glob("*.py"), *(DOCS / "gallery").glob("*.py")]:
        shutil.copy(script, GALLERY_SRC)
    return str(GALLERY_SRC)


def example_argv(gallery_conf: dict[str, Any], script_vars: dict[str, Any]) -> list[str]:
    """The command line an example runs with: train_digits.py saves its plot for saved_plot_scraper."""
    if Path(script_vars["src_file"]).name == "train_digits.py":
        return ["--quiet", "--plot", DIGITS_PLOT.name]  # examples run in GALLERY_SRC
    return []


def saved_plot_scraper(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]) -> str:
    """Show the PNG train_digits.py saved: it draws on a matplotlib Figure, not
    through pyplot, so sphinx-gallery's matplotlib scraper cannot see it."""
    from sphinx_gallery.scrapers import figure_rst

    if not DIGITS_PLOT.exists():
        return ""
    target = Path(next(block_vars["image_path_iterator"]))
    shutil.move(DIGITS_PLOT, target)
    return str(figure_rst([str(target)], gallery_conf["src_dir"]))
