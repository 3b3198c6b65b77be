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
