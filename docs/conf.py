"""Sphinx configuration: MyST pages, executed tutorials (myst-nb), API from docstrings."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import scamort  # noqa: E402
from scamort._cli import _parser  # noqa: E402

project = "scamort"
author = "scamort developers"
copyright = "2026, scamort developers"
version = release = scamort.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_copybutton",
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "generated"]
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# Tutorials live in notebooks/ (outputs stripped in git); they are copied here and
# executed at every build. SCAMORT_TUTORIAL_FAST=1 runs them on a subsample for a few
# epochs (what CI does); unset, they run at full size.
nb_execution_mode = os.environ.get("SCAMORT_DOCS_EXECUTE", "force")
nb_execution_timeout = 1800
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

TUTORIALS = HERE / "tutorials"
TUTORIALS.mkdir(exist_ok=True)
for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
    shutil.copyfile(nb, TUTORIALS / nb.name)

# The CLI reference is the parser's own help text.
GENERATED = HERE / "generated"
GENERATED.mkdir(exist_ok=True)
parser = _parser()
sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
for name, p in {"main": parser, **sub.choices}.items():
    (GENERATED / f"cli_{name}.md").write_text(f"```text\n{p.format_help().rstrip()}\n```\n")

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_typehints = "description"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = True

html_theme = "sphinx_book_theme"
html_title = "scamort"
html_theme_options = {"show_toc_level": 2}
html_static_path: list[str] = []
