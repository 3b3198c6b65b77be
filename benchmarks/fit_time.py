"""Where the time of a whole ``scamort fit`` goes, and what refinement costs beside
training.

    python benchmarks/fit_time.py mosaic      # scamort fit of a 10,000-cell mosaic
    python benchmarks/fit_time.py refinement  # SNARE-seq: default training, then 20-step
                                              # refinement of every cell

``mosaic``: ``simulate_multiome`` at 10,000 cells (2,000 genes, 10,000 peaks, 3 batches,
half paired, a quarter each RNA-only and ATAC-only), written to .h5mu; then the
command ``scamort fit IN --out OUT --batch-key batch`` timed as a whole in a fresh
process, and the same steps in-process with a timer on each (read, setup, the main fit
with the time of its held-out evaluation, the final pass, the embeddings, writing).
Quality of the result: label transfer RNA-only -> ATAC-only and FOSCTTM of the paired
cells. ``refinement``: the bundled SNARE-seq data (10,309 cells, all paired), trained
at the defaults, then ``get_latent_representation(refine_steps=20)`` on every cell.
One JSON line per run in ``docs/fit_time.jsonl``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from harness import CACHE, DOCS, append_row, bench_process, machine

OUT = DOCS / "fit_time.jsonl"


def mosaic_path() -> Path:
    import scamort

    path = CACHE / "mosaic10k.h5mu"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        data = scamort.datasets.simulate_multiome(
            n_cells=10_000, n_genes=2000, n_peaks=10_000, n_cell_types=10, n_batches=3,
            frac_paired=0.5, frac_rna_only=0.25, seed=0,
        )  # fmt: skip
        data.write_h5mu(path)
    return path


def quality(out: Path) -> dict:
    import mudata as md

    from scamort.metrics import foscttm, label_transfer_accuracy

    r = md.read_h5mu(out)
    status, types = r.obs["modality"].to_numpy(), r.obs["cell_type"].to_numpy()
    z = np.asarray(r.obsm["X_scamort"])
    paired = status == "paired"
    rna, atac = np.asarray(r.obsm["X_scamort_rna"]), np.asarray(r.obsm["X_scamort_atac"])
    return {
        "label_transfer": round(
            label_transfer_accuracy(
                z[status == "rna_only"], types[status == "rna_only"],
                z[status == "atac_only"], types[status == "atac_only"],
            ), 4),
        "foscttm": round(foscttm(rna[paired], atac[paired]), 5),
    }  # fmt: skip


def cli_run(path: Path) -> dict:
    """The command as a user runs it, timed whole (start-up and import included)."""
    out = CACHE / "mosaic10k_out.h5mu"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "scamort._cli", "fit", str(path), "--out", str(out),
         "--batch-key", "batch", "--no-progress"],
        check=True,
    )  # fmt: skip
    return {"cli_s": round(time.perf_counter() - start, 1), **quality(out)}


def phases(path: Path) -> dict:
    """The same steps in-process, each timed (the module's own functions, wrapped)."""
    t0 = time.perf_counter()
    import mudata as md

    import scamort
    from scamort.model import training
    from scamort.train import plan

    bench_process()
    times: dict[str, float] = {"import": time.perf_counter() - t0}
    fits, val = [], [0.0]
    fit = training._fit

    def timed_fit(*a, **kw):
        start = time.perf_counter()
        trainer = fit(*a, **kw)
        fits.append(time.perf_counter() - start)
        return trainer

    training._fit = timed_fit
    start_val = plan.TrainingPlan.on_validation_epoch_start
    end_val = plan.TrainingPlan.on_validation_epoch_end

    def on_start(self):
        self._val_t = time.perf_counter()
        return start_val(self)

    def on_end(self):
        val[0] += time.perf_counter() - self._val_t
        return end_val(self)

    plan.TrainingPlan.on_validation_epoch_start = on_start
    plan.TrainingPlan.on_validation_epoch_end = on_end

    def step(name, f):
        start = time.perf_counter()
        value = f()
        times[name] = time.perf_counter() - start
        return value

    data = step("read", lambda: md.read_h5mu(path))
    step("setup", lambda: scamort.SCAMORT.setup_mudata(data, batch_key="batch"))
    model = step("build", lambda: scamort.SCAMORT(data))
    step("train", lambda: model.train(progress_bar=False))
    h = model.history.table
    times["main_fit"], times["final_pass"] = fits[0], sum(fits[1:])
    times["validation"] = val[0]
    keys = ["X_scamort", *(f"X_scamort_{m}" for m in model.spec.modalities)]
    mods = ["joint", *model.spec.modalities]
    step(
        "embed",
        lambda: [model.write_latent_representation(k, modality=m) for k, m in zip(keys, mods)],
    )  # noqa: E501
    out = CACHE / "mosaic10k_phases.h5mu"
    step("write", lambda: data.write_h5mu(out))
    return {
        **{f"{k}_s": round(v, 1) for k, v in times.items()},
        "epochs": int((~h["all_cells"]).sum()),
        "final_epochs": int(h["all_cells"].sum()),
    }


def refinement() -> dict:
    import scamort

    bench_process()
    data = scamort.datasets.snareseq_mouse_cortex()
    scamort.SCAMORT.setup_mudata(data, batch_key="batch")
    model = scamort.SCAMORT(data)
    start = time.perf_counter()
    model.train(progress_bar=False)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    model.get_latent_representation(refine_steps=20, progress_bar=False)
    refine_s = time.perf_counter() - start
    start = time.perf_counter()
    model.get_gaps(indices=np.arange(60), progress_bar=False)
    gaps_s = time.perf_counter() - start
    return {
        "train_s": round(train_s, 1),
        "epochs": model.history.n_epochs,
        "refine20_all_s": round(refine_s, 1),
        "refine_over_train": round(refine_s / train_s, 3),
        "gaps60_s": round(gaps_s, 1),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["mosaic", "refinement"])
    p.add_argument("--label", default="", help="a note kept with the row (the code's state)")
    args = p.parse_args(argv)
    from harness import in_fresh_process

    if args.what == "mosaic":
        path = in_fresh_process(mosaic_path)
        row = {"run": "mosaic10k", **cli_run(path), **in_fresh_process(phases, path)}
    else:
        row = {"run": "snare_refinement", **in_fresh_process(refinement)}
    append_row(OUT, {**row, "label": args.label, "machine": machine()})


if __name__ == "__main__":
    main()
