"""The ``scamort`` command: ``scamort fit`` and ``scamort demo``."""

from __future__ import annotations

import sys
from pathlib import Path

from ._cli_args import UsageError, _parser
from ._cli_outputs import check_outputs

_PACKAGE = str(Path(__file__).resolve().parent)


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
    # parsed once here: ``args.declared`` {name: (kind, layer)}, ``args.bare`` [(kind, layer)]
    args.declared, args.bare = named, bare = _declared(args.modality)
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
        kind = kind or (args.bare[0][0] if args.bare else None)
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
        min_shared=args.min_shared,
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
    from .kinds import KINDS, Modality, kind_named
    from .readers import ReadError

    have = list(data.mod)
    named = dict(args.declared)
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
                f"{unknown[0]}=KIND with KIND one of {sorted(KINDS)} (only the declared "
                "ones are then fitted).",
            )
    out = {}
    for m, (kind, layer) in named.items():
        declared = Modality(kind, layer or _old_layer(args, kind))
        out[m] = _with_peak_sampling(declared, args.peak_sampling)
    return out


def _old_layer(args, kind: str) -> str | None:
    """The layer the old ``--rna-layer`` / ``--atac-layer`` flags give a modality of
    ``kind`` (None: unset)."""
    return {"rna": args.rna_layer, "atac": args.atac_layer}.get(kind)


def _with_peak_sampling(declared, peak_sampling):
    """The declaration with ``--peak-sampling`` set, where its kind has the option."""
    if peak_sampling is None or "peak_sampling" not in declared.entry.options.names():
        return declared
    return declared.with_options(peak_sampling=peak_sampling)


def fit(args) -> None:
    from ._io import write_atomic

    _check_args(args)
    check_outputs(args, [Path(p) for p, _ in map(_input, args.input)])  # before any work
    data, is_mudata = _load(args)
    expected = ".h5mu" if is_mudata else ".h5ad"
    if args.out is not None and Path(args.out).suffix != expected:
        raise UsageError(
            f"--out must end in {expected} for {'a MuData' if is_mudata else 'an AnnData'}."
        )
    model = _setup_and_train(data, is_mudata, args)
    if model.global_rank != 0:  # other ranks of a distributed run write nothing
        return
    keys = _write_embeddings(model, data, is_mudata, args)
    if not args.backed:
        write_atomic(data, args.out)
    if args.save_model:
        model.save(args.save_model, overwrite=True)
    print(f"wrote {args.input[0] if args.backed else args.out}: obsm {sorted(keys)}")


def _setup_and_train(data, is_mudata: bool, args):
    """The data registered as the arguments declare it, and a model trained on it."""
    from .kinds import Modality
    from .model import SCAMORT

    if is_mudata:
        source = args.input[0] if len(args.input) == 1 else "the combined inputs"
        SCAMORT.setup_mudata(
            data,
            modalities=_mudata_modalities(data, args, source),
            batch_key=args.batch_key,
            categorical_covariate_keys=["dataset"] if args.dataset_covariate else None,
        )
    else:
        layer = (args.bare[0][1] if args.bare else None) or _old_layer(args, args.kind)
        declared = _with_peak_sampling(Modality(args.kind, layer), args.peak_sampling)
        SCAMORT.setup_anndata(data, modality=declared, batch_key=args.batch_key)
    model = SCAMORT(data, n_latent=args.n_latent, seed=args.seed)
    return model.train(
        max_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
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


def _write_embeddings(model, data, is_mudata: bool, args) -> dict:
    """The joint embedding (and, for a MuData, each modality's) in ``data.obsm``, or in
    the file of backed data; returns the obsm keys written, with their modalities."""
    keys = {"X_scamort": "joint"}
    if is_mudata:
        keys.update({f"X_scamort_{m}": m for m in model.spec.modalities})
    todo = dict(keys)
    if args.refine_steps > 0 and not args.backed:
        # in a copy of the input, the per-cell ELBOs before / after refinement go to obs
        z, elbos = model.get_latent_representation(
            refine_steps=args.refine_steps, return_elbo=True, seed=args.seed, paired=args.paired,
            progress_bar=not args.no_progress,
        )  # fmt: skip
        data.obs["elbo_amortized"] = elbos["elbo_amortized"].to_numpy()
        data.obs["elbo_refined"] = elbos["elbo_refined"].to_numpy()
        data.obsm["X_scamort"] = z
        del todo["X_scamort"]
    # backed input: written into the file chunk by chunk; otherwise into data.obsm
    for key, m in todo.items():
        model.write_latent_representation(
            key,
            modality=m,
            refine_steps=args.refine_steps if m == "joint" else 0,
            seed=args.seed,
            paired=args.paired if m == "joint" else "auto",
            prior=not args.no_prior,
            progress_bar=not args.no_progress,
        )
    return keys


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import warnings

    from .data import DataError, DataWarning, EmptyFeaturesWarning

    def show(message, category, filename, lineno, file=None, line=None):
        # the package's own warnings as one line, like its errors
        ours = issubclass(category, (EmptyFeaturesWarning, DataWarning))
        if ours or filename.startswith(_PACKAGE):
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
    except KeyboardInterrupt as stop:  # Ctrl+C, or a scheduler's SIGTERM while training
        from .model.training import TrainingInterrupted

        if isinstance(stop, TrainingInterrupted):
            print(f"scamort {args.command}: {stop} Nothing else was written.", file=sys.stderr)
            return stop.exit_status
        print(f"scamort {args.command}: interrupted; nothing was written.", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = default_show
    return 0


if __name__ == "__main__":
    sys.exit(main())
