"""The headline table of docs/benchmarks.md, from the rows quality.py recorded.

    python benchmarks/summary.py

For each design, scamort at its defaults against each peer at its best set-up there,
each figure the mean over the seeds (thirds splits) or deals (separate experiments)
named below; the full tables, every variant and the record of what was tried are in
docs/design_notes.md. Reads docs/quality.jsonl; writes the ``summary`` block of
docs/benchmarks.md.
"""

from __future__ import annotations

import numpy as np
from harness import DOCS, read_rows, replace_block

# (design, label, method, epochs or None, tags): the rows averaged into one line
SCAMORT = "scamort (defaults)"
SELECTED = [
    ("snare_thirds", SCAMORT, "scamort", None,
     ["defaults (early stopping, final encoder pass on every cell)"]),
    ("snare_thirds", "MULTIVI (150 epochs)", "multivi", 150, ["150 epochs"]),
    ("snare_thirds", "GLUE", "glue", None, ["default"]),
    ("snare_libraries", SCAMORT, "scamort", None,
     ["defaults (rerun with the one-modality mixing measures)",
      "defaults, amortized embedding (refine_steps 0)"]),
    ("snare_libraries", "MULTIVI (150 epochs)", "multivi", 150,
     ["library batch, no modality covariate, every cell trained on"]),
    ("snare_libraries", "MULTIVI (500 epochs, deal 0)", "multivi", 500,
     ["library batch, no modality covariate, every cell trained on"]),
    ("snare_libraries", "GLUE", "glue", None, ["default"]),
    ("sim_experiments", SCAMORT, "scamort", None,
     ["defaults (rerun with the one-modality mixing measures)",
      "defaults, amortized embedding (refine_steps 0)"]),
    ("sim_experiments", "MULTIVI (150 epochs)", "multivi", 150,
     ["library batch, no modality covariate, every cell trained on"]),
    ("sim_experiments", "MULTIVI (500 epochs)", "multivi", 500,
     ["library batch, no modality covariate, every cell trained on"]),
    ("sim_experiments", "the simulator's truth", "truth", None, ["default"]),
    ("sim10k", SCAMORT, "scamort", None,
     ["defaults (early stopping, final encoder pass on every cell)"]),
    ("sim10k", "MULTIVI (20 epochs)", "multivi", None, ["default"]),
    ("sim10k", "the simulator's truth", "truth", None, ["default"]),
]  # fmt: skip
MEASURES = [
    ("ARI", "ARI ↑"),
    ("NMI", "NMI ↑"),
    ("silhouette", "silhouette ↑"),
    ("label transfer", "label transfer ↑"),
    ("FOSCTTM", "FOSCTTM ↓"),
    ("iLISI modality", "modality mixing ↑"),
    ("train time (s)", "train time (s) ↓"),
]
DESIGNS = {
    "snare_thirds": "SNARE-seq, a third each paired / RNA-only / ATAC-only (10,309 cells)",
    "snare_libraries": "SNARE-seq's libraries dealt into a paired, an RNA-only and an "
    "ATAC-only experiment (separate experiments)",
    "sim_experiments": "simulator, separate experiments with their own batch effects",
    "sim10k": "simulator, 10,000 cells, thirds split",
}


def _mean(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(values)) if values else None


def _fmt(v, key):
    if v is None:
        return "-"
    if key == "train time (s)":
        return f"{v:,.0f}"
    return f"{v:.4f}" if key == "FOSCTTM" else f"{v:.3f}"


def table(rows: list[dict]) -> str:
    lines = []
    for design, title in DESIGNS.items():
        lines += [f"**{design}**: {title}", ""]
        lines.append("| | " + " | ".join(h for _, h in MEASURES) + " | runs |")
        lines.append("|---" * (len(MEASURES) + 2) + "|")
        for d, label, method, epochs, tags in SELECTED:
            if d != design:
                continue
            pick = [
                r for r in rows
                if r["dataset"] == d and r["method"] == method and r.get("tag") in tags
                and (epochs is None or r.get("epochs") == epochs)
            ]  # fmt: skip
            # one row per seed / deal: the latest recorded
            latest = {r.get("seed"): r for r in pick}
            if not latest:
                continue
            cells = [_fmt(_mean(latest.values(), k), k) for k, _ in MEASURES]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {len(latest)} |")
        lines.append("")
    return "\n".join(lines)


def main():
    rows = read_rows(DOCS / "quality.jsonl")
    body = table(rows)
    print(body)
    replace_block(DOCS / "benchmarks.md", "summary", body)


if __name__ == "__main__":
    main()
