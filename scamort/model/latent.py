"""Latent spaces: joint and single-modality embeddings, refined or amortized."""

from __future__ import annotations

import zlib
from typing import Literal

import numpy as np
import pandas as pd
import torch

from ..data import (
    DataError,
)
from ..data.backed import BackedCells
from ..data.cells import batches_without_paired
from ..data.setup import Data
from ..module import refine
from ..module.config import check_option
from ..nn.sparse import host_index_on
from .access import (
    _frozen,
    _nan_rows,
)


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
    """
    refine_steps, refine_cells = self._refinement(refine_steps, refine_cells, return_elbo, prior)
    refine_paired = (refine_steps > 0 and refine_cells == "all") or return_elbo
    paired = self._check_latent_options(modality, paired, refine_paired)
    prior = self._check_prior(prior, refine_steps > 0 or return_elbo)
    return self._latent(
        self._cell_data(data),
        modality,
        indices,
        give_mean,
        batch_size,
        refine_steps,
        refine_lr,
        refine_samples,
        refine_tol,
        return_elbo,
        seed,
        paired,
        prior,
        refine_cells,
    )


# Refinement steps of ``refine_steps="auto"``: the screens of
# docs/benchmarks.md refine 20 steps at the default learning rate.
AUTO_REFINE_STEPS = 20


def _refinement(self, refine_steps, refine_cells: str, return_elbo: bool, prior) -> tuple[int, str]:
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
        several = len(self.spec.modalities) > 1
        if refine_cells == "separate":
            several = several and len(self._unbridged_batches()) > 0
        no_prior = isinstance(prior, (bool, np.bool_)) and not prior
        wanted = (several or refine_cells == "all") and not no_prior
        refine_steps = AUTO_REFINE_STEPS if wanted or return_elbo else 0
    return int(refine_steps), refine_cells


def _unbridged_batches(self) -> np.ndarray:
    """Codes of the batches in which the model was trained on no paired cell while
    other batches had some: separate one-modality experiments (empty when every batch
    has paired cells, or no training cell is paired)."""
    cells = self._cells
    codes = np.asarray(cells.cov[:, 0])
    without = batches_without_paired(cells.mask, codes)
    return without if len(without) < len(np.unique(codes)) else without[:0]


def _check_prior(self, prior, refining: bool) -> bool:
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


def _check_latent_options(self, modality: str, paired: str, refining: bool) -> str:
    """Validate the latent options; return ``paired`` with ``"auto"`` resolved."""
    self._check_modality(modality)
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


def _latent(
    self,
    cells,
    modality,
    indices,
    give_mean,
    batch_size,
    refine_steps,
    refine_lr,
    refine_samples,
    refine_tol,
    return_elbo,
    seed,
    paired="product",
    prior=True,
    refine_cells="all",
):
    gen = torch.Generator(device=self.device).manual_seed(seed)
    obs = cells.obs_names if indices is None else cells.obs_names[np.asarray(indices)]
    # the training data's separate experiments: read once, not per block
    only = self._unbridged_batches() if refine_cells == "separate" else None
    zs, before, after = [], [], []
    start = 0
    for batch in self._batches(cells, indices, batch_size):
        names = obs[start : start + batch["mask_host"].shape[0]]
        start += len(names)
        with torch.no_grad():
            q = self._posterior(batch, modality, paired, prior)
        loc, scale = q.loc, q.scale
        how = (refine_steps, refine_lr, refine_samples, refine_tol, names, seed)
        if refine_cells in ("unpaired", "separate") and refine_steps > 0:
            loc, scale = self._refine_unpaired(batch, modality, loc, scale, *how, only)
        elif refine_steps > 0 or return_elbo:
            r = self._refine_rows(batch, modality, loc, scale, *how)
            loc, scale = r.loc, r.scale
            before.append(r.elbo_before)
            after.append(r.elbo_after)
        z = (
            loc
            if give_mean
            else loc + scale * torch.randn(loc.shape, generator=gen, device=loc.device)
        )
        has = self._has(batch, modality)
        zs.append(_nan_rows(z, has))
        if before:
            before[-1], after[-1] = _nan_rows(before[-1], has), _nan_rows(after[-1], has)
    z = np.concatenate(zs)
    if not return_elbo:
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


def _refine_unpaired(
    self, batch, modality, loc, scale, steps, lr, samples, tol, names, seed, batches=None
):
    """(loc, scale) with the rows of the batch's cells measured in one modality alone
    (and, for a single-modality latent, in that one; with ``batches``, of those batch
    codes) refined; other rows unchanged."""
    has = batch["mask_host"]
    alone = has.sum(1) == 1
    if modality != "joint":
        alone &= has[:, self.spec.modalities.index(modality)]
    if batches is not None:
        alone &= np.isin(batch["cov"][:, 0].cpu().numpy(), batches)
    rows = np.flatnonzero(alone)
    if rows.size == 0:
        return loc, scale
    idx = host_index_on(rows, loc.device)
    names = np.asarray(names)[rows]
    r = self._refine_rows(
        batch, modality, loc[idx], scale[idx], steps, lr, samples, tol, names, seed, rows
    )
    return loc.index_copy(0, idx, r.loc), scale.index_copy(0, idx, r.scale)


def _refine_rows(
    self, batch, modality, loc, scale, steps, lr, samples, tol, names, seed, rows=None
):
    """Refine, with the module frozen, the posteriors (loc, scale) of the batch's cells
    at host indices ``rows`` (None: every cell; ``loc``, ``scale`` and ``names`` are
    those cells' already); each cell draws from its own stream (:func:`cell_draws`).
    Returns :func:`refine`'s result."""
    with _frozen(self.module), torch.enable_grad():
        return refine(
            self._log_lik(batch, modality, rows),
            loc,
            scale,
            steps,
            lr=lr,
            n_samples=samples,
            tol=tol,
            draws=cell_draws(names, seed, loc),
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
) -> None:
    """Put the latent means in ``data.obsm[key]``.

    For data opened backed the result goes into the file instead, one chunk of cells
    at a time (``obsm/<key>`` of the AnnData, or of the MuData's global obs), so that
    memory does not grow with the cells; open the file with ``backed="r+"``. Read it
    back with ``read_h5ad`` / ``read_h5mu``. Rows of cells lacking ``modality`` are
    NaN. See :meth:`get_latent_representation` for the arguments.
    """
    refine_steps, refine_cells = self._refinement(refine_steps, refine_cells, False, prior)
    paired = self._check_latent_options(
        modality, paired, refine_steps > 0 and refine_cells == "all"
    )
    prior = self._check_prior(prior, refine_steps > 0)
    data = self.data if data is None else data
    cells = self._cell_data(data)

    def latent(indices):
        return self._latent(
            cells,
            modality,
            indices,
            give_mean=True,
            batch_size=batch_size,
            refine_steps=refine_steps,
            refine_lr=refine_lr,
            refine_samples=1,
            refine_tol=None,
            return_elbo=False,
            seed=seed,
            paired=paired,
            prior=prior,
            refine_cells=refine_cells,
        )

    if not isinstance(cells, BackedCells):
        data.obsm[key] = latent(None)
        return
    f = _writable_file(data)
    group = f.require_group("obsm")
    if key in group:
        del group[key]
    out = group.create_dataset(key, shape=(cells.n_cells, self.config.n_latent), dtype="f4")
    out.attrs["encoding-type"], out.attrs["encoding-version"] = "array", "0.2.0"
    for start, stop in cells.chunks():
        out[start:stop] = latent(np.arange(start, stop))
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
