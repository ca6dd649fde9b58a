"""Conformal recalibration: nominal coverage where the truth is known, failure under a shift, the record."""

import json
import math

import pytest
import torch

from brgm_pyro.uncertainty import conformal
from brgm_pyro.uncertainty.conformal import Calibration, image_scores, risk_controlling_scale


def too_narrow_posterior(images: int, pixels: int, truth_factor: float, seed: int):
    """Draws of a posterior whose std s varies by pixel, and truths spread truth_factor times wider:
    (draws (images, 32, 1, 1, pixels), truths (images, 1, 1, pixels)), all about 0.5."""
    gen = torch.Generator().manual_seed(seed)
    std = 0.005 + 0.02 * torch.rand(images, 1, 1, 1, pixels, generator=gen)
    draws = 0.5 + std * torch.randn(images, 32, 1, 1, pixels, generator=gen)
    truths = 0.5 + truth_factor * std[:, 0] * torch.randn(images, 1, 1, pixels, generator=gen)
    return draws, truths


def scores_of(draws, truths):
    hole = torch.ones(truths.shape[1:], dtype=torch.bool)
    return [image_scores(d, t, hole) for d, t in zip(draws, truths, strict=True)]


def calibrated_coverage(calibration, draws, truths, level):
    inside = []
    for d, t in zip(draws, truths, strict=True):
        lower, upper = calibration.interval(d.mean(0), d.std(0), torch.ones_like(t, dtype=torch.bool), level)
        inside.append(((lower <= t) & (t <= upper)).float().mean())
    return float(torch.stack(inside).mean())


def test_calibration_reaches_nominal_coverage_where_the_posterior_is_too_narrow_and_fails_under_a_shift():
    """The posterior is twice too narrow (raw 90% coverage about 0.59); calibrated on 60 images of
    the same kind, the intervals hold 0.90-0.93 of the pixels of 300 new images. Calibrated on those
    and used where the truth spreads twice as far again, they hold far less: the guarantee needs
    exchangeable images."""
    draws, truths = too_narrow_posterior(60, 64, truth_factor=2.0, seed=0)
    calibration = conformal.fit(scores_of(draws, truths), task="inpaint", prior="p", settings={}, num_samples=32)
    assert len(calibration.scale("unpinned", 0.9)) == conformal.CELLS
    # The corrected risk for 60 images is (61 * 0.1 - 1) / 60 = 0.085: lambda = 2 z(1 - 0.085 / 2) = 2 * 1.72,
    # a little wider again for a std estimated from 32 draws.
    assert all(v == pytest.approx(2 * 1.72, rel=0.08) for v in calibration.scale("unpinned", 0.9))
    assert calibration.scales["pinned"][0.9] == (math.inf,)  # no pinned pixel to calibrate on: one cell
    new_draws, new_truths = too_narrow_posterior(300, 64, truth_factor=2.0, seed=1)
    raw = [((d.quantile(0.05, 0) <= t) & (t <= d.quantile(0.95, 0))).float().mean() for d, t in zip(new_draws, new_truths)]
    assert float(torch.stack(raw).mean()) < 0.65
    for level in (0.5, 0.8, 0.9, 0.95):
        assert level - 0.01 <= calibrated_coverage(calibration, new_draws, new_truths, level) <= level + 0.03
    shifted_draws, shifted_truths = too_narrow_posterior(300, 64, truth_factor=4.0, seed=2)
    assert calibrated_coverage(calibration, shifted_draws, shifted_truths, 0.9) < 0.7


def test_the_finite_sample_correction_keeps_the_expected_coverage_with_few_images():
    """Nine images of one pixel each: the corrected rule covers the tenth with probability 9/10 on
    average over calibration sets, where the plain empirical quantile of the nine scores covers less."""
    gen = torch.Generator().manual_seed(3)
    corrected, plain = [], []
    for _ in range(3000):
        scores = torch.randn(10, generator=gen).abs()
        calibration_scores, new = scores[:9], scores[9]
        corrected.append(float(new <= risk_controlling_scale(list(calibration_scores[:, None]), 0.9)))
        plain.append(float(new <= calibration_scores.quantile(0.9)))
    assert sum(corrected) / len(corrected) == pytest.approx(0.9, abs=0.015)
    assert sum(plain) / len(plain) < 0.87
    assert risk_controlling_scale([torch.tensor([1.0])] * 5, 0.9) == math.inf  # 5 images cannot certify 90%


def test_image_level_quantile_covers_whole_images_at_every_level():
    """Averaged over random splits of 200 exchangeable images into 50 to calibrate on and 150 to
    test, the image-level ball of level p holds a fraction ceil(51 p) / 51 >= p of the test images
    (the guarantee is an expectation over the calibration set); a posterior too narrow by 1.5 holds far fewer raw."""
    draws, truths = too_narrow_posterior(200, 16, truth_factor=1.5, seed=4)
    scores = scores_of(draws, truths)
    gen = torch.Generator().manual_seed(0)
    levels = (0.1, 0.5, 0.9)
    covered = {level: [] for level in levels}
    for _ in range(200):
        order = torch.randperm(200, generator=gen).tolist()
        calibration = conformal.fit([scores[i] for i in order[:50]], "inpaint", "p", {}, 32, levels=levels)
        for level in levels:
            covered[level] += [scores[i].image <= calibration.image_scales[level] for i in order[50:]]
    for level in levels:
        exact = math.ceil(51 * level) / 51  # split conformal's expected coverage with 50 images
        assert sum(covered[level]) / len(covered[level]) == pytest.approx(exact, abs=0.02)
    assert sum(s.image <= 1.0 for s in scores) / len(scores) < 0.3  # raw: the true error exceeds the expected one
    expected = torch.tensor([2.0, 3.0])
    assert torch.equal(calibration.image_radius(expected, 0.5), calibration.image_scales[0.5] * expected)


def test_the_record_round_trips_through_json_and_says_where_it_does_not_hold():
    draws, truths = too_narrow_posterior(20, 8, truth_factor=1.0, seed=5)
    settings = {"method": "svi", "inference": {"guide": "laplace", "steps": 300}, "model": "reach", "sigma_reach": 0.06,
                "params": {"sigma_pixel": 0.005, "kappa": 0.0, "sigma_percept": 0.3}, "perceptual": "FMNISTPercept",
                "map_schedule": {"steps": 150, "lr": 0.1, "betas": (0.9, 0.999)}, "seed": 3}
    calibration = conformal.fit(scores_of(draws, truths), "superres-x4", "abc", settings, 16, data="20 images")
    again = Calibration.from_dict(json.loads(json.dumps(calibration.to_dict())))
    assert again == calibration and again.scales["pinned"][0.5] == (math.inf,)
    assert len(again.edges.get("unpinned", ())) == conformal.CELLS - 1
    celled = conformal.fit(scores_of(draws, truths), "superres-x4", "abc", settings, 16, cells=3)
    assert Calibration.from_dict(json.loads(json.dumps(celled.to_dict()))) == celled and len(celled.edges["unpinned"]) == 2
    assert calibration.check("superres-x4", "abc", settings, 16) is None
    assert calibration.check("superres-x4", "abc", {**settings, "seed": 4}, 64) is None  # the seed is no setting
    assert "task superres-x4" in calibration.check("inpaint", "abc", settings, 16)
    assert "another prior" in calibration.check("superres-x4", "xyz", settings, 16)
    other_guide = {**settings, "inference": {"guide": "normal", "steps": 300}}
    assert "guide 'laplace' instead of 'normal'" in calibration.check("superres-x4", "abc", other_guide, 16)
    assert "at least 16 draws" in calibration.check("superres-x4", "abc", settings, 8)


def two_kinds_of_image(images: int, background: float, seed: int):
    """Draws and truths of images whose pixels are of two kinds, told apart by the posterior mean: background
    (mean 0.05, truth spread as the posterior says) and object (mean 0.6, truth spread 3 times wider).
    ``background`` is the fraction of background pixels, as a free-form hole (much background) against a box
    hole on the garment (little)."""
    gen = torch.Generator().manual_seed(seed)
    pixels = 200
    is_background = torch.rand(images, 1, 1, pixels, generator=gen) < background
    std = 0.01 + 0.02 * torch.rand(images, 1, 1, pixels, generator=gen)
    mean = torch.where(is_background, 0.05, 0.6)
    draws = mean[:, None] + std[:, None] * torch.randn(images, 32, 1, 1, pixels, generator=gen)
    spread = torch.where(is_background, 1.0, 3.0)
    truths = mean + spread * std * torch.randn(images, 1, 1, pixels, generator=gen)
    return draws, truths


def test_cells_of_the_mean_hold_the_level_in_each_kind_of_image_where_one_multiplier_cannot():
    """Calibrated on a mix of mostly-background and mostly-object images (as free-form and box holes are), one
    multiplier per region over-covers the first kind and under-covers the second; with cells of the posterior
    mean each kind gets its level."""
    mostly_background, mostly_object = two_kinds_of_image(40, 0.8, 0), two_kinds_of_image(40, 0.2, 1)
    mixed = scores_of(mostly_background[0], mostly_background[1]) + scores_of(mostly_object[0], mostly_object[1])
    one = conformal.fit(mixed, "inpaint", "p", {}, 32, cells=1)
    celled = conformal.fit(mixed, "inpaint", "p", {}, 32, cells=3)
    assert one.edges == {} and len(celled.edges["unpinned"]) == 2
    low, _, high = celled.scale("unpinned", 0.9)
    assert high > 2 * low  # the object's multiplier is the wider one
    tests = [two_kinds_of_image(200, 0.8, 2), two_kinds_of_image(200, 0.2, 3)]
    covered_one = [calibrated_coverage(one, d, t, 0.9) for d, t in tests]
    covered_celled = [calibrated_coverage(celled, d, t, 0.9) for d, t in tests]
    # One multiplier: about 0.8 + 0.2 * 0.835 = 0.97 against 0.2 + 0.8 * 0.835 = 0.87 (P(|Z| < 4.2 / 3) = 0.835).
    assert covered_one[1] < 0.88 and covered_one[0] - covered_one[1] > 0.07
    # Cells: the gap at most half as wide, and neither kind short of its level by more than rounding of the cells
    # (the middle tercile holds pixels of both kinds).
    assert abs(covered_celled[0] - covered_celled[1]) < 0.5 * (covered_one[0] - covered_one[1]), covered_celled
    assert min(covered_celled) >= 0.88, covered_celled


def test_a_record_of_one_multiplier_per_region_reads_as_one_cell_and_a_mismatched_one_is_refused():
    draws, truths = too_narrow_posterior(20, 8, truth_factor=1.0, seed=7)
    record = conformal.fit(scores_of(draws, truths), "inpaint", "p", {}, 32, cells=1).to_dict()
    record["scales"] = {region: {p: cells[0] for p, cells in by_level.items()} for region, by_level in record["scales"].items()}
    assert Calibration.from_dict(record).scale("unpinned", 0.9) == (record["scales"]["unpinned"]["0.9"],)
    record["edges"] = {"unpinned": [0.5]}
    with pytest.raises(ValueError, match="not a calibration record .*multipliers do not match its 1 cell edges"):
        Calibration.from_dict(record)


def test_bad_inputs_get_one_sentence():
    draws, truths = too_narrow_posterior(20, 8, truth_factor=1.0, seed=6)
    calibration = conformal.fit(scores_of(draws, truths), "inpaint", "p", {}, 32)
    mean, std, hole = draws[0].mean(0), draws[0].std(0), torch.ones(1, 1, 8, dtype=torch.bool)
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            calibration.interval(mean, std, hole, level)
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            risk_controlling_scale([torch.ones(3)], level)
    with pytest.raises(ValueError, match="holds levels 0.05, 0.1, .*not 0.93; pass one of them, or calibrated=False"):
        calibration.interval(mean, std, hole, 0.93)
    with pytest.raises(ValueError, match="not a calibration record"):
        Calibration.from_dict({"task": "inpaint"})
    with pytest.raises(ValueError, match="at least one validation image"):
        conformal.fit([], "inpaint", "p", {}, 32)
    with pytest.raises(ValueError, match="S >= 2"):
        image_scores(draws[0][:1], truths[0], hole)


def test_fingerprint():
    from conftest import tiny_generator

    a, b = tiny_generator(16, seed=0), tiny_generator(16, seed=1)
    assert conformal.fingerprint(a) == conformal.fingerprint(tiny_generator(16, seed=0)) != conformal.fingerprint(b)
