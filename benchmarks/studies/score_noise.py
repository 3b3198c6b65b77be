"""How much of a difference in the cluster scores is noise: the same design refitted
with other training seeds, and each embedding clustered with other Leiden seeds.

    python benchmarks/studies/score_noise.py --dataset snare_libraries --deal 0 \
        --fit-seeds 0 1 2 --leiden-seeds 0 1 2 3 4

quality.py scores one fit (training seed = the deal's seed) clustered once (Leiden seed
= the same seed), taking the best ARI and NMI over a resolution sweep. Two rows that
differ by less than the spread measured here do not rank the methods or options they
stand for. A fit whose training seed equals the deal reproduces quality.py's row for
the same code. Each fit runs in its own process; rows go to ``--out`` (JSON lines)
and ``--report`` prints them as tables.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
import numpy as np
from designs import load
from harness import DOCS, append_row, bench_process, in_fresh_process, read_rows
from scores import block_mixing, model_views, pairing_scores


def run_fit(dataset: str, deal: int, fit_seed: int, leiden_seeds: list[int]) -> list[dict]:
    """One fit at the defaults; its scores, ARI / NMI once per Leiden seed."""
    import scib_metrics

    import scamort
    from scamort import metrics

    bench_process()
    _, split, label_key = load(dataset, deal)
    scamort.SCAMORT.setup_mudata(split, batch_key="batch")
    model = scamort.SCAMORT(split, seed=fit_seed)
    t = time.perf_counter()
    model.train(seed=fit_seed, progress_bar=False)
    base = {
        "dataset": dataset,
        "deal": deal,
        "fit seed": fit_seed,
        "train time (s)": time.perf_counter() - t,
        "epochs trained": len(model.history),
    }
    z = model.get_latent_representation()
    obs = split.obs
    labels = obs[label_key].astype(str).to_numpy()
    base["silhouette"] = float(scib_metrics.silhouette_label(z, labels))
    base.update(pairing_scores(z, model_views(model), obs, label_key))
    if "dataset" in obs:
        base.update(block_mixing(z, obs))
    rows = []
    for s in leiden_seeds:
        sweep = metrics.leiden_sweep(z, labels, seed=s)
        rows.append({**base, "leiden seed": s, "ARI": sweep["ari"], "NMI": sweep["nmi"]})
    return rows


def _sd(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def report(rows: list[dict]) -> str:
    """Per design and deal: each fit's ARI / NMI over the Leiden seeds, and the spread
    over fits at the Leiden seed quality.py uses (the deal's)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    out = []
    for (dataset, deal), d in df.groupby(["dataset", "deal"]):
        out.append(f"**{dataset}**, deal {deal}\n")
        out.append(
            "| training seed | epochs | ARI over Leiden seeds | NMI over Leiden seeds "
            "| silhouette | FOSCTTM | label transfer |"
        )
        out.append("|---|---|---|---|---|---|---|")
        for fit, f in d.groupby("fit seed"):
            first = f.iloc[0]
            out.append(
                f"| {fit} | {first['epochs trained']} | {_sd(f['ARI'])} | {_sd(f['NMI'])} "
                f"| {first['silhouette']:.3f} | {first['FOSCTTM']:.4f} "
                f"| {first.get('label transfer', float('nan')):.3f} |"
            )
        at = d[d["leiden seed"] == deal]
        if len(at) > 1:
            out.append(
                f"| over training seeds (Leiden seed {deal}) | | {_sd(at['ARI'])} "
                f"| {_sd(at['NMI'])} | {_sd(at['silhouette'])} | | "
                f"{_sd(at['label transfer']) if 'label transfer' in at else ''} |"
            )
        out.append("")
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="snare_libraries")
    p.add_argument("--deal", type=int, default=0)
    p.add_argument("--fit-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--leiden-seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", type=Path, default=DOCS / "score_noise.jsonl")
    p.add_argument("--report", action="store_true", help="print the recorded rows and stop")
    args = p.parse_args(argv)
    if not args.report:
        for fit_seed in args.fit_seeds:
            rows = in_fresh_process(run_fit, args.dataset, args.deal, fit_seed, args.leiden_seeds)
            for row in rows:
                append_row(args.out, row)
            print(f"{args.dataset} deal {args.deal}, training seed {fit_seed}: done", flush=True)
    print(report(read_rows(args.out)))


if __name__ == "__main__":
    main()
