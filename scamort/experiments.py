"""Separate experiments in one MuData: paired multiome, RNA-only and ATAC-only data sets.

:func:`combine` is the glue a user would otherwise write: it puts each modality of every
experiment under one name, keeps the features that all experiments measuring that
modality share, concatenates the cells with :func:`anndata.concat`, and builds the
:class:`~mudata.MuData` that ``SCAMORT.setup_mudata`` reads (a cell present in both
modalities is paired, a cell in one is unpaired).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd

from .data.setup import DataError
from .kinds import KINDS, kind_named
from .readers import TENX_TYPES, read

Experiment = md.MuData | ad.AnnData | str | os.PathLike


def guess_modality(adata: ad.AnnData, name: str | None = None) -> str | None:
    """The kind of data (``"rna"``, ``"atac"``, ...) an AnnData holds, or None: by its name
    (``name``), ``var["feature_types"]`` (10x), or its var_names (a kind's
    ``looks_like``: peaks look like ``chr1:100-200``)."""
    said = kind_named(name) if name is not None else None
    if said is not None:
        return said
    if "feature_types" in adata.var:
        types = set(adata.var["feature_types"].astype(str))
        kinds = {TENX_TYPES.get(t) for t in types}
        if len(kinds) == 1 and None not in kinds:
            return kinds.pop()
    names = adata.var_names[:200].astype(str)
    return next((k.name for k in KINDS.values() if k.looks_like and k.looks_like(names)), None)


def combine(
    experiments: Mapping[str, Experiment] | Sequence[Experiment],
    modalities: Mapping[str, str] | Sequence[str | None] | None = None,
    dataset_key: str = "dataset",
    names: Mapping[str, str] | None = None,
    rna_key: str | None = None,
    atac_key: str | None = None,
    min_shared: float = 0.5,
) -> md.MuData:
    """One MuData from separate experiments, ready for ``SCAMORT.setup_mudata``.

    Parameters
    ----------
    experiments
        ``{name: data}`` or a list (named ``dataset_0``, ``dataset_1``, ... or by file
        stem). Each is a MuData (paired or not), an AnnData of one modality, or a path
        to a ``.h5mu``, ``.h5ad`` or 10x ``.h5`` file. Counts are taken from ``.X``.
    modalities
        For AnnData experiments: ``"rna"`` or ``"atac"`` (a mapping by name, or a list in
        the order of ``experiments``; None entries are guessed). Unset, the modality is
        guessed from 10x ``var["feature_types"]`` or peak-like var_names (``chr1:1-2``);
        an AnnData whose modality cannot be guessed is an error. A MuData's modalities
        are taken by their names (``rna``, ``atac``, ``gex``, ``peaks``, ...) or guessed
        from their content the same way.
    dataset_key
        The ``obs`` column that names each cell's experiment (a categorical). Pass it to
        ``setup_mudata(categorical_covariate_keys=[dataset_key])`` to use it as a
        covariate, or as ``batch_key``. An existing column of that name is replaced.
    names
        The name of each kind's modality in the result, ``{kind: name}`` (default: the
        kind's name, ``rna``, ``atac``). ``rna_key`` / ``atac_key`` still work in this
        release (deprecated).
    min_shared
        The least fraction of an experiment's features of a kind that the experiments
        must share. Fewer is a :class:`~scamort.DataError` that names the likely cause
        (names that differ in case, Ensembl IDs against symbols, version suffixes, peaks
        written differently); pass a lower value when the panels truly differ.

    Returns
    -------
    A new MuData (the inputs are not modified) with, per modality, the cells of every
    experiment that has it, over the features shared by all of them, in the order of the
    first. How many features each experiment lost is said in one warning and kept in
    ``uns["scamort_combine"]``. The global ``obs`` holds ``dataset_key`` and every cell
    annotation of the experiments (the union of their columns; missing values are NaN).

    An annotation whose values have different types in different experiments (``1`` in
    one, ``"d2"`` in another) is held as strings, so that the result can be written.

    Cell names: kept as they are when they are unique across experiments; when any name
    occurs in two experiments, every cell is renamed ``<name>-<dataset>`` (anndata's
    ``index_unique="-"``), so paired cells keep one name in both modalities.
    """
    named = _named(experiments)
    kinds = _modalities(named, modalities)
    out_names = _out_names(names, rna_key, atac_key)
    parts: dict[str, dict[str, ad.AnnData]] = {k: {} for k in KINDS}
    tables = {}
    for name, data in named.items():
        for kind, adata in _split(name, data, kinds.get(name)).items():
            parts[kind][name] = adata
        tables[name] = _cell_table(data)
    clash = _names_clash(tables)
    suffix = (lambda name: f"-{name}") if clash else (lambda name: "")
    mods, dropped = {}, {}
    for kind, pieces in parts.items():
        if not pieces:
            continue
        shared = _shared_features(kind, pieces, min_shared)
        subset = {}
        for name, a in pieces.items():
            if a.n_vars > len(shared):
                dropped.setdefault(kind, {})[name] = int(a.n_vars - len(shared))
            a = a[:, shared].copy()
            a.obs = a.obs.drop(columns=dataset_key, errors="ignore")
            a.obs_names = a.obs_names.astype(str) + suffix(name)
            subset[name] = a
        mods[out_names[kind]] = ad.concat(subset, join="outer", label=dataset_key, merge="same")
        mods[out_names[kind]].obs[dataset_key] = pd.Categorical(
            mods[out_names[kind]].obs[dataset_key], categories=list(named)
        )
    if not mods:
        raise DataError(f"no experiment holds counts of a kind scamort models ({sorted(KINDS)}).")
    obs = pd.concat(
        [
            t.drop(columns=dataset_key, errors="ignore")
            .set_axis(t.index.astype(str) + suffix(n))
            .assign(**{dataset_key: n})
            for n, t in tables.items()
        ]
    )
    obs[dataset_key] = pd.Categorical(obs[dataset_key], categories=list(named))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        out = md.MuData(mods)
    out.obs = _one_type_per_column(obs.loc[out.obs_names])
    for a in out.mod.values():
        a.obs = _one_type_per_column(a.obs)
    if dropped:
        _warn_dropped(dropped, {k: mods[out_names[k]].n_vars for k in dropped}, out_names)
    out.uns["scamort_combine"] = {
        "datasets": list(named),
        "renamed_cells": clash,
        "dropped_features": dropped,
    }
    return out


def _one_type_per_column(obs: pd.DataFrame) -> pd.DataFrame:
    """``obs`` with every column whose values are of several types (an int in one
    experiment and a str in another) holding them as strings, so that the result can be
    written to .h5mu (missing values stay missing)."""
    obs = obs.copy()
    for col in obs.select_dtypes(include="object").columns:
        present = obs[col].dropna()
        if present.map(type).nunique() > 1:
            obs[col] = obs[col].map(lambda v: v if pd.isna(v) else str(v))
    return obs


def _names_clash(tables: dict[str, pd.DataFrame]) -> bool:
    """Whether a cell name occurs in two experiments."""
    cells = pd.DataFrame(
        {
            "cell": np.concatenate([t.index.astype(str) for t in tables.values()]),
            "dataset": np.repeat(list(tables), [len(t) for t in tables.values()]),
        }
    )
    return bool(cells.drop_duplicates()["cell"].duplicated().any())


def _warn_dropped(dropped: dict, kept: dict, out_names: dict) -> None:
    """One warning: per kind, the features kept and those each experiment lost."""
    said = "; ".join(
        f"{out_names[k]}: kept {kept[k]} shared features, dropped "
        + ", ".join(f"{v} of {n!r}" for n, v in d.items())
        for k, d in dropped.items()
    )
    warnings.warn(f"combine: features not measured in every experiment: {said}.", stacklevel=3)


def _named(experiments) -> dict[str, md.MuData | ad.AnnData]:
    if isinstance(experiments, (md.MuData, ad.AnnData, str, os.PathLike)):
        raise TypeError("combine takes a list or dict of experiments, e.g. combine([a, b]).")
    if isinstance(experiments, Mapping):
        items = list(experiments.items())
    else:
        items = []
        for i, e in enumerate(experiments):
            name = os.path.splitext(os.path.basename(e))[0] if _is_path(e) else f"dataset_{i}"
            items.append((name, e))
    names = [str(n) for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment names must be unique, got {names}.")
    if not items:
        raise ValueError("combine needs at least one experiment.")
    return {str(n): read(e) if _is_path(e) else e for n, e in items}


def _out_names(names, rna_key, atac_key) -> dict[str, str]:
    """The result's modality name of every kind (``names``, the deprecated keys, or the
    kind's own name)."""
    out = {k: k for k in KINDS}
    for kind, key in (("rna", rna_key), ("atac", atac_key)):
        if key is not None:
            warnings.warn(
                f"combine({kind}_key=...) is deprecated and will be removed in the next "
                f"release; use combine(..., names={{{kind!r}: {key!r}}}).",
                DeprecationWarning,
                stacklevel=3,
            )
            out[kind] = key
    unknown = sorted(set(names or {}) - set(KINDS))
    if unknown:
        raise ValueError(f"names has unknown kinds {unknown}; kinds are {sorted(KINDS)}.")
    out.update(names or {})
    if len(set(out.values())) < len(out):
        raise ValueError(f"the modality names must differ, got {out}.")
    return out


def _is_path(e) -> bool:
    return isinstance(e, (str, os.PathLike))


def _modalities(named, modalities) -> dict[str, str]:
    if modalities is None:
        return {}
    if isinstance(modalities, Mapping):
        unknown = sorted(set(modalities) - set(named))
        if unknown:
            raise ValueError(
                f"modalities names unknown experiments {unknown} (have {list(named)})."
            )
        out = dict(modalities)
    else:
        if len(modalities) != len(named):
            raise ValueError(
                f"modalities has {len(modalities)} entries for {len(named)} experiments."
            )
        out = {n: k for n, k in zip(named, modalities) if k is not None}
    for n, k in out.items():
        if k not in KINDS:
            raise ValueError(f"modality of {n!r} must be one of {sorted(KINDS)}, got {k!r}.")
    return out


def _split(name: str, data, kind: str | None) -> dict[str, ad.AnnData]:
    """The experiment's AnnData per kind."""
    if isinstance(data, ad.AnnData):
        kind = kind or guess_modality(data, name)
        if kind is None:
            raise DataError(
                f"cannot tell whether experiment {name!r} holds RNA or ATAC; say it, e.g. "
                f"combine(..., modalities={{{name!r}: 'rna'}}) or scamort fit FILE:rna."
            )
        return {kind: data}
    if not isinstance(data, md.MuData):
        raise TypeError(f"experiment {name!r} is a {type(data).__name__}, not MuData/AnnData.")
    if kind is not None:
        raise ValueError(f"experiment {name!r} is a MuData: its modalities are named already.")
    out = {}
    for m, a in data.mod.items():
        k = guess_modality(a, m)
        if k is None:
            raise DataError(
                f"cannot tell whether modality {m!r} of experiment {name!r} holds RNA or "
                f"ATAC; rename it, e.g. mdata.mod['rna'] = mdata.mod.pop({m!r})."
            )
        if k in out:
            raise DataError(f"experiment {name!r} has two {k} modalities; keep one of them.")
        out[k] = a
    return out


def _cell_table(data) -> pd.DataFrame:
    """Per cell, the experiment's annotations (a MuData's global obs, minus the
    'mod:column' copies mudata makes, plus each modality's own columns)."""
    if isinstance(data, ad.AnnData):
        return data.obs.copy()
    obs = data.obs.loc[:, [c for c in data.obs.columns if ":" not in str(c)]].copy()
    for a in data.mod.values():
        extra = [c for c in a.obs.columns if c not in obs.columns]
        if extra:
            col = a.obs[extra]
            obs = obs.join(col[~col.index.duplicated()], how="left")
    return obs


def _shared_features(kind: str, pieces: dict[str, ad.AnnData], min_shared: float) -> pd.Index:
    for n, a in pieces.items():
        if not a.var_names.is_unique:
            dup = a.var_names[a.var_names.duplicated()].unique()[:3].tolist()
            raise DataError(
                f"experiment {n!r} has duplicate {kind} feature names (e.g. {dup}); make "
                "them unique (adata.var_names_make_unique()) before combining."
            )
    first = next(iter(pieces.values())).var_names
    shared = first
    for a in pieces.values():
        shared = shared[shared.isin(a.var_names)]
    worst = min(pieces, key=lambda n: len(shared) / max(pieces[n].n_vars, 1))
    if len(shared) == 0 or len(shared) < min_shared * pieces[worst].n_vars:
        examples = ", ".join(f"{n}: e.g. {a.var_names[:2].tolist()}" for n, a in pieces.items())
        raise DataError(
            f"the experiments holding {kind} share {len(shared)} feature names, "
            f"{len(shared) / max(pieces[worst].n_vars, 1):.0%} of {worst!r}'s "
            f"{pieces[worst].n_vars} ({examples}). {_likely_cause(pieces)}"
            + (
                f" If the experiments truly measured different features, pass min_shared= "
                f"(now {min_shared}; --min-shared) lower to keep the {len(shared)} they share."
                if len(shared)
                else ""
            )
        )
    return shared


def _likely_cause(pieces: dict[str, ad.AnnData]) -> str:
    """Why experiments share few feature names, guessed from how their names differ."""
    names = {n: pd.Index(a.var_names.astype(str)) for n, a in pieces.items()}

    def overlap(f) -> int:
        sets = [set(map(f, v)) for v in names.values()]
        return len(set.intersection(*sets))

    plain = overlap(lambda x: x)
    ensembl = {n: float(v.str.match(r"ENS[A-Z]*G\d").mean()) for n, v in names.items()}
    if max(ensembl.values()) > 0.5 > min(ensembl.values()):
        ids = [n for n, f in ensembl.items() if f > 0.5]
        column = _column_with_names(pieces, names)
        fix = (
            f" adata.var_names = adata.var[{column[1]!r}] of {column[0]!r} gives them one kind"
            if column
            else ""
        )
        return (
            f"Likely cause: {ids} name features by Ensembl ID and the others by symbol; "
            f"use one kind of name in all.{fix}"
        )
    if overlap(str.upper) > 2 * plain:
        return (
            "Likely cause: the names differ in case (e.g. 'Gapdh' against 'GAPDH': mouse "
            "against human symbols, or a tool that upper-cases); make the case agree, "
            "or map orthologues if the species differ."
        )
    if overlap(lambda x: x.split(".")[0]) > 2 * plain:
        return (
            "Likely cause: the IDs carry version suffixes in some experiments (ENSG...1.5 "
            "against ENSG...1); strip them (var_names.str.split('.').str[0])."
        )
    if overlap(lambda x: x.replace("-", ":").replace("_", ":")) > 2 * plain:
        return (
            "Likely cause: the peaks are written differently (chr1:100-200 against "
            "chr1-100-200 or chr1_100_200); write them one way."
        )
    if all(v.str.match(r"(chr)?[0-9XYMT]+[:_-]\d+[-_]\d+").mean() > 0.5 for v in names.values()):
        return (
            "Likely cause: the peaks were called separately; call them once on all "
            "experiments (or map each experiment's fragments onto one peak set)."
        )
    return "Likely cause: different panels or references (genome annotation versions)."


def _column_with_names(pieces, names) -> tuple[str, str] | None:
    """(experiment, var column) whose values are the names another experiment uses."""
    for n, a in pieces.items():
        others = set().union(*(set(v) for m, v in names.items() if m != n))
        for col in a.var.columns:
            values = a.var[col].astype(str)
            if values.isin(others).mean() > 0.5:
                return n, col
    return None
