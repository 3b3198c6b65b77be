"""Scaling out: data streamed from disk, distributed data parallel, resumable training."""

import signal
import subprocess
import sys
import textwrap
import time

import mudata as md
import numpy as np
import pytest
import torch

import scamort
from scamort.data import DataError
from scamort.data.backed import BackedCells, ChunkBatches
from scamort.data.loaders import EpochBatches
from scamort.metrics import label_transfer_accuracy, leiden_sweep

SIM = {"n_cells": 1500, "n_genes": 500, "n_peaks": 3000, "n_cell_types": 6, "seed": 0}


def _quality(model, mdata) -> dict:
    z = model.get_latent_representation()
    status, types = mdata.obs["modality"].to_numpy(), mdata.obs["cell_type"].to_numpy()
    ref, query = status == "rna_only", status == "atac_only"
    return {
        "ari": leiden_sweep(z, types)["ari"],
        "transfer": label_transfer_accuracy(z[ref], types[ref], z[query], types[query]),
        "finite": bool(np.isfinite(z).all()),
    }


# ---- the sampler: epoch-seeded order, shards across ranks -------------------------------
def test_epoch_batches_cover_every_cell_and_depend_on_the_epoch_only(monkeypatch):
    s = EpochBatches(103, 10, shuffle=True, seed=4)
    s.set_epoch(2)
    first = np.concatenate(list(s))
    assert sorted(first) == list(range(103)) and len(s) == 11
    s.set_epoch(3)
    assert not np.array_equal(np.concatenate(list(s)), first)
    again = EpochBatches(103, 10, shuffle=True, seed=4)
    again.set_epoch(2)
    assert np.array_equal(np.concatenate(list(again)), first)

    # Two ranks: disjoint halves of the same permutation (padded by wrapping), global
    # batch 10 -> 5 cells per rank and step, the same number of steps on each rank.
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr("scamort.data.loaders.rank_and_world", lambda r=rank: (r, 2))
        shard = list(s)
        assert len(shard) == len(s) == 11 and all(len(b) <= 5 for b in shard)
        shards.append(np.concatenate(shard))
    assert set(shards[0]) | set(shards[1]) == set(range(103))
    assert len(set(shards[0]) & set(shards[1])) <= 1  # only the wrapped pad repeats


# ---- data on disk ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("disk") / "sim.h5mu"
    return scamort.datasets.write_simulated_multiome(path, **SIM)


def test_written_simulation_equals_the_in_memory_one(sim_file):
    mem = scamort.datasets.simulate_multiome(**SIM)
    disk = md.read_h5mu(sim_file, backed=True)
    assert (disk.obs_names == mem.obs_names).all()
    assert np.allclose(disk.obsm["X_true"], mem.obsm["X_true"], atol=1e-6)
    for m in ("rna", "atac"):
        assert (disk.mod[m].obs_names == mem.mod[m].obs_names).all()
        assert abs(disk.mod[m].X[:] - mem.mod[m].X).sum() == 0
    disk.file.close()


def test_backed_chunks_read_the_same_counts_as_memory(sim_file):
    disk = md.read_h5mu(sim_file, backed=True)
    scamort.SCAMORT.setup_mudata(disk, batch_key="batch", chunk_size=200)
    spec = scamort.SCAMORT.get_setup(disk)
    cells = scamort.model.registry.registered(disk)[1]
    assert isinstance(cells, BackedCells) and len(cells.chunks()) == 8
    mem = scamort.data.to_cell_data(md.read_h5mu(sim_file), spec)
    pick = np.random.default_rng(0).permutation(mem.n_cells)  # any order, spread out
    # a chunk (one span read per modality); scattered cells (read row by row)
    for idx in (np.arange(200, 400), pick[:300], pick[:40]):
        part = cells.take(idx)
        assert (part.obs_names == mem.obs_names[idx]).all()
        assert (part.mask == mem.mask[idx]).all() and (part.cov == mem.cov[idx]).all()
        for m in ("rna", "atac"):
            assert abs(part.x[m] - mem.x[m][idx]).sum() == 0
    # One epoch of the chunk loader yields every training cell once (one rank).
    loader = ChunkBatches(cells, np.arange(8), 64, shuffle=True, seed=1, buffer_chunks=3)
    loader.set_epoch(5)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-1500 // 64)
    assert sum(b["mask"].shape[0] for b in batches) == 1500
    seen = sum(float(b["x"]["atac"].val.sum()) for b in batches)
    assert seen == pytest.approx(float(mem.x["atac"].sum()))
    disk.file.close()


def test_fit_from_disk_learns_like_memory_and_writes_obsm(sim_file, tmp_path):
    path = tmp_path / "copy.h5mu"
    path.write_bytes(sim_file.read_bytes())
    disk = md.read_h5mu(path, backed="r+")
    scamort.SCAMORT.setup_mudata(disk, batch_key="batch", chunk_size=256)
    model = scamort.SCAMORT(disk, seed=0)
    model.train(max_epochs=40, seed=0, progress_bar=False, buffer_chunks=2)
    q = _quality(model, disk)
    assert q["finite"] and q["ari"] >= 0.6 and q["transfer"] >= 0.75
    z = model.get_latent_representation()
    model.write_latent_representation("X_scamort")
    disk.file.close()
    assert np.array_equal(md.read_h5mu(path).obsm["X_scamort"], z.astype(np.float32))


def test_backed_errors_are_specific(sim_file):
    ro = md.read_h5mu(sim_file, backed=True)
    scamort.SCAMORT.setup_mudata(ro, batch_key="batch")
    model = scamort.SCAMORT(ro)
    with pytest.raises(DataError, match="backed='r\\+'"):
        model.write_latent_representation("X_scamort")
    with pytest.raises(DataError, match="layer"):
        layered = {"rna": scamort.Modality("rna", layer="counts"), "atac": "atac"}
        scamort.SCAMORT.setup_mudata(ro, layered)
    ro.file.close()


def test_backed_held_out_chunks_train_the_encoders_every_epoch(sim_file, monkeypatch):
    """Backed data hold out whole chunks; with heldout_encoders=True every step also
    reads a minibatch of them (for the encoders), and each epoch covers all their cells."""
    from scamort.data.loaders import holdout
    from scamort.train import TrainingPlan

    held_sizes = []
    step_loss = TrainingPlan.step_loss

    def spy(self, batch, held, w):
        held_sizes.append(None if held is None else held["mask"].shape[0])
        return step_loss(self, batch, held, w)

    monkeypatch.setattr(TrainingPlan, "step_loss", spy)
    mdata = md.read_h5mu(sim_file, backed=True)
    scamort.SCAMORT.setup_mudata(mdata, batch_key="batch", chunk_size=100)
    model = scamort.SCAMORT(mdata, n_hidden=16, seed=0)
    model.train(
        max_epochs=2, batch_size=128, heldout_encoders=True, final_epochs=0, progress_bar=False
    )
    chunks = model._cells.chunks()
    n_held = sum(chunks[i][1] - chunks[i][0] for i in holdout(len(chunks), 0.1, 0)[1])
    assert n_held > 0 and None not in held_sizes
    per_epoch = len(held_sizes) // 2
    assert sum(held_sizes[:per_epoch]) >= n_held
    assert np.isfinite(model.get_latent_representation()).all()
    mdata.file.close()


# ---- several processes -------------------------------------------------------------------
DDP_SCRIPT = """
import sys, warnings
import numpy as np
import scamort
warnings.simplefilter("ignore")
mdata = scamort.datasets.simulate_multiome(**{sim})
scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
model = scamort.SCAMORT(mdata, seed=0)
model.train(max_epochs=40, seed=0, progress_bar=False, accelerator="cpu", devices=2,
            strategy="ddp")
if model.global_rank == 0:
    np.save(sys.argv[1], model.get_latent_representation())
"""


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(sim=SIM)))
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "z.npy")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in run.stdout + run.stderr  # a second process really trained
    z = np.load(tmp_path / "z.npy")
    mdata = scamort.datasets.simulate_multiome(**SIM)
    assert z.shape == (mdata.n_obs, 20) and np.isfinite(z).all()
    scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    single = scamort.SCAMORT(mdata, seed=0).train(max_epochs=40, seed=0, progress_bar=False)
    one = _quality(single, mdata)
    status, types = mdata.obs["modality"].to_numpy(), mdata.obs["cell_type"].to_numpy()
    ref, query = status == "rna_only", status == "atac_only"
    two = {
        "ari": leiden_sweep(z, types)["ari"],
        "transfer": label_transfer_accuracy(z[ref], types[ref], z[query], types[query]),
    }
    # Same model up to the data order: quality within a few points of one process.
    assert two["ari"] >= one["ari"] - 0.1 and two["transfer"] >= one["transfer"] - 0.05
    assert two["ari"] >= 0.6 and two["transfer"] >= 0.75


# ---- resumable training ------------------------------------------------------------------
RESUME_SCRIPT = """
import sys, time, warnings
import scamort
warnings.simplefilter("ignore")

from scamort.train import History

end = History.on_train_epoch_end

def slow_end(self, trainer, plan):  # stands in for long epochs, so it can be killed mid-way
    end(self, trainer, plan)
    time.sleep(0.4)

History.on_train_epoch_end = slow_end
mdata = scamort.datasets.simulate_multiome(n_cells=300, n_genes=60, n_peaks=200, seed=1)
scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
model = scamort.SCAMORT(mdata, seed=0)
model.train(max_epochs=12, seed=0, progress_bar=False, checkpoint_dir=sys.argv[1])
"""


def _epoch_in(ckpt) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    ckdir = tmp_path / "ckpt"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RESUME_SCRIPT))
    proc = subprocess.Popen([sys.executable, str(script), str(ckdir)])
    last = ckdir / "last.ckpt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and _epoch_in(last) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = _epoch_in(last)
    assert 3 <= stopped_at < 11

    mdata = scamort.datasets.simulate_multiome(n_cells=300, n_genes=60, n_peaks=200, seed=1)
    scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    resumed = scamort.SCAMORT(mdata, seed=7)  # the weights come from the checkpoint
    resumed.train(max_epochs=12, seed=0, progress_bar=False, checkpoint_dir=ckdir, resume=True)
    straight = scamort.SCAMORT(mdata, seed=0).train(max_epochs=12, seed=0, progress_bar=False)

    # 12 epochs, then the 4 of the final pass over all cells (not checkpointed)
    assert list(resumed.history.table["epoch"]) == list(range(16))
    # The optimizer state carried over: Adam counted every step of both runs (270
    # training cells, batch 512: one step per epoch).
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 11 and int(ckpt["optimizer_states"][0]["state"][0]["step"]) == 12
    # Same data order, optimizer state and random state: the same model as a run never
    # stopped.
    np.testing.assert_allclose(
        resumed.get_latent_representation(), straight.get_latent_representation(), atol=1e-4
    )
    np.testing.assert_allclose(
        resumed.history.table["elbo_train"], straight.history.table["elbo_train"], rtol=1e-5
    )


def test_resume_errors(tiny_mdata, tmp_path):
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        model.train(max_epochs=1, resume=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.train(max_epochs=1, resume=tmp_path / "nope.ckpt")
    model.train(max_epochs=2, progress_bar=False, checkpoint_dir=tmp_path)
    other = scamort.SCAMORT(tiny_mdata, n_latent=5)
    with pytest.raises(ValueError, match="n_latent"):
        other.train(max_epochs=3, progress_bar=False, checkpoint_dir=tmp_path, resume=True)
