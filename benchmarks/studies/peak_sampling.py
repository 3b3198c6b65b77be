"""Noise of the sampled peak likelihood: uniform against importance draws of the columns.

    python benchmarks/studies/peak_sampling.py --datasets snare sim5k_p100k --columns 2048

For each data set: scamort trained a few epochs with the exact likelihood; on 512 cells
with ATAC, the exact per-cell ATAC log-likelihood, and ``--draws`` sampled estimates of it
with ``--columns`` columns drawn uniformly and by importance (half uniform, half in
proportion to each peak's open fraction; ``inclusion_probabilities``). Reported: the
per-cell standard deviation of the estimate (median over cells), the same for the
gradient with respect to the decoder's output weights (root mean square of the
deviation), and the largest bias in standard errors (unbiased: within about 4). Rows go
to ``--out`` (JSON lines).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import _path  # noqa: F401  (benchmarks/ on the path)
import numpy as np
from harness import CACHE, DOCS


def measure(dataset: str, columns: int, draws: int, epochs: int) -> list[dict]:
    import torch
    from speed import _read, data_path

    import scamort
    from scamort.likelihoods.sampled import inclusion_probabilities

    mdata = _read(data_path(dataset, CACHE))
    scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    model = scamort.SCAMORT(mdata, seed=0)  # exact: every peak column
    model.train(max_epochs=epochs, progress_bar=False)
    module = model.module.eval()
    j = model.spec.modalities.index("atac")
    store = model._cells.tensors
    cells = np.flatnonzero(model._cells.mask[:, j])[:512]
    batch = store.batch(cells)
    dec = module.decoders["atac"]
    x = batch["x"]["atac"]
    with torch.no_grad():
        q = module.inference(batch["x"], batch["mask"], batch["cov"])["qz"]
        z = q.loc
        cov = module.covariates(batch["cov"])
        log_size = dec.log_size(x)
        h = dec.body(z, cov)
    open_w = (x.val > 0).float()
    frequency = torch.as_tensor(
        model._cells.cells_per_feature("atac") / model._cells.mask[:, j].sum()
    )
    options = {
        "uniform": None,
        "importance": inclusion_probabilities(frequency, columns),
    }
    from scamort.likelihoods.sampled import sampled_peak_bernoulli_log_lik

    weight = dec.out.weight.detach().requires_grad_(True)

    def estimate(inclusion, k):
        ll = sampled_peak_bernoulli_log_lik(
            h, weight, dec.out.bias.detach(), dec.region_logit.detach(), log_size, x.crow,
            x.col, open_w, k, inclusion=inclusion,
            columns=torch.arange(weight.shape[0]) if k is None else None,
        )  # fmt: skip
        (g,) = torch.autograd.grad(ll.sum(), [weight])
        return ll.detach().numpy(), g.numpy()

    exact, g_exact = estimate(None, None)
    rows = []
    torch.manual_seed(0)
    for name, inclusion in options.items():
        lls, grads = [], []
        for _ in range(draws):
            ll, g = estimate(inclusion, columns)
            lls.append(ll)
            grads.append(g)
        lls, grads = np.stack(lls), np.stack(grads)
        sd = lls.std(0)
        bias = np.abs(lls.mean(0) - exact) / np.maximum(sd / np.sqrt(draws), 1e-9)
        rows.append(
            {
                "dataset": dataset,
                "draw": name,
                "columns": columns,
                "peaks": int(weight.shape[0]),
                "draws": draws,
                "median |log-lik|": float(np.median(np.abs(exact))),
                "median per-cell sd": float(np.median(sd)),
                "gradient rms deviation": float(np.sqrt(((grads - g_exact) ** 2).mean())),
                "gradient rms": float(np.sqrt((g_exact**2).mean())),
                "largest bias (standard errors)": float(bias.max()),
            }
        )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["snare", "sim5k_p100k"])
    p.add_argument("--columns", type=int, default=2048)
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", type=Path, default=DOCS / "peak_sampling.jsonl")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    for dataset in args.datasets:
        for row in measure(dataset, args.columns, args.draws, args.epochs):
            print(json.dumps(row), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
