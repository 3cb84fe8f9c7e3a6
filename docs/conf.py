"""Sphinx configuration of fastconv's documentation site.

The build needs no network: no intersphinx, and nothing is loaded from a CDN
when a page is viewed (the math is drawn into images by matplotlib's mathtext,
not MathJax). Build it with `nox -s docs`, or:

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import version as package_version
from pathlib import Path

DOCS = Path(__file__).resolve().parent

project = "fastconv"
author = "fastconv developers"
project_copyright = "2026, fastconv developers"
release = package_version("fastconv")  # the installed package's: autodoc documents that one
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_copybutton",
    "sphinx_gallery.gen_gallery",
    "matplotlib.sphinxext.plot_directive",
    "matplotlib.sphinxext.mathmpl",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
templates_path = ["_templates"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- API reference -------------------------------------------------------------

autosummary_generate = True
autodoc_typehints = "signature"
autodoc_type_aliases = {"ArrayLike": "ArrayLike", "DTypeLike": "DTypeLike"}  # not their long unions
autodoc_default_options = {"members": True}
# fastconv.torch's classes override torch methods; show our docstrings only, not torch's.
autodoc_inherit_docstrings = False
numpydoc_show_class_members = False  # autosummary lists them
numpydoc_xref_param_type = False
nitpicky = True
nitpick_ignore_regex = [
    # Other packages' types: no intersphinx (the build has no network) to link them.
    ("py:class", r"(np|numpy|npt|torch|dask|os|collections\.abc|typing)\..*|ndarray|ArrayLike|DTypeLike"),
    # What fastconv.dask.plan returns: a record of the chunk plan, described in its docstring.
    ("py:class", r"fastconv\.dask\.Plan"),
]

# -- code examples: `sphinx-build -b doctest` runs every >>> in pages and docstrings

doctest_global_setup = """
import os, tempfile
os.chdir(tempfile.mkdtemp())  # examples that save files write them here
import numpy as np
np.set_printoptions(precision=4, suppress=True)
"""

# -- figures drawn at build time -------------------------------------------------

plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
mathmpl_fontsize = 15.0
mathmpl_srcset = ["2x"]

# -- the gallery: examples/ run at build time ------------------------------------

sys.path.insert(0, str(DOCS))  # gallery_hooks
import gallery_hooks  # noqa: E402

sphinx_gallery_conf = {
    "examples_dirs": gallery_hooks.stage(),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"(train_digits|padding_tour)\.py$",  # run these; others are shown, not run
    "ignore_pattern": r"typed_usage\.py$",  # a mypy fixture, not an example to read
    "reset_argv": "gallery_hooks.example_argv",
    "image_scrapers": ("matplotlib", "gallery_hooks.saved_plot_scraper"),
    "download_all_examples": False,
    "show_memory": False,
}

# -- HTML ----------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"fastconv {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "logo": {"text": "fastconv"},
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_static_path = ["_static"]
html_favicon = "_static/fastconv-logo.svg"
html_logo = "_static/fastconv-logo.svg"
# The theme's colour mode on a first visit (empty, it logs a console error).
html_context = {"default_mode": "auto"}
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True


def _alias_names(app, what, name, obj, options, signature, return_annotation):
    """Sphinx 9 writes an aliased type in a union (``ArrayLike | None``) as
    ``TypeAliasForwardRef('ArrayLike')``; show the alias's name."""
    pattern = re.compile(r"TypeAliasForwardRef\('([^']*)'\)")
    if signature is not None:
        signature = pattern.sub(r"\1", signature)
    if return_annotation is not None:
        return_annotation = pattern.sub(r"\1", return_annotation)
    return signature, return_annotation


def setup(app):
    app.connect("autodoc-process-signature", _alias_names)
