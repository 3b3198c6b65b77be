"""Peak host memory of the two steps that dominate it, each in a fresh process.

- ``step``: six training steps of 512 cells on fully paired SNARE-seq (the module's
  loss, backward and fused AdamW, without Lightning), the case with the most decodings
  per cell (joint and both single-modality posteriors).
- ``refine``: ``get_latent_representation(refine_steps=5)`` of 2,000 SNARE-seq cells
  (blocks of 1,024 cells, each with the 16-draw ELBO before and after).

Prints the peak RSS after setup and after the step, in GB. Compare commits by running it
on each (``git stash`` / ``git checkout``).

    python benchmarks/memory.py
"""

from __future__ import annotations

import numpy as np
from harness import in_fresh_process, peak_rss_gb


def measure(what: str) -> dict:
    import torch

    import scamort

    full = scamort.datasets.snareseq_mouse_cortex(drop_empty_features=True)
    scamort.SCAMORT.setup_mudata(full, batch_key="batch")
    model = scamort.SCAMORT(full, seed=0)
    out = {"what": what, "peak RSS after setup (GB)": peak_rss_gb()}
    if what == "step":
        store, module = model._cells.tensors, model.module
        opt = torch.optim.AdamW(module.parameters(), lr=1e-3, fused=True)
        rng = np.random.default_rng(0)
        for _ in range(6):
            module.loss(store.batch(rng.choice(store.n_cells, 512, replace=False))).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        model.get_latent_representation(indices=np.arange(2000), refine_steps=5)
    out["peak RSS (GB)"] = peak_rss_gb()
    return out


if __name__ == "__main__":
    for what in ("step", "refine"):
        print(
            {
                k: round(v, 3) if isinstance(v, float) else v
                for k, v in in_fresh_process(measure, what).items()
            }
        )
