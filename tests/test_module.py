"""The torch module on raw tensors: paired and unpaired masks, no AnnData involved."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scamort.data import CellTensors
from scamort.kinds import Modality
from scamort.module import ModuleConfig, MultiVAE
from scamort.nn import SparseRows
from scamort.train import kl_weight

N, G, P = 12, 30, 50


def _module(**kw):
    torch.manual_seed(0)
    rna = Modality("rna", likelihood=kw.pop("rna", "nb"), dispersion=kw.pop("dispersion", "gene"))
    atac = Modality("atac", likelihood=kw.pop("atac", "bernoulli"), **kw.pop("atac_options", {}))
    cfg = ModuleConfig(
        n_features={"rna": G, "atac": P},
        modalities={"rna": rna, "atac": atac},
        n_categories=(3,),
        n_latent=4,
        n_hidden=16,
        dropout=0.0,
        **kw,
    )
    return MultiVAE(cfg)


def _dense_batch(mask):
    g = torch.Generator().manual_seed(1)
    x = {
        "rna": torch.poisson(torch.full((N, G), 2.0), generator=g),
        "atac": (torch.rand(N, P, generator=g) < 0.1).float(),
    }
    x["atac"][:, 0] = 1.0  # every cell has an open peak
    return {"x": x, "mask": mask, "cov": torch.randint(0, 3, (N, 1), generator=g)}


def _sparse(batch):
    return {**batch, "x": {m: SparseRows.from_dense(v) for m, v in batch["x"].items()}}


def _batch(mask):
    return _sparse(_dense_batch(mask))


MIXED = torch.tensor([[1.0, 1.0]] * 4 + [[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)


@pytest.mark.parametrize("rna,atac", [("nb", "bernoulli"), ("zinb", "poisson")])
def test_loss_is_finite_and_trains_all_parts(rna, atac):
    module = _module(rna=rna, atac=atac)
    out = module.loss(_batch(MIXED), kl_weight=0.5)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.elbo.shape == (N,) and torch.isfinite(out.elbo).all()
    out.loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_absent_modality_counts_are_never_read():
    """Rows of absent modalities may hold anything (here NaN): the loss is unchanged."""
    module = _module()
    clean = _batch(MIXED)
    dirty = _dense_batch(MIXED)
    dirty["x"]["atac"][4:8] = torch.nan  # RNA-only cells
    dirty["x"]["rna"][8:] = torch.nan  # ATAC-only cells
    dirty = _sparse(dirty)
    torch.manual_seed(0)
    a = module.loss(clean)
    torch.manual_seed(0)
    b = module.loss(dirty)
    torch.testing.assert_close(a.loss, b.loss)
    torch.testing.assert_close(a.elbo, b.elbo)


def test_unpaired_cell_uses_only_its_own_expert():
    module = _module().eval()
    batch = _batch(MIXED)
    inf = module.inference(batch["x"], batch["mask"], batch["cov"])
    rna_expert = inf["experts"][0]
    prec = 1 + rna_expert.scale[4:8] ** -2
    torch.testing.assert_close(inf["qz"].scale[4:8], prec**-0.5)
    torch.testing.assert_close(
        inf["qz"].loc[4:8], rna_expert.loc[4:8] * rna_expert.scale[4:8] ** -2 / prec
    )


def test_without_the_prior_expert_every_posterior_is_the_experts_product_alone():
    """prior_expert=False: the loss's KL of an unpaired cell is its expert's own KL to the
    prior, and a paired cell's that of its two experts' product (no prior in it)."""
    from torch.distributions import Normal, kl_divergence

    from scamort.module import product_of_experts

    batch = _batch(MIXED)
    for prior_expert in (False, True):
        module = _module(prior_expert=prior_expert).eval()
        out = module.loss(batch)
        experts = module.experts(batch["x"], batch["mask"], batch["cov"])
        q = product_of_experts(experts, MIXED, prior=False)
        kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
        torch.testing.assert_close(
            module.inference(batch["x"], MIXED, batch["cov"])["qz"].loc,
            q.loc if not prior_expert else product_of_experts(experts, MIXED).loc,
        )
        if prior_expert:  # the prior's shrinkage: a different posterior, another KL
            assert (out.kl - kl).abs().min() > 1e-4
        else:
            torch.testing.assert_close(out.kl, kl)


def test_rna_only_batch_gives_atac_networks_no_gradient():
    module = _module()
    only_rna = torch.tensor([[1.0, 0.0]] * N)
    module.loss(_batch(only_rna)).loss.backward()
    for name, p in module.named_parameters():
        if name.startswith(("encoders.atac", "decoders.atac")):
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name


def test_single_views_only_for_paired_cells():
    module = _module()
    views = module.views(MIXED, MIXED.bool().numpy())
    assert len(views) == 3
    joint, rna_only_view, atac_only_view = views
    assert joint[2].tolist() == list(range(N))
    assert rna_only_view[2].tolist() == atac_only_view[2].tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(rna_only_view[0][:4], torch.tensor([[1.0, 0.0]] * 4))
    assert rna_only_view[1][:4].tolist() == [[True, False]] * 4
    # With weight 0 on the single views, the loss is the joint ELBO alone.
    module0 = _module(single_view_weight=0.0)
    torch.manual_seed(0)
    out = module0.loss(_batch(MIXED))
    torch.testing.assert_close(out.loss, -out.elbo.mean())


def test_gene_batch_dispersion_has_one_row_per_batch():
    module = _module(dispersion="gene-batch")
    assert module.decoders["rna"].log_theta.shape == (3, G)
    assert torch.isfinite(module.loss(_batch(MIXED)).loss)


def test_bad_options_list_the_valid_ones():
    with pytest.raises(ValueError, match="bernoulli"):
        _module(atac="gaussian")
    with pytest.raises(ValueError, match="gene-batch"):
        _module(dispersion="cell")


def test_kl_warmup_is_linear_and_capped():
    assert kl_weight(0, 0, 10, 4) == 0.0
    assert kl_weight(1, 5, 10, 4) == pytest.approx(1.5 / 4)
    assert kl_weight(10, 0, 10, 4) == 1.0
    assert kl_weight(0, 0, 10, 0) == 1.0


def test_semi_amortized_training_loss():
    """Refinement inside a training step leaves no gradient behind on the parameters;
    the loss adds the refined ELBO and the pull toward it, and still trains every part."""
    module = _module()
    batch = _batch(MIXED)
    torch.manual_seed(0)
    plain = module.loss(batch, 1.0)
    torch.manual_seed(0)
    out = module.loss(batch, 1.0, refine_steps=3)
    assert all(p.grad is None for p in module.parameters())
    assert torch.isfinite(out.loss) and not torch.isclose(out.loss, plain.loss)
    out.loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_sampled_single_views_are_one_per_paired_cell_and_unbiased():
    """Each paired cell gets exactly one single view, unpaired cells none, and the
    expected weight of every (cell, view) pair equals its weight under "all"."""
    module = _module(single_views="sample")
    torch.manual_seed(0)
    total = torch.zeros(2, N)
    draws = 4000
    for _ in range(draws):
        _, *singles = module.views(MIXED, MIXED.bool().numpy())
        uses = torch.zeros(2, N)
        for k, (_, _, cells, _) in enumerate(singles):
            uses[k, cells] = 1.0
        assert uses[:, :4].sum(0).tolist() == [1] * 4 and not uses[:, 4:].any()
        total += torch.stack([uses[k] * w for k, (*_, w) in enumerate(singles)])
    # Binomial(4000, 1/2) * 2 / 4000 has sd 0.016: 0.06 is ~4 sd.
    torch.testing.assert_close(total[:, :4] / draws, torch.ones(2, 4), atol=0.06, rtol=0)
    out = module.loss(_batch(MIXED))
    out.loss.backward()
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"),
            ],
        ),
    ],
)
def test_bf16_autocast_matches_float32(device):
    """bf16 autocast (precision="bf16-mixed") changes each cell's ELBO by < 1 %:
    only the network matmuls run in bf16, the likelihoods stay in float32."""
    module = _module().to(device).eval()
    batch = _batch(MIXED)
    batch = {
        "x": {m: r.to(device) for m, r in batch["x"].items()},
        "mask": batch["mask"].to(device),
        "cov": batch["cov"].to(device),
    }
    torch.manual_seed(0)
    ref = module.loss(batch).elbo
    torch.manual_seed(0)
    with torch.autocast(device, dtype=torch.bfloat16):
        got = module.loss(batch).elbo
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=0.01, atol=0.0)


@pytest.mark.parametrize(
    "options",
    [
        {"refine_steps": 2, "adversarial_batch_weight": 1.0},
        {"adversarial_view_weight": 1.0},
        {"single_views": "sample", "atac": "poisson"},
        {"atac_options": {"input": "tfidf"}, "encode_covariates": True},
        {"cycle_weight": 1.0, "output_covariates": True, "encode_covariates": True},
        {"cross_cycle_weight": 1.0, "cycle_weight": 1.0, "output_covariates": True},
    ],
)
def test_a_training_step_reads_nothing_back_from_the_device(options):
    """Gathering a minibatch, the loss (refinement included) and its backward run on the
    meta device, where every op whose output size depends on the values (nonzero,
    boolean indexing, .item(), bool(tensor), .cpu()) raises: every index set and size
    comes from the host, so on a GPU a step never waits for the device."""
    refine_steps = options.pop("refine_steps", 0)
    b = _dense_batch(MIXED)
    x = {m: SparseRows.from_scipy(sp.csr_matrix(v.numpy())) for m, v in b["x"].items()}
    store = CellTensors(x, MIXED, b["cov"], MIXED.bool().numpy()).to("meta")
    module = _module(**options).to("meta")
    batch = store.batch(np.array([0, 5, 9, 2, 2, 11]))
    out = module.loss(batch, 0.5, refine_steps=refine_steps)
    assert out.loss.device.type == "meta" and out.elbo.shape == (6,)
    out.loss.backward()
    assert all(p.grad is not None for p in module.parameters())
    # The check has teeth: without the host mask the mask is read back from the device.
    with pytest.raises((RuntimeError, NotImplementedError)):
        module.experts(batch["x"], batch["mask"], batch["cov"])


def test_the_batch_adversary_trains_the_classifier_on_z_and_the_encoders_against_it():
    """One loss, one optimizer, two players: the classifier's parameters get only the
    gradient of its cross-entropy, z gets only the gradient of the fooling term, and a
    step of z along that gradient makes the classifier less sure of the true batch."""
    module = _module(adversarial_batch_weight=2.0)
    clf = module.batch_classifier
    g = torch.Generator().manual_seed(3)
    z = torch.randn(40, 4, generator=g, requires_grad=True)
    codes = torch.randint(0, 3, (40,), generator=g)
    loss = module.adversarial_loss(z, codes)
    grads = torch.autograd.grad(loss, [z, *clf.parameters()])
    want = torch.autograd.grad(
        2.0 * torch.nn.functional.cross_entropy(clf(z), codes), list(clf.parameters())
    )
    for got, ref in zip(grads[1:], want):
        torch.testing.assert_close(got, ref)
    # z's gradient: the fooling term, uniform over the other batches
    log_p = torch.log_softmax(clf(z), -1)
    others = 1.0 - torch.nn.functional.one_hot(codes, 3).float()
    (fool_grad,) = torch.autograd.grad(-2.0 * (log_p * others).sum(-1).mean() / 2, z)
    torch.testing.assert_close(grads[0], fool_grad)
    with torch.no_grad():
        p_true = torch.softmax(clf(z), -1).gather(1, codes[:, None]).mean()
        moved = torch.softmax(clf(z - 0.5 * grads[0] / grads[0].norm()), -1)
        assert moved.gather(1, codes[:, None]).mean() < p_true


def _with_and_without_adversary(**option):
    """A module with the adversary ``option`` and the same weights without it."""
    module, plain = _module(**option), _module()
    keep = plain.state_dict()
    plain.load_state_dict({k: v for k, v in module.state_dict().items() if k in keep})
    return module, plain


def _losses(module, plain, batch, training: bool):
    """Both modules' losses on ``batch`` with the same noise, in training or eval mode."""
    out = []
    for m in (module, plain):
        m.train(training)
        torch.manual_seed(0)
        out.append(m.loss(batch))
    return out


def test_the_batch_adversary_is_a_training_term_only():
    """In eval mode (validation, scoring) the loss is the ELBO alone; in training mode
    the adversary adds its term, and every classifier parameter gets a gradient."""
    batch = _batch(MIXED)
    module, plain = _with_and_without_adversary(adversarial_batch_weight=1.0)
    with_adv, without = _losses(module, plain, batch, training=True)
    torch.testing.assert_close(with_adv.elbo, without.elbo)
    assert with_adv.loss > without.loss  # cross-entropies are positive
    with_adv.loss.backward()
    assert all(p.grad is not None for p in module.batch_classifier.parameters())
    a, b = _losses(module, plain, batch, training=False)
    torch.testing.assert_close(a.loss, b.loss)
    with pytest.raises(ValueError, match="adversarial_batch_weight"):
        _module(adversarial_batch_weight=-1.0)


def test_the_view_adversary_is_a_training_term_of_mixed_minibatches_only():
    """In eval mode the loss is the ELBO alone; in training mode on a minibatch with
    paired and one-modality cells the view game adds its (positive) cross-entropies and
    each modality's classifier gets a gradient; on a fully paired minibatch it adds
    nothing (no one-modality cell to tell apart)."""
    module, plain = _with_and_without_adversary(adversarial_view_weight=1.0)
    for mask, mixed in ((MIXED, True), (torch.ones(6, 2), False)):
        batch = _batch(mask)
        with_adv, without = _losses(module, plain, batch, training=True)
        torch.testing.assert_close(with_adv.elbo, without.elbo)
        if mixed:
            assert with_adv.loss > without.loss
            module.zero_grad()
            with_adv.loss.backward()
            for clf in module.view_classifiers.values():
                assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in clf.parameters())
        else:
            torch.testing.assert_close(with_adv.loss, without.loss)
        a, b = _losses(module, plain, batch, training=False)
        torch.testing.assert_close(a.loss, b.loss)
    with pytest.raises(ValueError, match="adversarial_view_weight"):
        _module(adversarial_view_weight=-1.0)


def test_the_first_layer_reads_dense_input_as_it_reads_sparse():
    module = _module()
    x = _dense_batch(MIXED)["x"]["atac"]
    layer = module.encoders["atac"].body.linear[0]
    torch.testing.assert_close(layer(x), layer(SparseRows.from_dense(x)))


def test_decoder_and_encoder_depths_apart():
    module = _module(n_layers_encoder=2, n_layers_decoder=3)
    assert len(module.encoders["rna"].body.linear) == 2
    assert len(module.decoders["atac"].body.linear) == 3
    assert module.config.n_layers_encoder == 2 and module.config.n_layers == 1
    assert _module().config.n_layers_decoder == 1  # None: n_layers
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="n_layers_encoder must be an integer >= 1"):
            _module(n_layers_encoder=bad)


def test_output_covariates_offset_every_feature_by_batch():
    """With ``output_covariates`` a batch moves each feature's logit by its own learned
    offset (exactly, when the hidden layer ignores the batch); the offsets start at 0."""
    module = _module(output_covariates=True)
    dec = module.decoders["rna"]
    assert torch.count_nonzero(dec.out_cov.weight) == 0
    with torch.no_grad():
        dec.body.cov[0].weight.zero_()
        dec.out_cov.weight.normal_()
    z = torch.randn(5, 4)
    h = dec.body(z, None if not dec.body.cov else module.covariates(torch.zeros(5, 1).long()))
    cov = [module.covariates(torch.full((5, 1), b)) for b in (0, 2)]
    diff = dec.logits(h, cov[1]) - dec.logits(h, cov[0])
    want = (dec.out_cov.weight[:, 2] - dec.out_cov.weight[:, 0]).expand(5, -1)
    torch.testing.assert_close(diff, want)


def _with_and_without(**term):
    """A module with a swap-consistency term and the same module without it, both with
    strong batch effects in their decoders (output offsets)."""
    module = _module(output_covariates=True, **term)
    plain = _module(output_covariates=True)
    with torch.no_grad():
        for m in module.modalities:
            module.decoders[m].out_cov.weight.normal_(0.0, 2.0)
    plain.load_state_dict(module.state_dict())
    return module, plain


def _encoders_trained_with_the_term_close_the_gap(module, plain, batch, gap):
    """Train the encoders of both modules 100 steps on the batch; ``gap(mod, m)`` must
    fall to below 0.8x the ELBO-only module's for every modality."""
    for mod in (module, plain):
        torch.manual_seed(1)
        opt = torch.optim.Adam(mod.encoders.parameters(), lr=3e-3)
        for _ in range(100):
            opt.zero_grad()
            mod.loss(batch).loss.backward()
            opt.step()
    gaps = {m: (gap(module, m), gap(plain, m)) for m in module.modalities}
    for with_term, elbo_only in gaps.values():
        assert with_term < 0.8 * elbo_only, gaps


def test_batch_swap_consistency_trains_the_encoders_alone_toward_invariance():
    """The term is a training term only; its gradient reaches the encoders only (the
    swapped profile is a fixed input); and encoders trained with it read a cell's profile
    decoded under another batch closer to the one decoded under its own than encoders
    trained on the ELBO alone do (decoders with strong batch effects, held fixed)."""
    batch = _batch(MIXED)
    has = MIXED.bool().numpy()
    module, plain = _with_and_without(cycle_weight=1.0)
    torch.manual_seed(0)
    with_cycle = module.loss(batch)
    torch.manual_seed(0)
    without = plain.loss(batch)
    torch.testing.assert_close(with_cycle.elbo, without.elbo)
    assert with_cycle.loss > without.loss
    module.eval(), plain.eval()
    torch.manual_seed(0)
    a = module.loss(batch).loss
    torch.manual_seed(0)
    torch.testing.assert_close(a, plain.loss(batch).loss)
    module.train(), plain.train()

    module.zero_grad()
    experts = module.experts(batch["x"], batch["mask"], batch["cov"], has)
    log_sizes = module.log_sizes(batch["x"], batch["mask"], has)
    module.cycle_loss(experts, batch["mask"], has, batch["cov"], log_sizes).backward()
    for name, p in module.named_parameters():
        if name.startswith("decoders"):
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
    assert all(p.grad is not None for p in module.encoders.parameters())
    # with the encoders frozen (query training) it is skipped: it could train nothing
    module.encoders.requires_grad_(False)
    torch.manual_seed(0)
    frozen = module.loss(batch).loss
    torch.manual_seed(0)
    torch.testing.assert_close(frozen, plain.loss(batch).loss)
    module.encoders.requires_grad_(True)

    def gap(mod, m):  # the cells' profiles decoded under batches 0 and 1, read back:
        j = mod.modalities.index(m)  # distance between the two means, against their spread
        rows = np.flatnonzero(has[:, j])
        dec, enc = mod.decoders[m], mod.encoders[m]
        with torch.no_grad():
            z = mod.experts(batch["x"], batch["mask"], batch["cov"], has)[j].loc[rows]
            size = mod.log_sizes(batch["x"], batch["mask"], has)[m][rows]
            loc = [
                enc(dec.expected_input(z, mod.covariates(torch.full((len(rows), 1), b)),
                                       size, None), None).loc
                for b in (0, 1)
            ]  # fmt: skip
        return ((loc[0] - loc[1]).norm(dim=1).mean() / loc[0].std(0).norm()).item()

    _encoders_trained_with_the_term_close_the_gap(module, plain, batch, gap)


def test_modality_swap_consistency_ties_each_expert_to_the_other_modalitys_cells():
    """The cross-modal term: its gradient reaches the encoders only, it reads only cells
    lacking a modality, and encoders trained with it read an unpaired cell's missing
    modality, decoded from its posterior, back nearer that posterior than encoders
    trained on the ELBO alone do."""
    batch = _batch(MIXED)
    has = MIXED.bool().numpy()
    module, plain = _with_and_without(cross_cycle_weight=1.0)

    experts = module.experts(batch["x"], batch["mask"], batch["cov"], has)
    log_sizes = module.log_sizes(batch["x"], batch["mask"], has)
    paired = torch.ones_like(MIXED)  # no cell lacks a modality: nothing to read
    assert module.cycle_loss(experts, paired, paired.bool().numpy(), batch["cov"],
                             log_sizes).item() == 0.0  # fmt: skip
    module.zero_grad()
    module.cycle_loss(experts, batch["mask"], has, batch["cov"], log_sizes).backward()
    for name, p in module.named_parameters():
        if name.startswith("decoders"):
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
    for m in module.modalities:
        assert all(p.grad is not None for p in module.encoders[m].parameters()), m

    def gap(mod, m):  # cells lacking m: m decoded from the other expert, read back by m
        j = mod.modalities.index(m)
        rows = np.flatnonzero(~has[:, j])
        with torch.no_grad():
            q = mod.experts(batch["x"], batch["mask"], batch["cov"], has)[1 - j]
            z = q.loc[rows]  # at the mean size of the cells that have m
            sizes = mod.log_sizes(batch["x"], batch["mask"], has)[m][has[:, j]]
            size = sizes.mean().expand(len(rows), 1)
            cov = mod.covariates(batch["cov"][rows])
            x = mod.decoders[m].expected_input(z, cov, size, batch["cov"][rows, 0])
            back = mod.encoders[m](x, None).loc
        return ((back - z).norm(dim=1).mean() / z.std(0).norm()).item()

    _encoders_trained_with_the_term_close_the_gap(module, plain, batch, gap)
