"""The ``scamort`` command: ``scamort fit`` and ``scamort demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_PACKAGE = str(Path(__file__).resolve().parent)


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


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return number


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="scamort", description=__doc__)
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
        "(see docs/benchmarks.md)",
    )
    fit.add_argument("--batch-key", default=None, help="obs column with the batch")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--accelerator", choices=["auto", "cpu", "gpu"], default="auto")
    fit.add_argument("--save-model", default=None, metavar="DIR", help="also save the model")
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


def _input(arg: str) -> tuple[str, str | None]:
    """``path`` or ``path:KIND`` (``path:rna``, ``path:atac``) -> (path, kind or None)."""
    from .kinds import KINDS

    path, sep, kind = arg.rpartition(":")
    if sep and kind in KINDS:
        return path, kind
    return arg, None


def _declared(specs: list[str]) -> tuple[dict[str, tuple[str, str | None]], list]:
    """``--modality`` values: ``NAME=KIND[:LAYER]`` -> {name: (kind, layer)}, and the
    ``KIND[:LAYER]`` of a single .h5ad as a list of (kind, layer)."""
    from .kinds import KINDS

    named, bare = {}, []
    for spec in specs:
        name, eq, rest = spec.rpartition("=")
        kind, _, layer = rest.partition(":")
        if kind not in KINDS or (eq and not name):
            raise UsageError(
                f"--modality {spec}: expected NAME=KIND[:LAYER] (or KIND[:LAYER] for a single "
                f".h5ad), KIND one of {sorted(KINDS)}."
            )
        if eq and name in named:
            raise UsageError(f"--modality declares {name!r} twice.")
        if eq:
            named[name] = (kind, layer or None)
        else:
            bare.append((kind, layer or None))
    return named, bare


def _check_args(args) -> None:
    if args.backed == (args.out is not None):
        raise UsageError("pass either --out FILE or --backed (results written into INPUT).")
    if args.no_prior and args.refine_steps > 0:
        raise UsageError(
            "--refine-steps refines the posterior, prior included: drop --no-prior to "
            "refine, or --refine-steps to embed without the prior."
        )
    if args.paired == "average" and args.refine_steps > 0:
        raise UsageError(
            "--refine-steps refines the product-of-experts posterior: use --paired auto or "
            "product with it, or drop --refine-steps for --paired average."
        )
    named, bare = _declared(args.modality)
    if len(bare) > 1 or (bare and named):
        raise UsageError(
            "--modality KIND[:LAYER] names the kind of a single .h5ad input; declare a "
            "MuData's modalities as --modality NAME=KIND[:LAYER]."
        )
    if len(args.input) > 1:
        if args.backed:
            raise UsageError("--backed takes one input file; combine the files first.")
        if args.modality:
            raise UsageError(
                "with several inputs, say each .h5ad's kind as FILE:rna (the combined "
                "modalities are named after their kinds)."
            )
    elif args.dataset_covariate:
        raise UsageError("--dataset-covariate needs several inputs.")
    if args.resume and args.checkpoint_dir is None:
        raise UsageError("--resume needs --checkpoint-dir DIR.")


def _load(args):
    """The data to fit (read, or several inputs combined) and whether it is a MuData."""
    from mudata import MuData

    from .experiments import combine
    from .readers import ReadError, file_kind, read

    inputs = [_input(a) for a in args.input]
    if len(inputs) == 1:
        path, kind = inputs[0]
        _, bare = _declared(args.modality)
        kind = kind or (bare[0][0] if bare else None)
        if kind is not None and file_kind(path) != "anndata":
            raise UsageError(
                f"{path}: a kind (:{kind} / --modality {kind}) is for .h5ad inputs; declare a "
                "MuData's modalities as --modality NAME=KIND[:LAYER]."
            )
        data = read(path, backed="r+" if args.backed else None)
        if isinstance(data, MuData):
            return data, True
        if kind is None:
            from .experiments import guess_modality

            kind = guess_modality(data)
            if kind is None:
                raise ReadError(
                    path,
                    "cannot tell whether it holds RNA or ATAC; say it with --modality rna "
                    f"(or atac), or as {path}:rna.",
                )
        args.kind = kind
        return data, False
    names = {"rna": args.rna_key, "atac": args.atac_key}
    data = combine(
        {_unique_stem(p, inputs): p for p, _ in inputs},
        modalities=[k for _, k in inputs],
        names={k: v for k, v in names.items() if v is not None},
    )
    return data, True


def _unique_stem(path: str, inputs) -> str:
    """The file's stem, or its path where two inputs share a stem."""
    stems = [Path(p).stem for p, _ in inputs]
    stem = Path(path).stem
    return stem if stems.count(stem) == 1 else path


def _mudata_modalities(data, args, source: str) -> dict:
    """The modalities of the MuData to fit, as declared (``--modality``; the old
    ``--rna-key`` / ``--atac-key``), or every one whose name says its kind; with the
    layer flags and ``--peak-sampling`` applied."""
    from .kinds import Modality, kind_named
    from .readers import ReadError

    have = list(data.mod)
    named, _ = _declared(args.modality)
    old = {"rna": args.rna_key, "atac": args.atac_key}
    if not named and any(old.values()):
        # the old flags: an unnamed kind is fitted under its own name where the file has it
        old = {k: key or (k if k in have else None) for k, key in old.items()}
        named = {key: (k, None) for k, key in old.items() if key is not None}
    if named:
        missing = [m for m in named if m not in have]
        if missing:
            raise ReadError(
                source,
                f"it has no modality {missing[0]!r} (it has {have}); declare one of them, "
                "e.g. --modality NAME=rna.",
            )
    else:
        named = {m: (kind_named(m), None) for m in have}
        unknown = [m for m, (k, _) in named.items() if k is None]
        if unknown:
            raise ReadError(
                source,
                f"cannot tell the kind of data of modality {unknown[0]!r} from its name (it "
                f"has {have}); declare the modalities to fit, e.g. --modality "
                f"{unknown[0]}=rna (only the declared ones are then fitted).",
            )
    layers = {"rna": args.rna_layer, "atac": args.atac_layer}
    out = {}
    for m, (kind, layer) in named.items():
        declared = Modality(kind, layer or layers.get(kind))
        out[m] = _with_peak_sampling(declared, args.peak_sampling)
    return out


def _with_peak_sampling(declared, peak_sampling):
    """The declaration with ``--peak-sampling`` set, where its kind has the option."""
    if peak_sampling is None or "peak_sampling" not in declared.entry.options.names():
        return declared
    return declared.with_options(peak_sampling=peak_sampling)


def fit(args) -> None:
    from ._io import write_atomic
    from .kinds import Modality
    from .model import SCAMORT

    _check_args(args)
    data, is_mudata = _load(args)
    expected = ".h5mu" if is_mudata else ".h5ad"
    if args.out is not None and Path(args.out).suffix != expected:
        raise UsageError(
            f"--out must end in {expected} for {'a MuData' if is_mudata else 'an AnnData'}."
        )
    covariates = ["dataset"] if args.dataset_covariate else None
    if is_mudata:
        source = args.input[0] if len(args.input) == 1 else "the combined inputs"
        SCAMORT.setup_mudata(
            data,
            modalities=_mudata_modalities(data, args, source),
            batch_key=args.batch_key,
            categorical_covariate_keys=covariates,
        )
    else:
        _, bare = _declared(args.modality)
        layer = (bare[0][1] if bare else None) or getattr(args, f"{args.kind}_layer", None)
        declared = _with_peak_sampling(Modality(args.kind, layer), args.peak_sampling)
        SCAMORT.setup_anndata(data, modality=declared, batch_key=args.batch_key)
    model = SCAMORT(data, seed=args.seed)
    model.train(
        max_epochs=args.epochs,
        early_stopping=False if args.no_early_stopping else "auto",
        final_epochs=args.final_epochs,
        accelerator=args.accelerator,
        seed=args.seed,
        progress_bar=not args.no_progress,
        devices=args.devices,
        strategy=args.strategy,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        heldout_encoders=args.heldout_encoders,
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
            key,
            modality=m,
            refine_steps=steps,
            seed=args.seed,
            paired=args.paired if m == "joint" else "auto",
            prior=not args.no_prior,
        )
    if not args.backed:
        write_atomic(data, args.out)
    if args.save_model:
        model.save(args.save_model, overwrite=True)
    print(f"wrote {args.input[0] if args.backed else args.out}: obsm {sorted(keys)}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import warnings

    from .data import DataError, EmptyFeaturesWarning

    def show(message, category, filename, lineno, file=None, line=None):
        # the package's own warnings as one line, like its errors
        if issubclass(category, EmptyFeaturesWarning) or filename.startswith(_PACKAGE):
            print(f"scamort {args.command}: warning: {message}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    default_show = warnings.showwarning
    warnings.showwarning = show

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
    except (DataError, UsageError) as err:  # the user's data or command line; bugs show
        print(f"scamort {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = default_show
    return 0


if __name__ == "__main__":
    sys.exit(main())
