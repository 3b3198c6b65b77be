"""End-to-end model tests on simulated data with known cell types and pairing."""

import functools

import numpy as np
import pandas as pd
import pytest
import torch

import scamort
from scamort.metrics import foscttm, label_transfer_accuracy, latent_recovery, leiden_sweep

# Thresholds. The simulation has 6 equally likely cell types, so label transfer by
# chance is ~0.17 and FOSCTTM of unrelated embeddings ~0.5; a trained model reaches
# ARI ~0.85, transfer ~0.9 and FOSCTTM < 0.01 (seed 0, 40 epochs). The bars sit well
# below that and far above chance; the rotation control below shows that an RNA space
# and an ATAC space that are not tied together by the product of experts fail them.
MIN_ARI = 0.6
MIN_TRANSFER = 0.75
MAX_FOSCTTM = 0.1


def assert_meets_the_bars(model, mdata) -> None:
    """The joint latent clusters by type, unpaired cells transfer labels, and paired
    cells' single-modality embeddings match: the bars above, for any trained model."""
    status, types = _status(mdata)
    z = model.get_latent_representation()
    assert np.isfinite(z).all()
    assert leiden_sweep(z, types)["ari"] >= MIN_ARI
    ref, query = status == "rna_only", status == "atac_only"
    assert label_transfer_accuracy(z[ref], types[ref], z[query], types[query]) >= MIN_TRANSFER
    paired = status == "paired"
    zr = model.get_latent_representation(modality="rna")[paired]
    za = model.get_latent_representation(modality="atac")[paired]
    assert foscttm(zr, za) <= MAX_FOSCTTM


def _status(mdata):
    return mdata.obs["modality"].to_numpy(), mdata.obs["cell_type"].to_numpy()


def test_clusters_recover_cell_types(trained, sim_mdata):
    z = trained.get_latent_representation()
    assert z.shape == (sim_mdata.n_obs, 20) and np.isfinite(z).all()
    _, types = _status(sim_mdata)
    assert leiden_sweep(z, types)["ari"] >= MIN_ARI


def test_embedding_keeps_the_state_within_cell_types(trained, sim_mdata):
    # The simulator's cells vary around their type's centre; that variation drives both
    # modalities, so a good embedding keeps it rather than shrinking each type to a point.
    _, types = _status(sim_mdata)
    z = trained.get_latent_representation()
    kept = latent_recovery(z, sim_mdata.obsm["X_true"], types)
    assert kept["r2_within"] > 0.4
    assert kept["knn_kept"] > 0.15  # chance: 15 of a type's ~250 cells, 0.06
    # Control: the same embedding with every type collapsed onto its mean fails both bars.
    centres = {t: z[types == t].mean(0) for t in np.unique(types)}
    collapsed = np.stack([centres[t] for t in types])
    lost = latent_recovery(collapsed, sim_mdata.obsm["X_true"], types)
    assert lost["r2_within"] < 0.4 and lost["knn_kept"] < 0.15


def test_unpaired_cells_of_a_type_land_together(trained, sim_mdata):
    status, types = _status(sim_mdata)
    z = trained.get_latent_representation()
    ref, query = status == "rna_only", status == "atac_only"
    acc = label_transfer_accuracy(z[ref], types[ref], z[query], types[query])
    assert acc >= MIN_TRANSFER
    # Control: the same ATAC-only cells in a rotated (unaligned) space fail the bar.
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(z.shape[1], z.shape[1])))
    rotated = label_transfer_accuracy(z[ref], types[ref], z[query] @ q, types[query])
    assert rotated < MIN_TRANSFER


def test_single_modality_embeddings_match_their_partner(trained, sim_mdata):
    status, _ = _status(sim_mdata)
    zr = trained.get_latent_representation(modality="rna")
    za = trained.get_latent_representation(modality="atac")
    assert np.isnan(zr[status == "atac_only"]).all() and np.isnan(za[status == "rna_only"]).all()
    assert np.isfinite(zr[status != "atac_only"]).all()
    paired = status == "paired"
    assert foscttm(zr[paired], za[paired]) <= MAX_FOSCTTM
    shuffled = np.random.default_rng(0).permutation(paired.sum())
    assert foscttm(zr[paired], za[paired][shuffled]) > MAX_FOSCTTM  # control


def assert_history_finite(history) -> None:
    """Every logged value is finite; the held-out ELBO exists on every epoch but those of
    the final pass over all cells (which have no held-out cells)."""
    held_out = ["elbo_validation", "validation_loss"]
    values = history.drop(columns=["epoch", "all_cells", *held_out], errors="ignore")
    assert np.isfinite(values.to_numpy(dtype=float)).all()
    assert np.isfinite(history.loc[~history["all_cells"], held_out].to_numpy()).all()
    assert history.loc[history["all_cells"], held_out].isna().all().all()


def test_history_and_elbo_improve(trained):
    h = trained.history.table
    assert {"train_loss", "elbo_train", "elbo_validation", "kl_weight", "all_cells"} <= set(
        h.columns
    )
    main = h[~h["all_cells"]]
    assert len(main) <= 40 and h["kl_weight"].iloc[-1] == 1.0
    assert main["elbo_validation"].iloc[-1] > main["elbo_validation"].iloc[0]
    final = -(-len(main) // 3)  # a third of the early-stopped epochs, rounded up
    assert h["all_cells"].sum() == final and h["all_cells"].iloc[-final:].all()
    assert_history_finite(h)
    # scvi-tools' shape: one DataFrame per metric, indexed by epoch, one column of its name
    elbo = trained.history["elbo_validation"]
    assert list(elbo.columns) == ["elbo_validation"] and elbo.index.name == "epoch"
    np.testing.assert_array_equal(elbo["elbo_validation"], h["elbo_validation"])
    assert np.isfinite(trained.get_elbo()).all()


def test_imputation_of_missing_modality_tracks_cell_type(trained, sim_mdata):
    status, types = _status(sim_mdata)
    acc = trained.get_accessibility_estimates()
    assert acc.shape == (sim_mdata.n_obs, sim_mdata["atac"].n_vars)
    assert list(acc.columns) == list(sim_mdata["atac"].var_names)
    assert ((acc.to_numpy() > 0) & (acc.to_numpy() < 1)).all()
    # Imputed accessibility of RNA-only cells correlates, per type, with the observed
    # accessibility of ATAC-measured cells of the same type.
    atac = sim_mdata["atac"]
    obs_types = sim_mdata.obs.loc[atac.obs_names, "cell_type"].to_numpy()
    corr = []
    for t in np.unique(types):
        imputed = acc.to_numpy()[(status == "rna_only") & (types == t)].mean(0)
        observed = np.asarray((atac.X[obs_types == t] > 0).mean(0)).ravel()
        corr.append(np.corrcoef(imputed, observed)[0, 1])
    assert min(corr) > 0.5
    expr = trained.get_normalized_expression(library_size=1e4)
    np.testing.assert_allclose(expr.sum(1), 1e4, rtol=1e-4)


def test_bad_batch_and_modality_names(trained):
    with pytest.raises(ValueError, match="batch_0"):
        trained.get_normalized_expression(transform_batch="nope")
    with pytest.raises(ValueError, match="joint"):
        trained.get_latent_representation(modality="protein")


def test_save_load_round_trip_gives_identical_latents(trained, sim_mdata, tmp_path):
    trained.save(tmp_path / "m")
    with pytest.raises(FileExistsError):
        trained.save(tmp_path / "m")
    loaded = scamort.SCAMORT.load(tmp_path / "m", sim_mdata)
    for modality in ("joint", "rna", "atac"):
        np.testing.assert_array_equal(
            loaded.get_latent_representation(modality=modality),
            trained.get_latent_representation(modality=modality),
        )
    assert loaded.config == trained.config and loaded.spec == trained.spec
    pd.testing.assert_frame_equal(loaded.history.table, trained.history.table, check_dtype=False)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "history.csv",
        "model.pt",
    ]


def test_training_is_reproducible_with_a_seed(tiny_mdata):
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    runs = []
    for _ in range(2):
        model = scamort.SCAMORT(tiny_mdata, n_hidden=32, seed=3)
        model.train(max_epochs=3, batch_size=64, seed=7, progress_bar=False)
        runs.append(model.get_latent_representation())
    np.testing.assert_array_equal(runs[0], runs[1])
    other = scamort.SCAMORT(tiny_mdata, n_hidden=32, seed=3)
    other.train(max_epochs=3, batch_size=64, seed=8, progress_bar=False)
    assert not np.allclose(other.get_latent_representation(), runs[0])


def test_rna_alone_from_anndata_like_scvi(sim_mdata):
    rna = sim_mdata["rna"].copy()
    rna.layers["counts"] = rna.X.copy()
    rna.X = None
    zinb = scamort.Modality("rna", likelihood="zinb", dispersion="gene-batch")
    scamort.SCAMORT.setup_anndata(rna, modality=zinb, layer="counts", batch_key="batch")
    model = scamort.SCAMORT(rna)
    model.train(max_epochs=25, progress_bar=False)
    z = model.get_latent_representation()
    assert z.shape == (rna.n_obs, 20) and np.isfinite(z).all()
    assert leiden_sweep(z, rna.obs["cell_type"].to_numpy())["ari"] >= MIN_ARI
    with pytest.raises(ValueError, match="no atac modality"):
        model.get_accessibility_estimates()


def test_poisson_atac_and_early_stopping(tiny_mdata):
    poisson = scamort.Modality("atac", likelihood="poisson")
    scamort.SCAMORT.setup_mudata(tiny_mdata, {"rna": "rna", "atac": poisson})
    model = scamort.SCAMORT(tiny_mdata, n_hidden=32)
    model.train(
        max_epochs=200,
        early_stopping=True,
        early_stopping_patience=2,
        batch_size=64,
        progress_bar=False,
    )
    assert len(model.history.table) < 200
    assert np.isfinite(model.get_latent_representation()).all()
    with pytest.raises(ValueError, match="validation"):
        model.train(max_epochs=1, early_stopping=True, validation_fraction=0.0)


def test_new_data_with_same_features_can_be_embedded(trained, sim_mdata):
    sub = sim_mdata[sim_mdata.obs_names[:50]].copy()
    z_sub = trained.get_latent_representation(sub)
    z_all = trained.get_latent_representation()
    np.testing.assert_allclose(z_sub, z_all[:50], rtol=1e-5, atol=1e-5)


def test_single_modality_refinement_and_gaps(trained, sim_mdata):
    status, _ = _status(sim_mdata)
    z, elbos = trained.get_latent_representation(modality="atac", refine_steps=5, return_elbo=True)
    assert np.isnan(z[status == "rna_only"]).all()
    assert elbos["elbo_refined"][status == "rna_only"].isna().all()
    gain = (elbos["elbo_refined"] - elbos["elbo_amortized"])[status != "rna_only"]
    assert np.isfinite(gain).all() and gain.mean() > 0
    gaps = trained.get_gaps(indices=np.arange(60), steps=(5, 20), converge_steps=60, iw_samples=32)
    assert len(gaps) == 60 and list(gaps.index) == list(sim_mdata.obs_names[:60])
    assert gaps["amortization_gap"].mean() > 0
    assert gaps["approximation_gap"].mean() > 0
    # More steps close more of the gap (means over cells; common evaluation draws).
    means = gaps[["elbo_amortized", "elbo_refined_5", "elbo_refined_20"]].mean()
    assert means.is_monotonic_increasing
    summary = scamort.gaps.summarize_gaps(gaps, pd.Series(status[:60], index=gaps.index))
    assert summary.loc["all", "cells"] == 60 and "closed_after_20" in summary


def test_compiled_networks_train_like_eager(tiny_mdata):
    """train(compile=True) runs the same model through torch.compile: per-epoch training
    ELBOs agree with eager mode to within 1 % (kernels differ in rounding only), and
    the compiled path did run (dynamo captured and compiled graphs)."""
    from torch._dynamo.utils import counters

    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    runs = []
    for compile_ in (False, True):
        torch._dynamo.reset()
        counters.clear()
        model = scamort.SCAMORT(tiny_mdata, n_hidden=16, seed=0)
        model.train(max_epochs=2, seed=0, progress_bar=False, compile=compile_)
        assert np.isfinite(model.get_latent_representation()).all()
        runs.append(model.history.table["elbo_train"].to_numpy())
        compiled = counters["stats"]["unique_graphs"]
        assert (compiled > 0) == compile_, dict(counters["stats"])
    np.testing.assert_allclose(runs[1], runs[0], rtol=0.01)


def test_tfidf_atac_input_follows_its_formula_and_is_saved(tiny_mdata, tmp_path):
    tfidf = scamort.Modality("atac", input="tfidf")
    scamort.SCAMORT.setup_mudata(tiny_mdata, {"rna": "rna", "atac": tfidf}, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, seed=0)
    X = tiny_mdata.mod["atac"].X.toarray() > 0
    idf = X.shape[0] / (1.0 + X.sum(0))
    assert np.allclose(model.module.inputs["atac"].idf.numpy(), idf, rtol=1e-6)
    # a cell's input: log1p(1e4 * (open / n_open) * idf) at its open peaks, nothing else
    cells = model._cells
    row = int(np.flatnonzero(cells.mask[:, 1])[0])
    x = cells.tensors.batch(np.array([row]))["x"]["atac"]
    got = model.module.encoder_input("atac", x).dense()[0].numpy()
    b = cells.x["atac"][row].toarray()[0] > 0
    want = np.where(b, np.log1p(1e4 * b / b.sum() * idf), 0.0)
    assert np.allclose(got, want, rtol=1e-5)
    model.train(max_epochs=2, progress_bar=False)
    model.save(tmp_path / "m")
    loaded = scamort.SCAMORT.load(tmp_path / "m", tiny_mdata)
    assert np.allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6
    )
    with pytest.raises(ValueError, match="input='lsi' is not valid"):
        scamort.Modality("atac", input="lsi")


def test_paired_average_embeds_paired_cells_by_the_mean_of_their_single_modality_means(trained):
    mask = trained._cells.mask
    paired = mask.all(1)
    assert paired.any() and (~paired).any()
    # the amortized embeddings (refinement embeds the paired cells otherwise)
    latent = functools.partial(trained.get_latent_representation, refine_steps=0)
    product = latent(paired="product")
    average = latent(paired="average")
    np.testing.assert_array_equal(latent(), average)  # "auto"
    rna, atac = (latent(modality=m) for m in ("rna", "atac"))
    np.testing.assert_allclose(average[paired], (rna[paired] + atac[paired]) / 2, atol=1e-5)
    np.testing.assert_array_equal(average[~paired], product[~paired])  # one modality: same
    # the product posterior is the sharper one: it sits farther from the origin
    norm = np.linalg.norm
    assert norm(product[paired], axis=1).mean() > norm(average[paired], axis=1).mean()
    draws = trained.get_latent_representation(paired="average", give_mean=False)
    assert np.isfinite(draws).all()
    with pytest.raises(ValueError, match="paired='product' .or 'auto'. to refine"):
        trained.get_latent_representation(paired="average", refine_steps=3)
    # "auto" refines the product posterior: its start is the product embedding
    _, elbo = trained.get_latent_representation(return_elbo=True)
    _, elbo0 = trained.get_latent_representation(paired="product", return_elbo=True)
    pd.testing.assert_frame_equal(elbo, elbo0)
    with pytest.raises(ValueError, match="paired="):
        trained.get_latent_representation(paired="mixture")


def test_prior_false_embeds_each_cell_by_its_experts_alone(trained):
    """Without the prior a single-modality latent is its expert's mean, and with it the
    closed-form product with N(0, 1): mean * tau / (1 + tau), tau the expert's
    precision; paired cells average their experts' means; unpaired ones sit at their
    one expert's mean in the joint latent. Refinement needs the prior."""
    import torch

    store = trained._cells.tensors
    cells = np.arange(store.n_cells)
    with trained._inference.frozen(), torch.no_grad():
        b = store.batch(cells)
        experts = trained.module.experts(b["x"], b["mask"], b["cov"], b["mask_host"])
    mask = store.mask_host
    joint = trained.get_latent_representation(prior=False)
    for j, m in enumerate(trained.spec.modalities):
        loc, prec = experts[j].loc.numpy(), experts[j].scale.numpy() ** -2.0
        alone = trained.get_latent_representation(modality=m, prior=False)
        with_prior = trained.get_latent_representation(modality=m, prior=True)
        has = mask[:, j]
        np.testing.assert_allclose(alone[has], loc[has], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            with_prior[has], (loc * prec / (1 + prec))[has], rtol=1e-4, atol=1e-5
        )
        assert np.isnan(alone[~has]).all()
        only = has & (mask.sum(1) == 1)
        np.testing.assert_allclose(joint[only], loc[only], rtol=1e-4, atol=1e-5)
    paired = mask.all(1)
    locs = [e.loc.numpy() for e in experts]
    np.testing.assert_allclose(joint[paired], np.mean(locs, 0)[paired], rtol=1e-4, atol=1e-5)
    product = trained.get_latent_representation(prior=False, paired="product")
    assert np.isfinite(product).all() and not np.allclose(product[paired], joint[paired])
    assert np.array_equal(trained.get_latent_representation(prior="auto"), joint)
    with pytest.raises(ValueError, match="prior=True .or 'auto'. to refine"):
        trained.get_latent_representation(prior=False, refine_steps=2)
    with pytest.raises(ValueError, match="prior='no' is not valid"):
        trained.get_latent_representation(prior="no")


def test_adversarial_batch_mixing_removes_batch_signal_and_keeps_cell_types(tmp_path):
    """A linear probe on the latent tells the batch less well with the adversary, and the
    cell types as well as without it; the classifier is saved and loaded with the model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    mdata = scamort.datasets.simulate_multiome(
        n_cells=600, n_genes=100, n_peaks=400, batch_effect=1.5, seed=1
    )
    scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    obs = mdata.obs
    probe = {}
    for w in (0.0, 1.0):
        model = scamort.SCAMORT(mdata, seed=0, n_hidden=64, adversarial_batch_weight=w)
        model.train(max_epochs=30, seed=0, batch_size=64, progress_bar=False)
        z = model.get_latent_representation()
        probe[w] = [
            cross_val_score(LogisticRegression(max_iter=2000), z, obs[k].astype(str), cv=5).mean()
            for k in ("batch", "cell_type")
        ]
    (batch0, type0), (batch1, type1) = probe[0.0], probe[1.0]
    assert batch1 < batch0 - 0.05, probe
    assert type1 > type0 - 0.03, probe
    model.save(tmp_path / "m")
    loaded = scamort.SCAMORT.load(tmp_path / "m", mdata)
    assert loaded.module.batch_classifier is not None
    np.testing.assert_allclose(loaded.get_latent_representation(), z, atol=1e-6)
    with pytest.raises(ValueError, match="needs a batch to mix"):
        single = mdata.copy()
        scamort.SCAMORT.setup_mudata(single)
        scamort.SCAMORT(single, adversarial_batch_weight=1.0)


def test_single_views_auto_samples_when_most_cells_are_paired(tiny_mdata):
    paired = scamort.datasets.simulate_multiome(
        n_cells=120, n_genes=40, n_peaks=80, frac_paired=1.0, frac_rna_only=0.0, seed=2
    )
    for data, expected in ((tiny_mdata, "all"), (paired, "sample")):
        scamort.SCAMORT.setup_mudata(data, batch_key="batch")
        assert scamort.SCAMORT(data).config.single_views == expected
        assert scamort.SCAMORT(data, single_views="all").config.single_views == "all"
    assert scamort.SCAMORT(paired, single_views="sample").config.single_views == "sample"
    with pytest.raises(ValueError, match="single_views='some'.*'auto'"):
        scamort.SCAMORT(paired, single_views="some")


def test_cell_factor_width_is_set_saved_and_defaults_to_n_hidden(tiny_mdata, tmp_path):
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    default = scamort.SCAMORT(tiny_mdata, n_hidden=32).module.decoders["atac"]
    assert default.cell_factor.in_features == 32
    narrow = scamort.Modality("atac", cell_factor_hidden=8)
    scamort.SCAMORT.setup_mudata(tiny_mdata, {"rna": "rna", "atac": narrow}, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=32)
    assert model.module.decoders["atac"].cell_factor.in_features == 8
    model.train(max_epochs=1, progress_bar=False)
    model.save(tmp_path / "m")
    loaded = scamort.SCAMORT.load(tmp_path / "m", tiny_mdata)
    assert loaded.module.decoders["atac"].cell_factor.in_features == 8
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), rtol=1e-5
    )


def test_a_model_trained_without_the_prior_expert_is_saved_so_and_older_ones_keep_it(
    tiny_mdata, tmp_path
):
    """prior_expert=False survives save / load (the loaded model embeds without the prior,
    as it was trained); a saved configuration from before the option loads with the
    prior, which is how such models were trained."""
    import json

    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=32, prior_expert=False)
    model.train(max_epochs=1, progress_bar=False)
    model.save(tmp_path / "m")
    loaded = scamort.SCAMORT.load(tmp_path / "m", tiny_mdata)
    assert loaded.config.prior_expert is False
    np.testing.assert_allclose(
        loaded.get_latent_representation(modality="rna"),
        model.get_latent_representation(modality="rna", prior=False),
        rtol=1e-5,
    )
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    del config["module"]["prior_expert"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    assert scamort.SCAMORT.load(tmp_path / "m", tiny_mdata).config.prior_expert is True
