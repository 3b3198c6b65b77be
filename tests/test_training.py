"""Training options that must do what they say: warm-up, continued training, options,
registrations and chunk sizes carried to new and loaded data."""

import mudata as md
import numpy as np
import pytest

import scamort
from scamort.kinds.atac import BernoulliDecoder, PoissonDecoder
from scamort.kinds.rna import NBDecoder
from scamort.nn import DecoderShape


def test_kl_warmup_ends_within_max_steps(tiny_mdata):
    # 270 training cells in batches of 64: 5 steps an epoch. max_steps=40 stops after 8
    # of the 100 epochs; the KL weight must still reach 1 (warm-up over 2 epochs, where a
    # warm-up over a quarter of max_epochs would end at 8 / 25).
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=16)
    model.train(max_epochs=100, max_steps=40, batch_size=64, progress_bar=False)
    h = model.history.table
    assert (~h["all_cells"]).sum() == 8
    assert h["kl_weight"].iloc[7] == 1.0 and h["kl_weight"].iloc[0] < 1.0


def test_the_warm_up_does_not_stretch_with_more_epochs():
    from scamort.model.training import default_warmup

    assert default_warmup(150, 29, None, 20) == default_warmup(29, 29, None, 20) == 29 / 4
    assert default_warmup(10, 29, None, 20) == 10 / 4  # a shorter training: its quarter
    assert default_warmup(100, 400, 40, 5) == 8 / 4  # max_steps ends it after 8 epochs


def test_early_stopping_is_on_by_default_and_ends_after_patience(tiny_mdata):
    """Default training stops once the held-out ELBO has not improved for `patience`
    epochs counted from the end of the warm-up (300 cells overfit long before 300
    epochs); without held-out cells it runs every epoch."""
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=16)
    model.train(
        max_epochs=300, kl_warmup_epochs=5, early_stopping_patience=5, batch_size=64,
        progress_bar=False,
    )  # fmt: skip
    h = model.history.table
    main = h[~h["all_cells"]]
    counted = main[main["epoch"] >= 4]  # epoch index 4 ends the 5-epoch warm-up
    best = int(counted["epoch"][counted["elbo_validation"].idxmax()])
    assert len(main) == best + 5 + 1 < 300
    # then the final pass on every cell: a third of those epochs, rounded up
    final = -(-len(main) // 3)
    assert h["all_cells"].sum() == final and h["all_cells"].iloc[-final:].all()
    assert list(h["epoch"]) == list(range(len(h)))
    model = scamort.SCAMORT(tiny_mdata, n_hidden=16)
    model.train(max_epochs=12, validation_fraction=0.0, batch_size=64, progress_bar=False)
    assert len(model.history.table) == 12 and not model.history.table["all_cells"].any()
    with pytest.raises(ValueError, match="'auto'"):
        model.train(max_epochs=1, early_stopping="yes")


def test_a_second_train_extends_the_history(tiny_mdata):
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=16)
    model.train(max_epochs=2, progress_bar=False)
    first = model.history.table.copy()
    model.train(max_epochs=3, progress_bar=False)
    h = model.history.table
    # each train(): its epochs, then the final pass over every cell (a third as many)
    assert len(first) == 2 + 1
    assert list(h["epoch"]) == list(range(3 + 3 + 1))
    assert list(h["all_cells"]) == [False] * 2 + [True] + [False] * 3 + [True]
    np.testing.assert_array_equal(h["elbo_train"].iloc[:3], first["elbo_train"])


def test_decoders_refuse_options_they_do_not_have():
    shape = DecoderShape(4, 10, 1, 8, 1, 0.0)
    with pytest.raises(TypeError, match="cell_factor_hidden"):
        NBDecoder(shape, cell_factor_hidden=3)
    with pytest.raises(TypeError, match="zero_inflated"):
        PoissonDecoder(shape, zero_inflated=True)
    with pytest.raises(TypeError, match="n_dispersion_groups"):
        BernoulliDecoder(shape, n_dispersion_groups=2)


def test_load_leaves_the_datas_registration_alone(tiny_mdata, tmp_path):
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    scamort.SCAMORT(tiny_mdata, n_hidden=16).save(tmp_path / "m")
    scamort.SCAMORT.setup_mudata(tiny_mdata)  # the user's own setup, no batch
    spec = scamort.SCAMORT.get_setup(tiny_mdata)
    scamort.SCAMORT.load(tmp_path / "m", tiny_mdata)
    assert scamort.SCAMORT(tiny_mdata, n_hidden=16).spec == spec


def test_chunk_size_is_kept_for_new_and_loaded_backed_data(tiny_mdata, tmp_path):
    path = tmp_path / "d.h5mu"
    tiny_mdata.write_h5mu(path)
    disk = md.read_h5mu(path, backed=True)
    scamort.SCAMORT.setup_mudata(disk, batch_key="batch", chunk_size=37)
    model = scamort.SCAMORT(disk, n_hidden=16)
    assert model._cells.chunk_size == 37
    other = md.read_h5mu(path, backed=True)
    assert model._inference.cells_of(other).chunk_size == 37
    model.save(tmp_path / "m")
    loaded = scamort.SCAMORT.load(tmp_path / "m", other, chunk_size=11)
    assert loaded._cells.chunk_size == 11
    np.testing.assert_allclose(
        loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6
    )


def test_the_training_step_logs_only_device_tensors(tiny_mdata, monkeypatch):
    """A Python number passed to self.log is copied to the device every step (a
    synchronisation on a GPU): the plan logs tensors only, and the KL weight still
    reaches the history."""
    import torch

    from scamort.train import TrainingPlan

    logged = []
    original = TrainingPlan.log

    def spy(self, name, value, *args, **kwargs):
        logged.append((name, isinstance(value, torch.Tensor)))
        return original(self, name, value, *args, **kwargs)

    monkeypatch.setattr(TrainingPlan, "log", spy)
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=16)
    model.train(max_epochs=2, progress_bar=False)
    assert logged and all(is_tensor for _, is_tensor in logged), logged
    assert model.history.table["kl_weight"].between(0, 1).all()


def test_results_on_few_cells_copy_only_those_cells(tiny_mdata, monkeypatch):
    """get_gaps on a handful of cells moves minibatches of those cells to the device,
    never the whole data set."""
    from scamort.data.loaders import CellTensors

    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=16)
    moved = []
    original = CellTensors.to

    def spy(self, device, non_blocking=False):
        moved.append(self.n_cells)
        return original(self, device, non_blocking)

    monkeypatch.setattr(CellTensors, "to", spy)
    model.get_gaps(indices=np.arange(6), steps=(2,), converge_steps=3, iw_samples=4)
    assert all(n <= 6 for n in moved)


def test_the_final_pass_embeds_the_held_out_cells_like_the_others():
    """Early stopping holds a tenth of the cells out; the final pass trains the encoders
    on every cell, so the held-out paired cells' RNA and ATAC views end up closer
    (FOSCTTM) to how close those of the cells trained on all along are, and their ELBO
    closer too; the decoders stay as early stopping left them. Same seed, so the
    early-stopped epochs of both runs are identical; only the final pass differs."""
    import torch

    from scamort.data.loaders import holdout
    from scamort.metrics import foscttm_per_cell

    mdata = scamort.datasets.simulate_multiome(n_cells=1500, n_genes=200, n_peaks=600, seed=0)
    scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    held = np.zeros(mdata.n_obs, dtype=bool)
    held[holdout(mdata.n_obs, 0.1, 0)[1]] = True
    paired = mdata.obs["modality"].to_numpy() == "paired"
    gaps, models = {}, {}
    for final_epochs in (0, None):
        model = scamort.SCAMORT(mdata, n_hidden=32, seed=0)
        model.train(
            max_epochs=40, batch_size=128, seed=0, final_epochs=final_epochs, progress_bar=False
        )
        main = (~model.history.table["all_cells"]).sum()
        assert model.history.table["all_cells"].sum() == (0 if final_epochs == 0 else -(-main // 3))
        f = foscttm_per_cell(
            model.get_latent_representation(modality="rna")[paired],
            model.get_latent_representation(modality="atac")[paired],
        )
        elbo = model.get_elbo(return_mean=False)
        gaps[final_epochs is None] = (
            f[held[paired]].mean() - f[~held[paired]].mean(),
            elbo[~held].mean() - elbo[held].mean(),
        )
        models[final_epochs is None] = model.module.state_dict()
    before, after = gaps[False], gaps[True]
    assert before[0] > 0.02 and before[1] > 1.0, gaps  # unseen cells are embedded worse
    # measured: FOSCTTM gap 0.041 -> 0.026, ELBO gap 2.93 -> 2.88 (decoders unchanged)
    assert after[0] < 0.75 * before[0] and after[1] < 0.99 * before[1], gaps
    for name, weights in models[False].items():
        same = torch.equal(weights, models[True][name])
        assert same == (not name.startswith("encoders.")), name
    assert all(p.requires_grad for p in model.module.parameters())  # flags restored
    with pytest.raises(ValueError, match="final_epochs"):
        model.train(max_epochs=1, final_epochs=-1)


def test_held_out_cells_train_the_encoders_alone(tiny_mdata):
    """With a minibatch of held-out cells beside the training one, every weight outside
    the encoders gets exactly the gradient of the training cells alone (weighted by
    their share of the step's cells): the decoders, which early stopping judges on the
    held-out cells, never learn from them; each encoder's gradient changes."""
    import torch

    from scamort.train import TrainingPlan

    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=16, seed=0)
    store = model._cells.tensors
    plan = TrainingPlan(model.module, 1e-3, 0.0, 0.0)
    fit, held = store.batch(np.arange(200)), store.batch(np.arange(200, 300))

    def gradients(held_batch):
        model.module.zero_grad()
        torch.manual_seed(0)
        loss, _ = plan.step_loss(fit, held_batch, 1.0)
        loss.backward()
        return {k: p.grad.clone() for k, p in model.module.named_parameters()}

    alone, both = gradients(None), gradients(held)
    for k, g in alone.items():
        if not k.startswith("encoders."):
            torch.testing.assert_close(both[k], g * 200 / 300, msg=k)
    for m in model.module.encoders:
        names = [k for k in alone if k.startswith(f"encoders.{m}.")]
        assert any(not torch.allclose(both[k], alone[k] * 200 / 300) for k in names), m
    assert all(p.requires_grad for p in model.module.parameters())  # flags restored


def test_held_out_cells_trained_by_the_encoders_are_embedded_like_the_others():
    """heldout_encoders=True: the held-out paired cells' RNA and ATAC views end up about
    as close (FOSCTTM) as those of the cells the decoders learn from, without a final
    pass; the held-out ELBO still drives early stopping and no epoch is all-cells."""
    from scamort.data.loaders import holdout
    from scamort.metrics import foscttm_per_cell

    mdata = scamort.datasets.simulate_multiome(n_cells=1500, n_genes=200, n_peaks=600, seed=0)
    scamort.SCAMORT.setup_mudata(mdata, batch_key="batch")
    held = np.zeros(mdata.n_obs, dtype=bool)
    held[holdout(mdata.n_obs, 0.1, 0)[1]] = True
    paired = mdata.obs["modality"].to_numpy() == "paired"
    gaps = {}
    for heldout_encoders in (False, True):
        model = scamort.SCAMORT(mdata, n_hidden=32, seed=0)
        model.train(
            max_epochs=40,
            batch_size=128,
            seed=0,
            final_epochs=0,
            heldout_encoders=heldout_encoders,
            progress_bar=False,
        )
        assert not model.history.table["all_cells"].any()
        assert model.history.table["elbo_validation"].notna().all()
        f = foscttm_per_cell(
            model.get_latent_representation(modality="rna")[paired],
            model.get_latent_representation(modality="atac")[paired],
        )
        gaps[heldout_encoders] = f[held[paired]].mean() - f[~held[paired]].mean()
    with pytest.raises(ValueError, match="heldout_encoders must be True or False"):
        model.train(max_epochs=1, heldout_encoders="yes")
    assert gaps[False] > 0.02, gaps  # cells the encoders never saw are embedded worse
    # measured: FOSCTTM gap 0.041 without, -0.014 with (the held-out cells' views closer)
    assert abs(gaps[True]) < 0.5 * gaps[False], gaps


def test_training_says_how_it_went_and_when_it_ran_out_of_epochs(capsys):
    """One summary line at the end; a run cut off by max_epochs while its held-out ELBO
    still rises is said to be under-trained (a user's max_epochs=10 on a small data set)."""
    data = scamort.datasets.simulate_multiome(n_cells=600, n_genes=200, n_peaks=600, seed=3)
    scamort.SCAMORT.setup_mudata(data, batch_key="batch")
    model = scamort.SCAMORT(data)
    with pytest.warns(
        UserWarning, match=r"max_epochs=5 while the held-out ELBO was still improving"
    ):
        model.train(max_epochs=5)
    shown = capsys.readouterr()
    err = shown.err
    summary = [line for line in err.splitlines() if line.startswith("scamort: trained")]
    assert len(summary) == 1 and "trained 5 epochs (ran all max_epochs)" in summary[0]
    assert "held-out ELBO per cell" in summary[0] and "final-pass epochs" in summary[0]
    bars = shown.out  # Lightning's bar writes to stdout
    assert "training, epoch 5/5" in bars and "final pass (encoders, all cells), epoch" in bars
