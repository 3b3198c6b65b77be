"""The ``scamort`` command: ``scamort fit`` and ``scamort demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scamort", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a .h5mu / .h5ad and write the embedding back")
    fit.add_argument("input", help=".h5mu (modalities rna/atac) or .h5ad (with --modality)")
    fit.add_argument(
        "--out",
        default=None,
        help="output file (.h5mu for MuData input, "
        ".h5ad for AnnData input): the input plus obsm['X_scamort*'] (not with --backed)",
    )
    fit.add_argument(
        "--backed",
        action="store_true",
        help="leave the counts on disk and stream them in chunks; the embeddings are "
        "written into INPUT's obsm, chunk by chunk (for data larger than memory)",
    )
    fit.add_argument("--devices", type=int, default=1, help="devices (GPUs or CPU processes)")
    fit.add_argument("--strategy", default="auto", help='e.g. "ddp" with --devices > 1')
    fit.add_argument(
        "--checkpoint-dir",
        default=None,
        metavar="DIR",
        help="write DIR/last.ckpt every epoch (atomically)",
    )
    fit.add_argument(
        "--resume", action="store_true", help="continue from DIR/last.ckpt when it exists"
    )
    fit.add_argument("--epochs", type=int, default=None, help="max epochs (default: by size)")
    fit.add_argument("--batch-key", default=None, help="obs column with the batch")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    fit.add_argument("--save-model", default=None, metavar="DIR", help="also save the model")
    fit.add_argument("--rna-key", default="rna", help="RNA modality name in the MuData")
    fit.add_argument("--atac-key", default="atac", help="ATAC modality name in the MuData")
    fit.add_argument("--rna-layer", default=None, help="layer with raw RNA counts (default .X)")
    fit.add_argument("--atac-layer", default=None, help="layer with raw ATAC counts")
    fit.add_argument(
        "--modality", choices=["rna", "atac"], default=None, help="the modality of a .h5ad input"
    )
    fit.add_argument(
        "--refine-steps",
        type=int,
        default=0,
        metavar="K",
        help="refine each cell's joint posterior by K steps; also writes "
        "obs['elbo_amortized'] and obs['elbo_refined']",
    )
    fit.add_argument(
        "--paired",
        choices=["auto", "product", "average"],
        default="auto",
        help="how X_scamort embeds a paired cell: the product-of-experts posterior, or the "
        "average of its single-modality posteriors (auto: average, product when refining)",
    )
    fit.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo = sub.add_parser("demo", help="end-to-end run on the bundled SNARE-seq data")
    demo.add_argument("--out", default="scamort_demo", help="output folder")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    demo.add_argument(
        "--n-cells", type=int, default=None, help="subsample this many cells (quick runs)"
    )
    demo.add_argument(
        "--gap-cells",
        type=int,
        default=60,
        help="cells per modality status for the gap diagnostics (default 60)",
    )
    return p


def fit(args) -> None:
    from ._io import read, write_atomic
    from .model import SCAMORT

    if args.backed == (args.out is not None):
        raise ValueError("pass either --out FILE or --backed (results written into INPUT).")
    if args.paired == "average" and args.refine_steps > 0:
        raise ValueError(
            "--refine-steps refines the product-of-experts posterior: use --paired auto or "
            "product with it, or drop --refine-steps for --paired average."
        )
    data = read(args.input, backed="r+" if args.backed else None)
    is_mudata = Path(args.input).suffix == ".h5mu"
    if is_mudata:
        SCAMORT.setup_mudata(
            data,
            rna_key=args.rna_key,
            atac_key=args.atac_key,
            rna_layer=args.rna_layer,
            atac_layer=args.atac_layer,
            batch_key=args.batch_key,
        )
    else:
        if args.modality is None:
            raise ValueError("a .h5ad input needs --modality rna or --modality atac.")
        layer = args.rna_layer if args.modality == "rna" else args.atac_layer
        SCAMORT.setup_anndata(data, modality=args.modality, layer=layer, batch_key=args.batch_key)
    expected = ".h5mu" if is_mudata else ".h5ad"
    if args.out is not None and Path(args.out).suffix != expected:
        raise ValueError(f"--out must end in {expected} for a {Path(args.input).suffix} input.")
    model = SCAMORT(data, seed=args.seed)
    model.train(
        max_epochs=args.epochs,
        accelerator=args.accelerator,
        seed=args.seed,
        progress_bar=not args.no_progress,
        devices=args.devices,
        strategy=args.strategy,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
    )
    if model.global_rank != 0:  # other ranks of a distributed run write nothing
        return
    keys = {"X_scamort": "joint"}
    if is_mudata:
        keys.update({f"X_scamort_{m}": m for m in model.spec.modalities})
    todo = dict(keys)
    if args.refine_steps > 0 and not args.backed:
        # in a copy of the input, the per-cell ELBOs before / after refinement go to obs
        z, elbos = model.get_latent_representation(
            refine_steps=args.refine_steps, return_elbo=True, seed=args.seed, paired=args.paired
        )
        data.obs["elbo_amortized"] = elbos["elbo_amortized"].to_numpy()
        data.obs["elbo_refined"] = elbos["elbo_refined"].to_numpy()
        data.obsm["X_scamort"] = z
        del todo["X_scamort"]
    # backed input: written into the file chunk by chunk; otherwise into data.obsm
    for key, m in todo.items():
        steps = args.refine_steps if m == "joint" else 0
        model.write_latent_representation(
            key, modality=m, refine_steps=steps, seed=args.seed, paired=args.paired
        )
    if not args.backed:
        write_atomic(data, args.out)
    if args.save_model:
        model.save(args.save_model, overwrite=True)
    print(f"wrote {args.input if args.backed else args.out}: obsm {sorted(keys)}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .data import DataError

    try:
        if args.command == "fit":
            fit(args)
        else:
            from ._demo import run_demo

            run_demo(
                args.out,
                epochs=args.epochs,
                seed=args.seed,
                accelerator=args.accelerator,
                n_cells=args.n_cells,
                gap_cells=args.gap_cells,
            )
    except (DataError, ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        print(f"scamort {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
