"""One GPU check: everything scamort measures on a GPU, in one run, into one folder.

    bash benchmarks/gpu_check.sh OUT_DIR            # on a machine with one CUDA GPU
    bash benchmarks/gpu_check.sh OUT_DIR --smoke    # the same code on CPU, tiny sizes

Writes ``OUT_DIR/gpu_check.json`` and ``OUT_DIR/gpu_check.md`` after every section (a
run cut short keeps what it measured):

- ``gpu tests``: ``pytest tests/test_gpu.py`` (passed / failed / skipped).
- ``matmul peak``: TFLOP/s of a large square matmul in fp32 and bf16 (the measured
  ceiling that the fractions below refer to).
- ``training``: cells/s of one more training step (two runs of few and many steps, so
  start-up cancels) at batch 512, on SNARE-seq (fp32 / bf16 / sampled peaks) and on the
  simulator tiled to 100k cells and to 1M cells x 25k peaks held on the device (exact
  and sampled); peak device memory; the mean ELBO of 2,000 cells after training (bf16
  against fp32); the decoders' share of a step's FLOPs (``FlopCounterMode``) and their
  achieved FLOP/s as a fraction of the matmul peak.
- ``refinement``: cells x steps / s of ``get_latent_representation(refine_steps=20)``.

The full run is sized to finish in under 8 minutes on one H100. ``--smoke`` runs every
section on CPU at tiny sizes (``tests/test_gpu_check.py`` runs it in the test suite).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH = 512
SIZES = {
    "full": {
        "snare_cells": None,  # all 10,309
        "sim_cells": 10_000,
        "sim_genes": 2_000,
        "sim_peaks": 25_000,
        "tiles": {"sim100k": 10, "sim1m": 100},
        "steps": (40, 160),
        "matmul": 8192,
        "refine_cells": 10_000,
        "elbo_cells": 2_000,
    },
    "smoke": {
        "snare_cells": 300,
        "sim_cells": 300,
        "sim_genes": 100,
        "sim_peaks": 400,
        "tiles": {"sim100k": 2, "sim1m": 4},
        "steps": (2, 4),
        "matmul": 128,
        "refine_cells": 50,
        "elbo_cells": 100,
    },
}


class Report:
    """Results so far, rewritten to JSON and markdown after every section."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.data = out, {"meta": meta, "sections": {}}
        out.mkdir(parents=True, exist_ok=True)

    def add(self, section: str, value) -> None:
        self.data["sections"][section] = value
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=1, default=str))
        (self.out / "gpu_check.md").write_text(self.markdown())
        print(f"[gpu_check] {section}: {json.dumps(value, default=str)[:400]}", flush=True)

    def markdown(self) -> str:
        m = self.data["meta"]
        lines = [f"### GPU check on {m['device']} ({m['mode']}, torch {m['torch']})", ""]
        s = self.data["sections"]
        if "gpu tests" in s:
            lines += [f"GPU tests: {s['gpu tests']['summary']}", ""]
        if "matmul peak" in s:
            p = s["matmul peak"]
            lines += [f"Square matmul peak: fp32 {p['fp32']:.1f} TFLOP/s, bf16 {p['bf16']:.1f} TFLOP/s", ""]
        if "training" in s:
            cols = [
                "data", "cells", "peaks", "precision", "peaks scored", "cells/s",
                "peak device GB", "ELBO (mean)", "decoder FLOP share", "decoder % of peak",
            ]  # fmt: skip
            lines += ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
            for r in s["training"]:
                lines.append("| " + " | ".join(_cell(r.get(c)) for c in cols) + " |")
            lines.append("")
        if "refinement" in s:
            r = s["refinement"]
            lines += [f"Refinement: {r['cells*steps/s']:,.0f} cells x steps / s ({r['cells']} cells, 20 steps)", ""]
        return "\n".join(lines)


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def gpu_tests() -> dict:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    return {"returncode": run.returncode, "summary": lines[-1] if lines else run.stderr[-300:]}


def matmul_peak(n: int) -> dict:
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n, device=_device(), dtype=dtype)
        b = torch.randn(n, n, device=_device(), dtype=dtype)
        a @ b
        _sync()
        reps, t = 10, time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync()
        out[name] = 2 * n**3 * reps / (time.perf_counter() - t) / 1e12
    return out


def _tile(mdata, times: int):
    """The simulated cells repeated ``times`` times (fresh cell names): throughput needs
    the size, not new cells, and simulating 1M cells would take most of the budget."""
    import anndata as ad
    import mudata as md

    mods = {}
    for name, mod in mdata.mod.items():
        parts = []
        for i in range(times):
            part = mod.copy()
            part.obs_names = [f"{c}-{i}" for c in mod.obs_names]
            parts.append(part)
        mods[name] = ad.concat(parts, merge="same")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = md.MuData(mods)
    obs = [mdata.obs.set_axis([f"{c}-{i}" for c in mdata.obs_names]) for i in range(times)]
    import pandas as pd

    out.obs = pd.concat(obs).loc[out.obs_names]
    return out


def _decoder_flops(model) -> tuple[float, float]:
    """(FLOPs of the decoders' output matmuls, FLOPs of all matmuls) per cell of one
    training step (loss and backward) on BATCH cells. The total is counted by
    ``FlopCounterMode``; the decoders' share is 6 x rows x hidden x columns scored (2 for
    the forward, 4 for the backward), with the rows each decoder was called on counted
    during the step (a paired cell is decoded up to three times); for sampled peaks, the
    sampled columns (the open entries' sparse dot products are in neither count)."""
    from torch.utils.flop_counter import FlopCounterMode

    module = model.module.to(_device()).train()
    store = model._cells.tensors.to(_device())
    idx = np.random.default_rng(0).permutation(store.n_cells)[: min(BATCH, store.n_cells)]
    calls = []
    for dec in module.decoders.values():

        def counted(z, cov, log_size, batch, x, _dec=dec, _orig=dec.log_prob):
            n_cols = _dec.out.out_features
            if getattr(_dec, "n_sampled", None):
                n_cols = _dec.n_sampled
            calls.append(6 * z.shape[0] * _dec.out.in_features * n_cols)
            return _orig(z, cov, log_size, batch, x)

        dec.log_prob = counted
    try:
        with FlopCounterMode(display=False) as counter:
            module.loss(store.batch(idx), 1.0).loss.backward()
    finally:
        for dec in module.decoders.values():
            del dec.log_prob  # the class's method again
    module.zero_grad(set_to_none=True)
    total = sum(counter.get_flop_counts().get("Global", {}).values())
    return sum(calls) / len(idx), total / len(idx)


def train_rate(mdata, steps: tuple[int, int], precision: str, elbo_cells: int, **options) -> dict:
    """cells/s of one more step (few and many steps; start-up cancels), peak device
    memory, mean ELBO of ``elbo_cells`` cells after the longer run, decoder FLOPs."""
    import torch

    import scamort

    atac = scamort.Modality("atac", **options)  # peak_sampling
    scamort.SCAMORT.setup_mudata(mdata, {"rna": "rna", "atac": atac}, batch_key="batch")
    gpu = torch.cuda.is_available()
    seconds, model = [], None
    for n in steps:
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        model = scamort.SCAMORT(mdata)
        t = time.perf_counter()
        model.train(
            max_epochs=10_000, max_steps=n, batch_size=BATCH, precision=precision,
            data_placement="device" if gpu else "auto", progress_bar=False,
            early_stopping=False,
        )  # fmt: skip
        _sync()
        seconds.append(time.perf_counter() - t)
    per_step = (seconds[1] - seconds[0]) / (steps[1] - steps[0])
    cancelled = per_step > 0
    if not cancelled:  # timing noise larger than the extra steps (tiny smoke sizes)
        per_step = seconds[1] / steps[1]
    out = {
        "cells": mdata.n_obs,
        "peaks": mdata["atac"].n_vars,
        "precision": precision,
        "peaks scored": options.get("peak_sampling") or "all",
        "cells/s": BATCH / per_step,
        "s per step": per_step,
        "start-up cancelled": cancelled,
        "peak device GB": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
    }
    cells = np.arange(min(elbo_cells, mdata.n_obs))
    out["ELBO (mean)"] = float(np.mean(model.get_elbo(indices=cells)))
    dec, total = _decoder_flops(model)
    out["decoder FLOP share"] = dec / total if total else None
    out["decoder TFLOP/s"] = dec * out["cells/s"] / 1e12
    return out, model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, on CPU")
    p.add_argument("--skip-tests", action="store_true", help="leave out tests/test_gpu.py")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    import torch

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import scamort

    size = SIZES["smoke" if args.smoke else "full"]
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (run with --smoke to check the code on CPU)")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    meta = {"device": device, "mode": "smoke" if args.smoke else "full"}
    meta.update(torch=torch.__version__, started=time.strftime("%Y-%m-%d %H:%M:%S"))
    report = Report(args.out, meta)
    t0 = time.perf_counter()
    if not args.skip_tests:
        report.add("gpu tests", gpu_tests())
    peak = matmul_peak(size["matmul"])
    report.add("matmul peak", peak)

    snare = scamort.datasets.unpair(
        scamort.datasets.snareseq_mouse_cortex(drop_empty_features=True), seed=0
    )
    if size["snare_cells"]:
        snare = snare[: size["snare_cells"]].copy()
    sim = scamort.datasets.simulate_multiome(
        n_cells=size["sim_cells"], n_genes=size["sim_genes"], n_peaks=size["sim_peaks"],
        n_cell_types=10,
    )  # fmt: skip
    runs = [
        ("snare", lambda: snare, "32-true", {}),
        ("snare", lambda: snare, "bf16-mixed", {}),
        ("snare", lambda: snare, "32-true", {"peak_sampling": 0.1}),
        ("sim100k", lambda: _tile(sim, size["tiles"]["sim100k"]), "32-true", {}),
        ("sim100k", lambda: _tile(sim, size["tiles"]["sim100k"]), "32-true", {"peak_sampling": 0.1}),
        ("sim1m", lambda: _tile(sim, size["tiles"]["sim1m"]), "32-true", {}),
        ("sim1m", lambda: _tile(sim, size["tiles"]["sim1m"]), "32-true", {"peak_sampling": 0.1}),
    ]
    rows, snare_model, data, last = [], None, None, None
    for name, make, precision, options in runs:
        data = make() if name != last else data
        last = name
        try:
            row, model = train_rate(data, size["steps"], precision, size["elbo_cells"], **options)
        except Exception as e:  # noqa: BLE001 - a failed configuration is a result too
            if args.smoke:
                raise
            row, model = {"error": f"{type(e).__name__}: {e}"[:300]}, None
        row = {"data": name, **row}
        key = "bf16" if precision.startswith("bf16") else "fp32"
        if row.get("decoder TFLOP/s") is not None:
            row["decoder % of peak"] = 100 * row["decoder TFLOP/s"] / peak[key]
        rows.append(row)
        report.add("training", rows)
        if name == "snare" and precision == "32-true" and not options:
            snare_model = model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    cells = np.arange(min(size["refine_cells"], snare.n_obs))
    snare_model.get_latent_representation(indices=cells[:8], refine_steps=2)  # warm-up
    _sync()
    t = time.perf_counter()
    snare_model.get_latent_representation(indices=cells, refine_steps=20)
    _sync()
    rate = len(cells) * 20 / (time.perf_counter() - t)
    report.add("refinement", {"cells": len(cells), "cells*steps/s": rate})
    report.add("wall (s)", time.perf_counter() - t0)
    return report.data


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
