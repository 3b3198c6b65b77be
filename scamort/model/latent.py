"""Latent spaces: joint and single-modality embeddings, refined or amortized."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from .._checks import check_option
from ..data import DataError
from ..data.backed import BackedCells
from ..data.setup import Data
from ..module import refine
from ..nn.covariates import batch_codes
from ..nn.sparse import host_index_on
from .inference import Inference, nan_rows


def get_latent_representation(
    self,
    data: Data | None = None,
    modality: str = "joint",
    indices: np.ndarray | None = None,
    give_mean: bool = True,
    batch_size: int = 1024,
    refine_steps: int | Literal["auto"] = 0,
    refine_lr: float = 0.05,
    refine_samples: int = 1,
    refine_tol: float | None = None,
    return_elbo: bool = False,
    seed: int = 0,
    paired: Literal["auto", "product", "average"] = "auto",
    prior: bool | Literal["auto"] = True,
    refine_cells: Literal["auto", "all", "unpaired"] = "auto",
    progress_bar: bool = True,
) -> np.ndarray | tuple[np.ndarray, pd.DataFrame]:
    """Posterior of z for each cell, shape (n_cells, n_latent).

    ``modality="joint"`` uses every modality the cell has (product of experts).
    ``modality="rna"`` / ``"atac"`` uses that one expert with the prior; rows of cells
    lacking that modality are NaN. ``give_mean=False`` draws one sample instead.

    ``refine_steps=K > 0`` refines each cell's posterior by K Adam steps on its own
    ELBO with the model frozen (semi-amortized inference), vectorised over blocks of
    ``batch_size`` cells; ``refine_lr``, ``refine_samples`` (draws per step) and
    ``refine_tol`` (stop when no parameter moves more) tune it. For a single-modality
    latent, the ELBO scores that modality only. Each cell draws its noise from its
    own stream (``seed`` and its name), so its refined embedding does not depend on
    the other cells embedded with it. ``return_elbo=True`` also returns a
    DataFrame with each cell's ``elbo_amortized`` and ``elbo_refined`` (16 common
    draws; NaN where the cell lacks the modality). ``refine_steps=0``: the amortized
    embedding (the encoders' output alone, fastest).

    ``refine_cells`` says which cells are refined: ``"all"``, or ``"unpaired"``, the
    cells measured in one modality (for a single-modality latent: the cells with that
    modality alone); every other cell is embedded as without refinement (``paired``
    as given, ``"average"`` by default). The amortization gap of separate experiments
    sits there: an experiment seen through one modality is read by one encoder alone,
    which places it less well than its own ELBO would, while a paired cell's views
    agree best as the encoders give them (see the benchmarks).

    ``refine_steps="auto"``: the cells refined are the
    one-modality cells of *separate experiments*: batches in which the model was trained
    on no paired cell while other batches had some (an scRNA-seq or scATAC-seq run
    integrated with a multiome), refined 20 steps (``AUTO_REFINE_STEPS``). Data whose
    every batch has paired cells, fully paired data, data without any paired cell, a
    one-modality model and ``prior=False`` get the amortized embedding. With a number
    of steps (or ``return_elbo``), ``refine_cells="auto"`` is ``"all"``. It raises the
    one-modality experiments' mixing with the paired one and costs some of the
    clusters on real data (see the benchmarks), so the default stays ``refine_steps=0``.

    ``paired`` (joint latent only) is how a cell with several modalities is embedded:
    ``"product"``, the product-of-experts posterior (all its evidence at once), or
    ``"average"``, the average of its single-modality posterior means (the equal
    mixture of the posteriors an RNA-only and an ATAC-only cell would get). Product
    posteriors are sharper and sit farther from the origin than single-modality ones,
    so ``"average"`` mixes paired with unpaired cells better (see the benchmarks).
    Cells with one modality get the same embedding either way. Refinement and
    ``return_elbo`` apply to the product posterior. ``"auto"`` (default) is
    ``"average"``, or ``"product"`` when refining or returning the ELBO.

    ``prior`` is whether the standard normal prior is one of the experts multiplied
    into each posterior (True: the posterior the model was trained with). A modality
    whose expert reads a cell less sharply has it drawn nearer the origin, by an amount
    that differs between modalities, which keeps RNA-only and ATAC-only cells apart in
    the embedding; ``False`` embeds each cell by its experts alone (a single-modality
    cell at its expert's mean; a paired cell as ``paired`` says, of the experts). The
    benchmarks compare the two. Refinement and ``return_elbo`` work on the posterior
    and need ``prior=True``; ``"auto"`` is False, or True when refining or returning
    the ELBO.

    A call that lasts more than 2 seconds shows a progress bar (``progress_bar=False``:
    none).
    """
    how = resolve(
        self._inference, modality, paired, prior, refine_steps, refine_cells, return_elbo,
        give_mean=give_mean, batch_size=batch_size, seed=seed,
        lr=refine_lr, samples=refine_samples, tol=refine_tol,
    )  # fmt: skip
    inf = self._inference
    with inf.step(step_label(how), progress_bar):
        return embed(inf, inf.cells_of(data), indices, how)


def step_label(how: Embedding) -> str:
    """The progress bar's label of an embedding."""
    return f"refining posteriors ({how.steps} steps)" if how.steps else "embedding"


# Refinement steps of ``refine_steps="auto"``: the screens of
# docs/design_notes.md refine 20 steps at the default learning rate.
AUTO_REFINE_STEPS = 20


@dataclass(frozen=True)
class Embedding:
    """How cells are embedded, every ``"auto"`` resolved (:func:`resolve`)."""

    modality: str = "joint"
    paired: str = "product"  # "product" or "average"
    prior: bool = True
    give_mean: bool = True
    batch_size: int = 1024
    return_elbo: bool = False
    seed: int = 0
    # refinement: steps (0: none), Adam's lr, draws per step, tolerance, which cells
    # ("all", "unpaired", or "separate": the one-modality cells of unbridged batches)
    steps: int = 0
    lr: float = 0.05
    samples: int = 1
    tol: float | None = None
    refine_cells: str = "all"


def resolve(
    inf: Inference,
    modality: str,
    paired,
    prior,
    refine_steps,
    refine_cells,
    return_elbo: bool,
    **rest,
) -> Embedding:
    """Validate the latent options and resolve their ``"auto"`` values, which interact:
    refining (or returning the ELBO) needs the product posterior with the prior."""
    steps, refine_cells = _refinement(inf, refine_steps, refine_cells, return_elbo, prior)
    refine_paired = (steps > 0 and refine_cells == "all") or return_elbo
    paired = _check_latent_options(inf, modality, paired, refine_paired)
    prior = _check_prior(prior, steps > 0 or return_elbo)
    return Embedding(
        modality=modality,
        paired=paired,
        prior=prior,
        return_elbo=return_elbo,
        steps=steps,
        refine_cells=refine_cells,
        **rest,
    )


def _refinement(inf: Inference, refine_steps, refine_cells: str, return_elbo: bool, prior):
    """Validate ``refine_steps`` and ``refine_cells``; resolve their ``"auto"`` (no
    refinement by default for an embedding without the prior, which refinement needs)."""
    check_option("refine_cells", refine_cells, {"auto", "all", "unpaired"})
    auto = isinstance(refine_steps, str) and refine_steps == "auto"
    if not auto and (
        isinstance(refine_steps, (bool, np.bool_))
        or not isinstance(refine_steps, (int, np.integer))
        or refine_steps < 0
    ):
        raise ValueError(
            f"refine_steps={refine_steps!r} is not valid: pass a number of steps >= 0 "
            "(0: no refinement) or 'auto'."
        )
    if refine_cells == "auto":
        # "separate": the one-modality cells of batches trained without paired cells
        refine_cells = "separate" if auto and not return_elbo else "all"
    if refine_cells == "unpaired" and return_elbo:
        raise ValueError(
            "return_elbo reports every cell's ELBO before and after refinement; with "
            "refine_cells='unpaired' most cells are not refined. Pass refine_cells='all'."
        )
    if auto:
        several = len(inf.spec.modalities) > 1
        if refine_cells == "separate":
            several = several and len(inf.unbridged_batches()) > 0
        no_prior = isinstance(prior, (bool, np.bool_)) and not prior
        wanted = (several or refine_cells == "all") and not no_prior
        refine_steps = AUTO_REFINE_STEPS if wanted or return_elbo else 0
    return int(refine_steps), refine_cells


def _check_prior(prior, refining: bool) -> bool:
    """Validate ``prior``; return it with ``"auto"`` resolved."""
    if not (isinstance(prior, (bool, np.bool_)) or prior == "auto"):
        raise ValueError(f"prior={prior!r} is not valid; choose True, False or 'auto'.")
    if isinstance(prior, str):
        return refining
    if not prior and refining:
        raise ValueError(
            "refinement (refine_steps, return_elbo) works on the posterior, prior "
            "included: pass prior=True (or 'auto') to refine."
        )
    return bool(prior)


def _check_latent_options(inf: Inference, modality: str, paired: str, refining: bool) -> str:
    """Validate the latent options; return ``paired`` with ``"auto"`` resolved."""
    inf.check_modality(modality)
    check_option("paired", paired, {"auto", "product", "average"})
    if modality != "joint" and paired != "auto":
        raise ValueError(
            f"paired={paired!r} is for the joint latent; a {modality!r} latent uses that "
            "modality alone. Leave paired unset."
        )
    if paired == "auto":
        return "product" if refining else "average"
    if paired == "average" and refining:
        raise ValueError(
            "refinement (refine_steps, return_elbo) works on the product-of-experts "
            "posterior: pass paired='product' (or 'auto') to refine."
        )
    return paired


def embed(inf: Inference, cells, indices, how: Embedding):
    """The embedding of ``cells`` (rows ``indices``) as ``how`` says: an (n, D) array, and
    with ``how.return_elbo`` the table of ELBOs before and after refinement."""
    gen = torch.Generator(device=inf.device).manual_seed(how.seed)
    obs = cells.obs_names if indices is None else cells.obs_names[np.asarray(indices)]
    # the training data's separate experiments: read once, not per block
    only = inf.unbridged_batches() if how.refine_cells == "separate" else None
    zs, before, after = [], [], []
    start = 0
    for batch in inf.batches(cells, indices, how.batch_size):
        names = obs[start : start + batch["mask_host"].shape[0]]
        start += len(names)
        with torch.no_grad():
            q = inf.posterior(batch, how.modality, how.paired, how.prior)
        loc, scale = q.loc, q.scale
        if how.refine_cells in ("unpaired", "separate") and how.steps > 0:
            loc, scale = _refine_unpaired(inf, batch, loc, scale, names, how, only)
        elif how.steps > 0 or how.return_elbo:
            r = refine_rows(inf, batch, loc, scale, names, how)
            loc, scale = r.loc, r.scale
            before.append(r.elbo_before)
            after.append(r.elbo_after)
        z = (
            loc
            if how.give_mean
            else loc + scale * torch.randn(loc.shape, generator=gen, device=loc.device)
        )
        has = inf.has(batch, how.modality)
        zs.append(nan_rows(z, has))
        if before:
            before[-1], after[-1] = nan_rows(before[-1], has), nan_rows(after[-1], has)
    z = np.concatenate(zs)
    if not how.return_elbo:
        return z
    table = pd.DataFrame(
        {"elbo_amortized": np.concatenate(before), "elbo_refined": np.concatenate(after)},
        index=obs,
    )
    return z, table


def cell_draws(names, seed: int, like: torch.Tensor):
    """``draws(k)`` for :func:`refine`: (k, N, D) standard-normal draws, each cell's from
    its own stream, seeded by ``seed`` and the cell's name. A cell's refinement then
    depends on the cell, the model and the seed alone, not on which cells share its
    block (embedding a subset gives the same rows as embedding all)."""
    base = (int(seed) % 2**31) << 32
    gens = [torch.Generator().manual_seed(base + zlib.crc32(str(n).encode())) for n in names]
    dim = like.shape[-1]

    def draws(k: int) -> torch.Tensor:
        eps = torch.stack([torch.randn((k, dim), generator=g) for g in gens], 1)
        return eps.to(device=like.device, dtype=like.dtype)

    return draws


def _refine_unpaired(inf: Inference, batch, loc, scale, names, how: Embedding, batches=None):
    """(loc, scale) with the rows of the batch's cells measured in one modality alone
    (and, for a single-modality latent, in that one; with ``batches``, of those batch
    codes) refined; other rows unchanged."""
    has = batch["mask_host"]
    alone = has.sum(1) == 1
    if how.modality != "joint":
        alone &= has[:, inf.spec.modalities.index(how.modality)]
    if batches is not None:
        alone &= np.isin(batch_codes(batch["cov"]).cpu().numpy(), batches)
    rows = np.flatnonzero(alone)
    if rows.size == 0:
        return loc, scale
    idx = host_index_on(rows, loc.device)
    names = np.asarray(names)[rows]
    r = refine_rows(inf, batch, loc[idx], scale[idx], names, how, rows)
    return loc.index_copy(0, idx, r.loc), scale.index_copy(0, idx, r.scale)


def refine_rows(inf: Inference, batch, loc, scale, names, how: Embedding, rows=None):
    """Refine, with the module frozen, the posteriors (loc, scale) of the batch's cells
    at host indices ``rows`` (None: every cell; ``loc``, ``scale`` and ``names`` are
    those cells' already); each cell draws from its own stream (:func:`cell_draws`).
    Returns :func:`refine`'s result."""
    with inf.frozen(), torch.enable_grad():
        return refine(
            inf.log_lik(batch, how.modality, rows),
            loc,
            scale,
            how.steps,
            lr=how.lr,
            n_samples=how.samples,
            tol=how.tol,
            draws=cell_draws(names, how.seed, loc),
            on_step=inf.ticker(len(batch["mask_host"]) if rows is None else len(rows), how.steps),
        )


def write_latent_representation(
    self,
    key: str = "X_scamort",
    data: Data | None = None,
    modality: str = "joint",
    batch_size: int = 1024,
    refine_steps: int | Literal["auto"] = 0,
    refine_lr: float = 0.05,
    seed: int = 0,
    paired: Literal["auto", "product", "average"] = "auto",
    prior: bool | Literal["auto"] = True,
    refine_cells: Literal["auto", "all", "unpaired"] = "auto",
    progress_bar: bool = True,
) -> None:
    """Put the latent means in ``data.obsm[key]``.

    For data opened backed the result goes into the file instead, one chunk of cells
    at a time (``obsm/<key>`` of the AnnData, or of the MuData's global obs), so that
    memory does not grow with the cells; open the file with ``backed="r+"``. Read it
    back with ``read_h5ad`` / ``read_h5mu``. Rows of cells lacking ``modality`` are
    NaN. See :meth:`get_latent_representation` for the arguments.
    """
    how = resolve(
        self._inference, modality, paired, prior, refine_steps, refine_cells, False,
        batch_size=batch_size, seed=seed, lr=refine_lr,
    )  # fmt: skip
    data = self.data if data is None else data
    inf = self._inference
    cells = inf.cells_of(data)
    if not isinstance(cells, BackedCells):
        with inf.step(step_label(how), progress_bar):
            data.obsm[key] = embed(inf, cells, None, how)
        return
    f = _writable_file(data)
    group = f.require_group("obsm")
    if key in group:
        del group[key]
    out = group.create_dataset(key, shape=(cells.n_cells, self.config.n_latent), dtype="f4")
    out.attrs["encoding-type"], out.attrs["encoding-version"] = "array", "0.2.0"
    for start, stop in cells.chunks():
        with inf.step(f"{step_label(how)}, cells {start}-{stop}", progress_bar):
            out[start:stop] = embed(inf, cells, np.arange(start, stop), how)
    f.flush()


def _writable_file(data):
    """The open h5py file behind backed data, if it was opened for writing."""
    manager = getattr(data, "file", None)
    f = getattr(manager, "_file", None)
    if f is None or not f:
        raise DataError("the data are not backed by an open file.")
    if f.mode != "r+":
        raise DataError(
            f"{f.filename} is open read-only: open it with backed='r+' to write results into it."
        )
    return f
