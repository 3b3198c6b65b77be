"""The GPU check script, run on CPU at tiny sizes so that it cannot rot between the
sessions that have a GPU to run it on."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_smoke_writes_every_section(tmp_path):
    run = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", str(tmp_path), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    sections = data["sections"]
    assert (
        "skipped" in sections["gpu tests"]["summary"]
        or "passed" in sections["gpu tests"]["summary"]
    )
    assert sections["gpu tests"]["returncode"] == 0
    rows = sections["training"]
    assert [r["data"] for r in rows] == ["snare"] * 3 + ["sim100k"] * 2 + ["sim1m"] * 2
    for r in rows:
        assert r["cells/s"] > 0 and r["ELBO (mean)"] < 0
        assert 0 < r["decoder FLOP share"] < 1
    # tiles multiply the cells; sampled runs score a fraction of the peaks
    assert rows[5]["cells"] == 2 * rows[3]["cells"]
    assert rows[2]["peaks scored"] == 0.1 and rows[0]["peaks scored"] == "all"
    assert sections["refinement"]["cells*steps/s"] > 0
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| sim1m |" in md and "Refinement:" in md
