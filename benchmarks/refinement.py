"""Semi-amortized refinement on SNARE-seq: gaps, fraction closed, throughput, embedding
quality, distribution shift, and refinement during training.

    python benchmarks/refinement.py --out docs/refinement.json

SNARE-seq is split into thirds (paired / RNA-only / ATAC-only, seed 0). Library 09L is
held out of training (the shifted cells); 500 random cells of the other libraries are
held out too (in-distribution test cells). The model is trained on the rest without a
batch key (the held-out library is a batch the model never sees).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import scamort
from scamort._demo import integration_metrics
from scamort.gaps import fraction_closed, summarize_gaps


def split(seed: int = 0, held_out: str = "09L", n_test: int = 500):
    full = scamort.datasets.unpair(
        scamort.datasets.snareseq_mouse_cortex(drop_empty_features=True), seed=seed
    )
    batch = full.obs["batch"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    in_lib = np.flatnonzero(batch != held_out)
    test = np.sort(rng.choice(in_lib, n_test, replace=False))
    train = np.setdiff1d(in_lib, test)
    parts = {
        k: full[full.obs_names[idx]].copy()
        for k, idx in {
            "train": train,
            "test": test,
            "shift": np.flatnonzero(batch == held_out),
        }.items()
    }
    # Keep features observed in the training cells, in every part (features must match).
    for mod in ("rna", "atac"):
        keep = np.asarray(parts["train"][mod].X.sum(0)).ravel() > 0
        for k in parts:
            parts[k].mod[mod] = parts[k][mod][:, keep].copy()
            parts[k].update()
    return parts


def gap_block(model, data, n_cells, seed):
    idx = np.sort(
        np.random.default_rng(seed).choice(data.n_obs, min(n_cells, data.n_obs), replace=False)
    )
    gaps = model.get_gaps(data, indices=idx, converge_steps=300, iw_samples=128, seed=seed)
    gaps["modality"] = data.obs["modality"].astype(str).to_numpy()[idx]
    closed = fraction_closed(gaps)
    return gaps, {
        "cells": len(gaps),
        "elbo_amortized": float(gaps["elbo_amortized"].mean()),
        "amortization_gap": float(gaps["amortization_gap"].mean()),
        "approximation_gap": float(gaps["approximation_gap"].mean()),
        **{f"closed_after_{k}": float(v) for k, v in closed.items()},
        "by_modality": summarize_gaps(gaps, gaps["modality"]).round(4).to_dict(orient="index"),
    }


def throughput(model, data, n_cells=2000, steps=20):
    idx = np.arange(min(n_cells, data.n_obs))
    model.get_latent_representation(data, indices=idx[:64], refine_steps=2)  # warm-up
    t = time.perf_counter()
    model.get_latent_representation(data, indices=idx, refine_steps=steps)
    return len(idx) * steps / (time.perf_counter() - t)


def train_time_refinement(parts, epochs, seed, n_cells=3000, k=3):
    """A subsample trained with and without refinement during training."""
    rng = np.random.default_rng(seed)
    sub = parts["train"][np.sort(rng.choice(parts["train"].n_obs, n_cells, replace=False))].copy()
    for mod in ("rna", "atac"):
        sub.mod[mod] = sub[mod][:, np.asarray(sub[mod].X.sum(0)).ravel() > 0].copy()
    sub.update()
    test = parts["test"].copy()
    for mod in ("rna", "atac"):
        test.mod[mod] = test[mod][:, sub[mod].var_names].copy()
    test.update()
    out = {}
    for steps in (0, k):
        scamort.SCAMORT.setup_mudata(sub)
        model = scamort.SCAMORT(sub, seed=seed)
        t = time.perf_counter()
        model.train(max_epochs=epochs, seed=seed, progress_bar=False, refine_steps=steps)
        seconds = time.perf_counter() - t
        gaps, held = gap_block(model, test, 200, seed)
        out[f"train_refine_steps={steps}"] = {
            "train_seconds": seconds,
            "heldout_elbo_amortized": held["elbo_amortized"],
            "heldout_log_px_iwae": float(gaps["log_px_iwae"].mean()),
            "heldout_amortization_gap": held["amortization_gap"],
            **integration_metrics(model, sub),
        }
        print(steps, out[f"train_refine_steps={steps}"], flush=True)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs/refinement.json")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-training-comparison", action="store_true")
    args = p.parse_args()
    parts = split(args.seed)
    print({k: v.n_obs for k, v in parts.items()}, flush=True)
    scamort.SCAMORT.setup_mudata(parts["train"])
    model = scamort.SCAMORT(parts["train"], seed=args.seed)
    t = time.perf_counter()
    model.train(max_epochs=args.epochs, seed=args.seed, progress_bar=False)
    result = {"train_seconds": time.perf_counter() - t, "epochs": args.epochs}
    for name in ("test", "shift"):
        _, result[f"gaps_{name}"] = gap_block(model, parts[name], 300, args.seed)
        print(
            name,
            {k: v for k, v in result[f"gaps_{name}"].items() if k != "by_modality"},
            flush=True,
        )
    result["refine_cells_steps_per_s_cpu"] = throughput(model, parts["train"])
    print("throughput", result["refine_cells_steps_per_s_cpu"], flush=True)
    for steps in (0, 20):
        t = time.perf_counter()
        result[f"quality_refine_{steps}"] = integration_metrics(
            model, parts["train"], refine_steps=steps
        )
        print(steps, result[f"quality_refine_{steps}"], time.perf_counter() - t, flush=True)
    if not args.skip_training_comparison:
        result["training_comparison"] = train_time_refinement(parts, 40, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
