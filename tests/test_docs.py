"""The documentation site builds with warnings as errors, executing both tutorials."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.docs


def test_docs_build_and_tutorials_run(tmp_path):
    pytest.importorskip("sphinx", reason="docs extra not installed (pip install -e .[docs])")
    pytest.importorskip("myst_nb", reason="docs extra not installed (pip install -e .[docs])")
    env = dict(os.environ, SCAMORT_TUTORIAL_FAST="1", SCAMORT_DOCS_EXECUTE="force")
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += ["-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    html = tmp_path / "html"
    for page in ("index", "install", "quickstart", "concepts", "cli", "benchmarks"):
        assert (html / f"{page}.html").exists(), page
    # the tutorials ran: their pages hold executed outputs, among them figures
    for nb in ("quickstart", "integration", "analysis"):
        text = (html / "tutorials" / f"{nb}.html").read_text()
        assert text.count('class="cell_output') >= 6, nb
        assert "<img" in text, nb
    assert (html / "api" / "generated" / "scamort.SCAMORT.html").exists()
    cli = (html / "cli.html").read_text()
    assert "--refine-steps" in cli
