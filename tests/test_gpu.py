"""GPU tests: skipped without CUDA (see conftest)."""

import numpy as np
import pytest

import scamort


@pytest.mark.gpu
def test_trains_on_gpu_and_matches_cpu_inference(tiny_mdata, tmp_path):
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=32)
    model.train(max_epochs=3, accelerator="gpu", progress_bar=False)
    assert model.device.type == "cuda"
    z_gpu = model.get_latent_representation()
    assert np.isfinite(z_gpu).all()
    model.save(tmp_path / "m")
    on_cpu = scamort.SCAMORT.load(tmp_path / "m", tiny_mdata)
    assert on_cpu.device.type == "cpu"
    np.testing.assert_allclose(on_cpu.get_latent_representation(), z_gpu, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_refinement_on_gpu_matches_cpu(tiny_mdata):
    import torch

    from scamort.module import refine

    # The same deterministic objective (fixed draws made on the CPU) on both devices.
    g = torch.Generator().manual_seed(0)
    A = torch.randn(6, 2, generator=g, dtype=torch.float64)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64)

    def make(device):
        Ad, xd = A.to(device), x.to(device)
        return lambda z: -0.5 * ((xd - z @ Ad.T) ** 2).sum(-1) / 0.25

    results = []
    for device in ("cpu", "cuda"):
        loc = torch.zeros(500, 2, dtype=torch.float64, device=device)
        out = refine(
            make(device),
            loc,
            torch.ones_like(loc),
            steps=300,
            lr=0.05,
            n_samples=16,
            fixed_noise=True,
            generator=torch.Generator(device).manual_seed(0),
        )
        results.append(out)
    # Draws differ between the CPU and CUDA generators; both converge to the same optimum.
    torch.testing.assert_close(results[1].loc.cpu(), results[0].loc, atol=0.05, rtol=0)
    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=32)
    model.train(max_epochs=3, accelerator="cpu", progress_bar=False)
    _, cpu = model.get_latent_representation(refine_steps=20, return_elbo=True)
    _, gpu = model.to_device("cuda").get_latent_representation(refine_steps=20, return_elbo=True)
    np.testing.assert_allclose(gpu["elbo_amortized"], cpu["elbo_amortized"], rtol=0.02)
    gain_cpu = (cpu["elbo_refined"] - cpu["elbo_amortized"]).mean()
    gain_gpu = (gpu["elbo_refined"] - gpu["elbo_amortized"]).mean()
    assert abs(gain_gpu - gain_cpu) < 0.2 * gain_cpu


@pytest.mark.gpu
@pytest.mark.parametrize("peak_sampling", [None, 16])
def test_a_training_step_makes_no_host_device_synchronisation(tiny_mdata, peak_sampling):
    """Gather, loss, backward and the fused AdamW step under CUDA's sync debug mode, which
    raises on any call that makes the host wait for the device (.item(), a blocking copy,
    nonzero...), with the exact and the sampled peak likelihood. The CPU twin of this
    test runs the same step on the meta device."""
    import torch

    atac = scamort.Modality("atac", peak_sampling=peak_sampling)
    scamort.SCAMORT.setup_mudata(tiny_mdata, {"rna": "rna", "atac": atac}, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=32)
    module = model.module.to("cuda")
    store = model._cells.tensors.to("cuda")
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, fused=True)
    idx = np.random.default_rng(0).permutation(store.n_cells)[:64]

    def step():
        out = module.loss(store.batch(idx), 0.5)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    step()  # first step: lazy CUDA initialisation and allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step() for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(v).item() for v in losses)


@pytest.mark.gpu
def test_the_training_plan_makes_no_synchronisation_inside_a_step(tiny_mdata):
    """The full Lightning training step of the plan (gather, loss, logging, backward,
    optimizer step) under CUDA's sync debug mode "error", switched on at each batch's
    start and off at its end (epoch-end bookkeeping may synchronise once an epoch)."""
    import lightning as L
    import torch

    class SyncGuard(L.Callback):
        def on_train_batch_start(self, trainer, plan, batch, batch_idx):
            if batch_idx > 0:  # the first step allocates and initialises lazily
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, trainer, plan, outputs, batch, batch_idx):
            torch.cuda.set_sync_debug_mode("default")

    scamort.SCAMORT.setup_mudata(tiny_mdata, batch_key="batch")
    model = scamort.SCAMORT(tiny_mdata, n_hidden=32)
    original = L.Trainer.__init__

    def with_guard(self, *args, **kwargs):
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), SyncGuard()]
        original(self, *args, **kwargs)

    L.Trainer.__init__ = with_guard
    try:
        model.train(max_epochs=2, batch_size=64, accelerator="gpu", progress_bar=False)
    finally:
        L.Trainer.__init__ = original
        torch.cuda.set_sync_debug_mode("default")
    assert np.isfinite(model.history.table["elbo_train"]).all()
