"""A prior's intervals calibrated on validation images: ``calibrate``, the card, ``post.interval`` with and without."""

import json

import pytest
import torch
from conftest import sample_images, tiny_generator

import brgm_pyro as bp
from brgm_pyro.forward import Downsample, Mask
from brgm_pyro.forward.free_form import free_form_mask
from brgm_pyro.sampling import sample_posterior
from brgm_pyro.uncertainty import conformal
from brgm_pyro.uncertainty.calibrate import calibrate

QUICK = dict(perceptual=None, map_schedule=bp.MAPSchedule(steps=3), steps=3, sigma_reach=0.05)
CALIBRATE = dict(QUICK, method="svi")  # calibrate's posterior: SVI, as the tests of post.interval sample


@pytest.fixture(scope="module")
def G():
    G = tiny_generator(16).requires_grad_(False)
    G.compute_w_stats(num_samples=256)
    return G


@pytest.fixture(scope="module")
def calibrated(G, tmp_path_factory):
    """A calibration of inpainting with free-form masks on 12 prior images, saved in a calibration file."""
    images = sample_images(G, 12, seed=11)
    folder = tmp_path_factory.mktemp("scores")
    calibration = calibrate(images, lambda i: free_form_mask(16, seed=i), G, 4, data="12 prior images",
                            scores_dir=folder, progress=False, **CALIBRATE)
    path = conformal.save_calibration(tmp_path_factory.mktemp("card") / "tiny.calibration.json", calibration)
    return calibration, path, folder


def test_calibrate_fits_on_the_posteriors_it_samples_and_resumes(G, calibrated):
    calibration, path, folder = calibrated
    assert calibration.task == "inpaint" and calibration.images == 12 and calibration.min_samples == 4
    assert calibration.prior == conformal.fingerprint(G) and calibration.settings["model"] == "reach"
    assert len(list(folder.iterdir())) == 12
    again = calibrate(sample_images(G, 12, seed=11), lambda i: free_form_mask(16, seed=i), G, 4,
                      data="12 prior images", scores_dir=folder, progress=False, **CALIBRATE)
    assert again == calibration  # every image's scores were read back, none sampled again
    assert json.loads(path.read_text())["calibration"]["inpaint"]["images"] == 12


def test_post_interval_is_calibrated_when_a_calibration_holds_and_raw_on_request(G, calibrated):
    calibration, path, _ = calibrated
    x = sample_images(G, 1, seed=99)
    f = free_form_mask(16, seed=500)
    post = sample_posterior(f(x), f, G, "svi", 4, calibration=path, **QUICK)
    assert post.calibration == calibration and "12 validation images" in post.calibration_note
    assert post.task == "inpaint" and torch.equal(post.unpinned[0, 0], f.mask == 0)
    lower, upper = post.interval(0.9)
    hole = post.unpinned
    cell = torch.bucketize(post.mean, torch.tensor(calibration.edges.get("unpinned", ())))
    scale = torch.tensor(calibration.scales["unpinned"][0.9])[cell]
    expected = (post.mean - scale * post.std).clamp(0, 1)
    assert torch.allclose(lower[hole], expected[hole], atol=1e-6)
    raw_lower, raw_upper = post.interval(0.9, calibrated=False)
    assert torch.equal(raw_lower, bp.metrics.credible_interval(post.samples, 0.9)[0])
    assert not torch.equal(raw_upper, upper)
    assert post.error_radius(0.9).shape == (1,) and post.error_radius(0.9, calibrated=False).shape == (1,)
    assert post.summary()["intervals"]["calibrated"] is True
    plain = sample_posterior(f(x), f, G, "svi", 4, calibration=None, **QUICK)
    assert plain.calibration is None and torch.equal(plain.interval(0.9)[0], bp.metrics.credible_interval(plain.samples, 0.9)[0])
    with pytest.raises(ValueError, match="no calibration to use: The posterior's own intervals: calibration=None"):
        plain.interval(0.9, calibrated=True)


def test_the_cards_calibration_is_used_by_default_only_where_it_holds(G, calibrated):
    calibration, _, _ = calibrated
    x = sample_images(G, 1, seed=98)
    G.card = {conformal.CARD_KEY: {"inpaint": calibration.to_dict()}}
    try:
        f = Mask.center_box(16, 6)
        post = sample_posterior(f(x), f, G, "svi", 8, **QUICK)
        assert post.calibration == calibration  # 8 draws: at least the 4 it was made with
        few = sample_posterior(f(x), f, G, "svi", 2, **QUICK)
        assert few.calibration is None and "at least 4 draws, and this posterior has 2" in few.calibration_note
        other = sample_posterior(f(x), f, G, "svi", 8, **{**QUICK, "sigma_reach": 0.1})
        assert other.calibration is None and "sigma_reach 0.05 instead of 0.1" in other.calibration_note
        sr = Downsample(4)
        none = sample_posterior(sr(x), sr, G, "svi", 8, **QUICK)
        assert none.calibration is None and "no calibration for superres-x4" in none.calibration_note
    finally:
        del G.card


def test_a_calibration_for_another_task_or_prior_or_a_bad_level_gets_one_sentence(G, calibrated):
    calibration, path, _ = calibrated
    x = sample_images(G, 1, seed=97)
    sr = Downsample(4)
    with pytest.raises(ValueError, match="holds calibrations for inpaint, not for this posterior's task superres-x4"):
        sample_posterior(sr(x), sr, G, "svi", 4, calibration=path, **QUICK)
    other = tiny_generator(16, seed=3).requires_grad_(False)
    f = Mask.center_box(16, 6)
    with pytest.raises(ValueError, match="does not hold for this posterior: it is for another prior"):
        sample_posterior(f(x), f, other, "svi", 4, calibration=calibration, **QUICK)
    post = sample_posterior(f(x), f, G, "svi", 4, calibration=calibration, **QUICK)
    for level in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            post.interval(level)
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            post.error_radius(level, calibrated=False)
    with pytest.raises(ValueError, match="not 0.93; pass one of them, or calibrated=False"):
        post.interval(0.93)
    assert post.interval(0.93, calibrated=False)[0].shape == x.shape
    with pytest.raises(ValueError, match="already holds a calibration for inpaint; pass replace=True"):
        conformal.save_calibration(path, calibration)
    with pytest.raises(ValueError, match="every one of|calibrate one task family"):
        calibrate(sample_images(G, 2, seed=1), lambda i: Mask.center_box(16, 6) if i == 0 else sr, G, 4,
                  progress=False, **CALIBRATE)
