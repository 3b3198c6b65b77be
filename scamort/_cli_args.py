"""The ``scamort`` command line's arguments (``_cli.py`` carries them out)."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """A command line that cannot be carried out as given (exit code 2, one line)."""


def _peak_sampling(value: str):
    if value == "none":
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected none or a number > 0, got {value!r}")
    return number


def _positive(kind):
    """An argument type: a number of ``kind`` (int or float) above 0."""

    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            number = 0
        if not number > 0:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what} > 0, got {value!r}")
        return number

    return parse


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return number


def _parser() -> argparse.ArgumentParser:
    """The ``scamort`` command line: ``fit`` (its arguments by group below) and ``demo``."""
    p = argparse.ArgumentParser(
        prog="scamort",
        description="Fit .h5mu, .h5ad or 10x .h5 files and write the embedding back (scamort "
        "fit), or run the end-to-end demo on the bundled SNARE-seq data (scamort demo).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    fit = sub.add_parser(
        "fit",
        help="fit .h5mu / .h5ad / 10x .h5 files and write the embedding back",
        description="Fit one experiment, or several separate ones together "
        "(scamort fit multiome.h5mu rna.h5ad:rna atac.h5ad:atac --out all.h5mu).",
    )
    fit.add_argument(
        "input",
        nargs="+",
        help="a .h5mu (modalities rna / atac, or either alone), a .h5ad of one modality, or "
        "a 10x Cell Ranger ARC filtered_feature_bc_matrix.h5. Append :rna or :atac to a "
        ".h5ad to say its modality (guessed from 10x feature types or peak-like names "
        "otherwise). Several inputs are combined into one MuData (scamort.combine), with "
        "obs['dataset'] naming each file's cells",
    )
    _data_arguments(fit)
    _training_arguments(fit)
    _embedding_arguments(fit)
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


def _data_arguments(fit: argparse.ArgumentParser) -> None:
    """Where the data come from and go to, and which modalities they hold."""
    fit.add_argument(
        "--out",
        default=None,
        help="output file (.h5mu for MuData input, 10x input or several inputs; "
        ".h5ad for AnnData input): the input plus obsm['X_scamort*'] (not with --backed)",
    )
    fit.add_argument(
        "--backed",
        action="store_true",
        help="leave the counts on disk and stream them in chunks; the embeddings are "
        "written into INPUT's obsm, chunk by chunk (for data larger than memory; one "
        ".h5mu / .h5ad input)",
    )
    fit.add_argument(
        "--dataset-covariate",
        action="store_true",
        help="with several inputs: use obs['dataset'] (which input a cell came from) as a "
        "categorical covariate, beside --batch-key",
    )
    fit.add_argument(
        "--min-shared",
        type=float,
        default=0.5,
        metavar="FRACTION",
        help="with several inputs: the least fraction of an input's genes (or peaks) the "
        "inputs must share (default 0.5); fewer is an error naming the likely cause",
    )
    fit.add_argument(
        "--modality",
        action="append",
        default=[],
        metavar="NAME=KIND[:LAYER]",
        help="declare a modality of the MuData: its name, its kind of data (rna, atac: "
        "scamort.kinds) and the layer with its raw counts (default .X); repeat for each. With any "
        "declared, exactly those are fitted; without, every modality whose name says its "
        "kind (rna, gex, atac, peaks, ...). For a single .h5ad: KIND[:LAYER] (same as "
        "INPUT:KIND)",
    )
    fit.add_argument("--rna-key", default=None, help="same as --modality NAME=rna")
    fit.add_argument("--atac-key", default=None, help="same as --modality NAME=atac")
    fit.add_argument("--rna-layer", default=None, help="layer with raw RNA counts (default .X)")
    fit.add_argument("--atac-layer", default=None, help="layer with raw ATAC counts")
    fit.add_argument("--batch-key", default=None, help="obs column with the batch")
    fit.add_argument(
        "--save-model",
        default=None,
        metavar="DIR",
        help="also save the model in DIR (new, empty, or holding a saved model with --overwrite)",
    )
    fit.add_argument(
        "--overwrite",
        action="store_true",
        help="let --out replace an input file, and --save-model replace a saved model",
    )


def _training_arguments(fit: argparse.ArgumentParser) -> None:
    """How the model trains, on which devices, with which checkpoints."""
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
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
    fit.add_argument(
        "--epochs",
        "--max-epochs",
        dest="epochs",
        type=_positive(int),
        default=None,
        help="max epochs (default: by size; early stopping usually ends training sooner)",
    )
    fit.add_argument(
        "--n-latent", type=_positive(int), default=20, help="latent dimension (default 20)"
    )
    fit.add_argument(
        "--batch-size", type=_positive(int), default=512, help="cells per minibatch (default 512)"
    )
    fit.add_argument(
        "--lr", type=_positive(float), default=1e-3, help="learning rate (default 0.001)"
    )
    fit.add_argument(
        "--no-early-stopping",
        action="store_true",
        help="train every epoch (default: stop once the held-out ELBO stops improving)",
    )
    fit.add_argument(
        "--final-epochs",
        type=_count,
        default=None,
        metavar="N",
        help="after early stopping, N epochs of the encoders on every cell, held-out ones "
        "included (default: a third of the epochs trained)",
    )
    fit.add_argument(
        "--heldout-encoders",
        action="store_true",
        help="let the cells held out for early stopping train the encoders (not the "
        "decoders) at every step: closer paired views, somewhat less modality mixing "
        "(see docs/design_notes.md)",
    )


def _embedding_arguments(fit: argparse.ArgumentParser) -> None:
    """How the embeddings written back are computed."""
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
    fit.add_argument(
        "--no-prior",
        action="store_true",
        help="embed each cell by its modalities' experts alone, the N(0, I) prior left "
        "out of the product (more modality mixing on some data; not with --refine-steps)",
    )
    fit.add_argument(
        "--peak-sampling",
        type=_peak_sampling,
        default=None,
        metavar="none|F",
        help="score closed peaks during training on a fraction F (< 1) or number F (>= 1) "
        "of the peak columns per minibatch (faster per epoch, lower integration quality "
        "at equal epochs; see docs/speed.md); none (default): every peak",
    )
    fit.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bars (training, refinement) and the summary line",
    )
