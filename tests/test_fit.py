"""brgm_pyro.fit: the bound on the residual over the observed pixels, against its closed form and the operator's
exact diag(F F^T); a residual drawn from the model's own noise passes, one 1.5 times larger is flagged."""

import math

import pytest
import torch

from brgm_pyro.fit import SIGMAS, check_fit
from brgm_pyro.forward import Downsample, Mask
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.models.brgm import BRGMParams
from brgm_pyro.reconstruct import ReconstructionResult

SIZE = 16


def _result(f, residual_std, params, seed=0):
    """A result whose f(G(w)) misses y by Gaussian noise of ``residual_std`` per pixel (batch of 2)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 1, SIZE, SIZE, generator=gen)
    y_rec = f(image)
    y = y_rec + residual_std * torch.randn(y_rec.shape, generator=gen)
    observed = f.observed(image.shape) if isinstance(f, Mask) else torch.ones_like(y)
    return ReconstructionResult(image=image, w=torch.zeros(2, 1, 1), y=y, y_reconstructed=y_rec, observed=observed,
                                losses={}, data_consistency={}, params=params, schedule=MAPSchedule())


def _exact_d(f):
    """The mean of diag(F F^T) over f's outputs, from the Jacobian: the squared norm of each row of F."""
    jacobian = torch.autograd.functional.jacobian(lambda x: f(x[None, None])[0, 0].flatten(), torch.zeros(SIZE, SIZE))
    return float(jacobian.flatten(1).square().sum(1).mean())


@pytest.mark.parametrize("f", [Mask.center_box(SIZE, 6), Downsample(2, "bicubic"), Downsample(4, "box")],
                         ids=["mask", "bicubic-x2", "box-x4"])
def test_the_bound_is_the_closed_form_with_the_operators_own_diag_of_f_f_transpose(f):
    params = BRGMParams(sigma_pixel=0.01, sigma_reach=0.06)
    check = check_fit(_result(f, 0.0, params), f)
    observed = f.observed((1, 1, SIZE, SIZE)).sum() if isinstance(f, Mask) else f(torch.zeros(1, 1, SIZE, SIZE)).numel()
    d = 1.0 if isinstance(f, Mask) else _exact_d(f)
    expected = math.sqrt((0.01**2 + 0.06**2 * d) * (1 + SIGMAS * math.sqrt(2 / float(observed))))
    torch.testing.assert_close(check.allowed, torch.full((2,), expected), rtol=0.06, atol=0)
    assert check.fits.all() and check.note(0, "a.png") is None  # f(G(w)) == y: nothing to flag


def test_a_residual_of_the_models_noise_fits_and_one_half_again_as_large_does_not():
    f = Mask.center_box(SIZE, 6)
    params = BRGMParams(sigma_pixel=0.005, sigma_reach=0.06)
    noise = math.sqrt(0.005**2 + 0.06**2)
    assert check_fit(_result(f, noise, params, seed=1), f).fits.all()
    misfit = check_fit(_result(f, 1.5 * noise, params, seed=1), f)
    assert not misfit.fits.any()
    torch.testing.assert_close(misfit.rmse, torch.full((2,), 1.5 * noise), rtol=0.15, atol=0)
    note = misfit.note(1, "inpaint b.png")
    rmse, allowed = float(misfit.rmse[1]), float(misfit.allowed[1])
    assert note == (f"inpaint b.png: f(reconstruction) misses the observed pixels of the input by an RMS of {rmse:.3f} "
                    f"({-20 * math.log10(rmse):.1f} dB), more than the {allowed:.3f} that the noise and the prior's reach "
                    "explain; the reconstruction does not explain its input there.")
    assert misfit.record(1) == {"rmse_observed": round(float(misfit.rmse[1]), 5),
                                "rmse_allowed": round(float(misfit.allowed[1]), 5), "fits": False}


def test_brgm_reconstruct_records_the_fit_and_names_each_misfit(tmp_path, capsys):
    """A random prior after one step misses its observed pixels: brgm.json holds every image's fit and the note,
    stderr has one note line per misfit, and none for an image that fits."""
    import json

    from conftest import tiny_generator

    import brgm_pyro as bp
    from brgm_pyro import io
    from brgm_pyro.cli import main

    G = tiny_generator(16)
    generator = bp.save_generator(G, tmp_path / "g.safetensors")
    mask = Mask.center_box(SIZE, 6)
    io.write_image(tmp_path / "mask.png", mask.mask.reshape(SIZE, SIZE))
    fitted = G.sample(1, seed=3)[0]  # an image G makes: its MAP from w_avg may or may not fit; a random one does not
    io.write_image(tmp_path / "random.png", torch.rand(1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)))
    io.write_image(tmp_path / "own.png", fitted)
    argv = ["reconstruct", str(tmp_path / "random.png"), str(tmp_path / "own.png"), "--generator", str(generator),
            "--task", "inpaint", "--mask", str(tmp_path / "mask.png"), "--steps", "1", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "misses the observed pixels" in line]
    images = json.loads((tmp_path / "out" / "brgm.json").read_text())["images"]
    assert [image["name"] for image in images] == ["random", "own"]
    assert images[0]["fit"]["fits"] is False and images[0]["fit"]["note"].startswith("random: f(reconstruction) misses")
    for image in images:
        assert image["fit"]["fits"] == (image["fit"]["rmse_observed"] <= image["fit"]["rmse_allowed"])
        assert ("note" in image["fit"]) != image["fit"]["fits"]
    assert notes == [f"brgm: note: {image['fit']['note']}" for image in images if not image["fit"]["fits"]]
