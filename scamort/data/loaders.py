"""Minibatches of {sparse counts per modality, masks, covariate codes}.

Two data paths, one batch format:

- **resident**: every count matrix (CSR), mask and covariate code is moved to the
  training device once (:meth:`CellTensors.to`); the loader yields only the cells'
  positions (a NumPy array, which stays on the host) and the minibatch is gathered on
  the device (:meth:`CellTensors.batch`). On CPU this is the only path (the "device" is
  the host).
- **streamed**: the data stay in host memory; the loader gathers each minibatch on the
  host, in pinned memory when the target is a GPU, and Lightning copies it over.

Either way a minibatch is sliced with tensor operations over the CSR arrays (no Python
loop over rows) and is never densified on the host. Every minibatch carries a host copy
of its modality mask (``mask_host``) and its CSR row offsets, from which the model reads
every index set and size it needs: a training step makes no host-device
synchronisation.

The order of cells is a function of ``(seed, epoch)`` alone (:class:`EpochBatches`), so a
run resumed from a checkpoint sees the same minibatches as one that was never stopped.
Under distributed data parallel each rank takes its own share of every epoch's
permutation, and ``batch_size`` stays the global minibatch: each of N ranks takes
``batch_size / N`` cells per step, so N ranks make the same optimisation steps as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..nn.sparse import SparseRows, host_index_on

Placement = Literal["auto", "device", "host"]


@dataclass
class CellTensors:
    """All cells as tensors: sparse counts per modality, (N, M) mask, (N, K) codes, and
    the mask on the host as well (``mask_host``, bool), for index sets."""

    x: dict[str, SparseRows]
    mask: torch.Tensor  # float32
    cov: torch.Tensor  # int64
    mask_host: np.ndarray  # (N, M) bool, always on the host

    @property
    def n_cells(self) -> int:
        return self.mask.shape[0]

    @property
    def device(self) -> torch.device:
        return self.mask.device

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.x.values()) + sum(
            t.element_size() * t.numel() for t in (self.mask, self.cov)
        )

    def to(self, device, non_blocking: bool = False) -> CellTensors:
        if torch.device(device) == self.device:
            return self
        return CellTensors(
            {m: r.to(device, non_blocking) for m, r in self.x.items()},
            self.mask.to(device, non_blocking=non_blocking),
            self.cov.to(device, non_blocking=non_blocking),
            self.mask_host,
        )

    def batch(self, idx: np.ndarray) -> dict:
        """The minibatch of cells ``idx`` (host positions), gathered where the tensors
        live, without a synchronisation."""
        idx = np.asarray(idx, dtype=np.int64)
        on_device = host_index_on(idx, self.device)
        return {
            "x": {m: r.rows(idx) for m, r in self.x.items()},
            "mask": self.mask[on_device],
            "cov": self.cov[on_device],
            "mask_host": self.mask_host[idx],
        }


class _Batches(Dataset):
    """Indexed by lists of positions into ``indices``; yields an index tensor (resident)
    or the gathered host minibatch (streamed)."""

    def __init__(self, store: CellTensors, indices: np.ndarray, resident: bool):
        self.store, self.indices, self.resident = store, np.asarray(indices), resident

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, batch: np.ndarray):
        idx = self.indices[batch]
        return idx if self.resident else self.store.batch(idx)


def _as_is(batch):
    """The loader's items unchanged: positions stay a NumPy array on the host (the
    default conversion would make them a tensor, which Lightning moves to the GPU)."""
    return batch


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (0, 1 outside distributed training)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_share(order: np.ndarray) -> np.ndarray:
    """This rank's share of an epoch's ``order``: every N-th item from its rank on, the
    order padded by wrapping around so that all N ranks get as many (as
    :class:`torch.utils.data.DistributedSampler` does). The whole order on one rank."""
    rank, world = rank_and_world()
    if world == 1:
        return order
    return np.resize(order, -(-len(order) // world) * world)[rank::world]


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) positions of ``0..n-1``, each sorted: a random ``fraction``
    held out (rounded; none when it would be all of them)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fraction * n))
    if n_val == n:
        n_val = 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class EpochBatches(Sampler):
    """Minibatches of positions ``0..n-1``: each epoch a permutation drawn from
    ``(seed, epoch)`` (or the natural order), split across the distributed ranks.

    Every rank gets the same number of steps: with N ranks, each takes every N-th
    position of the epoch's order (the order is padded by wrapping around, as
    :class:`torch.utils.data.DistributedSampler` does) in steps of
    ``ceil(batch_size / N)``. The rank and N are read when iterating, after Lightning
    has started the process group. Lightning calls :meth:`set_epoch` every epoch.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _split(self) -> tuple[int, int]:
        _, world = rank_and_world()
        per_rank = -(-self.n // world)
        return per_rank, -(-self.batch_size // world)

    def __len__(self) -> int:
        per_rank, step = self._split()
        return -(-per_rank // step)

    def __iter__(self):
        per_rank, step = self._split()
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        order = rank_share(order)
        for start in range(0, per_rank, step):
            yield order[start : start + step]


def make_loader(
    store: CellTensors,
    indices: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    resident: bool = True,
    pin_memory: bool = False,
) -> DataLoader:
    """One minibatch per step over ``indices`` (see the module docstring for the paths)."""
    ds = _Batches(store, indices, resident)
    return DataLoader(
        ds,
        sampler=EpochBatches(len(ds), batch_size, shuffle, seed),
        batch_size=None,
        collate_fn=_as_is,
        num_workers=0,
        pin_memory=pin_memory and not resident,
    )


def resolve_placement(
    placement: Placement, device: torch.device, nbytes: int, fraction: float = 0.5
) -> bool:
    """True when the data should live on ``device`` (the resident path).

    ``"auto"``: always on CPU; on a GPU when the data take at most ``fraction`` of its
    free memory (the rest is left for activations). ``"device"`` / ``"host"`` force it.
    """
    if placement not in ("auto", "device", "host"):
        raise ValueError(f"data_placement={placement!r} is not valid; choose auto, device or host.")
    if device.type == "cpu":
        return True
    if placement != "auto":
        return placement == "device"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= fraction * free
    return False
