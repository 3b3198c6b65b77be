"""The sparse data path: CSR row gathering, sparse likelihoods, the two loader paths."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

import scamort
from scamort.data import CellTensors, make_loader, resolve_placement
from scamort.kinds.atac import PoissonDecoder
from scamort.likelihoods import bernoulli, log_bernoulli, log_poisson, peak_bernoulli_log_lik
from scamort.nn import DecoderShape, SparseRows

rng = np.random.default_rng(0)
X = sp.random(40, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
X.data = np.ceil(X.data * 4)


def test_rows_match_scipy_in_any_order_with_repeats():
    rows = SparseRows.from_scipy(X)
    idx = np.array([5, 0, 39, 5, 17, 3, 3])
    got = rows.rows(idx)  # sized on the host from host_crow
    np.testing.assert_array_equal(got.dense().numpy(), X[idx].toarray())
    np.testing.assert_array_equal(got.host_crow, got.crow.numpy())
    again = got.rows(np.array([6, 0]))  # a gathered block gathers again from the host
    np.testing.assert_array_equal(again.dense().numpy(), X[[3, 5]].toarray())
    on_device = SparseRows(rows.crow, rows.col, rows.val, rows.n_cols).rows(torch.tensor(idx))
    assert on_device.host_crow is None
    np.testing.assert_array_equal(on_device.dense().numpy(), X[idx].toarray())
    np.testing.assert_array_equal(rows.repeat(3).dense().numpy(), np.vstack([X.toarray()] * 3))
    np.testing.assert_allclose(rows.row_sums().numpy(), np.asarray(X.sum(1)).ravel())
    empty = rows.rows(torch.tensor([], dtype=torch.long))
    assert empty.dense().shape == (0, 30)


def test_dense_round_trip_and_shared_memory():
    rows = SparseRows.from_scipy(X)
    assert np.shares_memory(rows.val.numpy(), X.data)  # no copy of the counts
    back = SparseRows.from_dense(rows.dense())
    torch.testing.assert_close(back.dense(), rows.dense())


def _bernoulli_inputs(dtype):
    g = torch.Generator().manual_seed(0)
    n, p = 9, 300
    a = (torch.randn(n, p, generator=g, dtype=dtype) * 3).requires_grad_(True)
    r = torch.randn(p, generator=g, dtype=dtype).requires_grad_(True)
    c = (torch.randn(n, 1, generator=g, dtype=dtype) - 1).requires_grad_(True)
    y = (torch.rand(n, p, generator=g) < 0.1).to(dtype) * torch.randint(1, 4, (n, p), generator=g)
    with torch.no_grad():
        a[0, :5] = 40.0  # p -> 1: log p is clamped below 0
        r[:5] = 40.0
    return a, r, c, y


@pytest.mark.parametrize("chunk_entries", [1 << 20, 600])  # one chunk; 2 rows a chunk
def test_fused_bernoulli_matches_dense_value_and_gradient(monkeypatch, chunk_entries):
    monkeypatch.setattr(bernoulli, "_CHUNK_ENTRIES", chunk_entries)
    a, r, c, y = _bernoulli_inputs(torch.float64)
    ref = log_bernoulli(y, F.logsigmoid(a) + F.logsigmoid(r) + F.logsigmoid(c)).sum(-1)
    s = SparseRows.from_dense(y)
    got = peak_bernoulli_log_lik(
        a, r, F.logsigmoid(c), s.row_ids(), s.col.long(), (s.val > 0).double()
    )
    torch.testing.assert_close(got, ref.float(), rtol=1e-6, atol=1e-4)
    w = torch.randn(a.shape[0], dtype=torch.float64)  # per-cell loss weights
    g_ref = torch.autograd.grad((ref * w).sum(), [a, r, c])
    g_got = torch.autograd.grad((got.double() * w).sum(), [a, r, c])
    for x, y_ in zip(g_got, g_ref):
        torch.testing.assert_close(x.double(), y_, rtol=1e-5, atol=1e-6)


def test_fused_bernoulli_ignores_explicit_zeros():
    a, r, c, y = _bernoulli_inputs(torch.float32)
    s = SparseRows.from_dense(y)
    args = (a, r, F.logsigmoid(c))
    base = peak_bernoulli_log_lik(*args, s.row_ids(), s.col.long(), (s.val > 0).float())
    # the same data with three stored zeros added
    rid = torch.cat([s.row_ids(), torch.tensor([0, 1, 2])])
    cid = torch.cat([s.col.long(), torch.tensor([7, 8, 9])])
    w = torch.cat([(s.val > 0).float(), torch.zeros(3)])
    keep = y[rid[-3:], cid[-3:]] == 0
    assert keep.all()
    torch.testing.assert_close(peak_bernoulli_log_lik(*args, rid, cid, w), base)


def test_sparse_poisson_matches_dense():
    torch.manual_seed(0)
    dec = PoissonDecoder(DecoderShape(4, 30, 2, 8, 1, 0.0))
    z, cov = torch.randn(40, 4), F.one_hot(torch.randint(0, 2, (40,)), 2).float()
    rows = SparseRows.from_scipy(X)
    log_size = dec.log_size(rows)
    got = dec.log_prob(z, cov, log_size, None, rows)
    ref = log_poisson(torch.from_numpy(X.toarray()), dec(z, cov, log_size, None).log_rate).sum(-1)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-3)


def test_resident_and_streamed_loaders_give_the_same_batches(tiny_mdata):
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    spec = scamort.SCAMORT.get_setup(tiny_mdata)
    model = scamort.SCAMORT(tiny_mdata, n_hidden=8)
    store: CellTensors = model._cells.tensors
    idx = np.arange(store.n_cells)
    resident = make_loader(store, idx, 50, shuffle=True, seed=3, resident=True)
    streamed = make_loader(store, idx, 50, shuffle=True, seed=3, resident=False)
    for i, b in zip(resident, streamed):
        a = store.batch(i)
        torch.testing.assert_close(a["mask"], b["mask"])
        torch.testing.assert_close(a["cov"], b["cov"])
        for m in spec.modalities:
            torch.testing.assert_close(a["x"][m].dense(), b["x"][m].dense())


def test_placement_choice():
    cpu = torch.device("cpu")
    assert resolve_placement("auto", cpu, 10**12)  # on CPU the data are used in place
    assert resolve_placement("host", cpu, 1)
    assert not resolve_placement("host", torch.device("cuda", 0), 1)
    assert resolve_placement("device", torch.device("cuda", 0), 10**15)
    with pytest.raises(ValueError, match="auto, device or host"):
        resolve_placement("gpu", cpu, 1)


def test_non_canonical_counts_are_summed_not_modified(tiny_mdata):
    X = sp.csr_matrix(tiny_mdata["atac"].X, dtype=np.float32)
    # every count c stored as two entries ceil(c/2) + floor(c/2) in the same column
    # (duplicates, some of them explicit zeros): the same matrix, not canonical
    halves = np.stack([np.ceil(X.data / 2), np.floor(X.data / 2)], 1).ravel()
    raw = sp.csr_matrix((halves, np.repeat(X.indices, 2), X.indptr * 2), shape=X.shape)
    assert not raw.has_canonical_format
    tiny_mdata.mod["atac"].X = raw
    before = raw.data.copy()
    scamort.SCAMORT.setup_mudata(tiny_mdata)
    model = scamort.SCAMORT(tiny_mdata, n_hidden=8)
    stored = model._cells.x["atac"]
    pos = tiny_mdata.obs_names.get_indexer(tiny_mdata["atac"].obs_names)
    np.testing.assert_array_equal(stored[pos].toarray(), X.toarray())
    assert stored.has_canonical_format
    np.testing.assert_array_equal(raw.data, before)  # the user's matrix is untouched
    model.train(max_epochs=1, progress_bar=False)
    assert np.isfinite(model.get_latent_representation()).all()
