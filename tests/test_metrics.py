import math
import re

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from brgm_pyro import metrics
from brgm_pyro.perceptual import LPIPSVGG


def noisy_pair(shape=(3, 3, 24, 28), noise=0.1, seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(shape, generator=generator, dtype=dtype)
    noisy = (clean + noise * torch.randn(shape, generator=generator, dtype=dtype)).clamp(0, 1)
    return clean, noisy


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_rmse_mae_match_references_per_image(channels):
    x, y = noisy_pair((4, channels, 20, 24))
    xs, ys = x.numpy(), y.numpy()
    expected_psnr = [peak_signal_noise_ratio(a, b, data_range=1) for a, b in zip(xs, ys, strict=True)]
    expected_rmse = [math.sqrt(mean_squared_error(a, b)) for a, b in zip(xs, ys, strict=True)]
    expected_mae = [np.abs(a - b).mean() for a, b in zip(xs, ys, strict=True)]
    for metric, expected in (
        (metrics.psnr, expected_psnr),
        (metrics.rmse, expected_rmse),
        (metrics.mae, expected_mae),
    ):
        value = metric(x, y)
        assert value.shape == (4,)
        np.testing.assert_allclose(value.numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_scikit_image(channels):
    x, y = noisy_pair((3, channels, 32, 40), noise=0.2)
    expected = [
        structural_similarity(a, b, data_range=1, channel_axis=0)
        for a, b in zip(x.numpy(), y.numpy(), strict=True)
    ]
    np.testing.assert_allclose(metrics.ssim(x, y).numpy(), expected, rtol=1e-9)


def test_ssim_float32_is_close_to_float64_reference():
    x, y = noisy_pair((2, 3, 32, 32), dtype=torch.float32)
    expected = [
        structural_similarity(a, b, data_range=1, channel_axis=0)
        for a, b in zip(x.double().numpy(), y.double().numpy(), strict=True)
    ]
    value = metrics.ssim(x, y)
    assert value.dtype == torch.float32
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-5)


def test_value_ranges_and_ordering():
    x, slightly = noisy_pair(noise=0.05)
    _, very = noisy_pair(noise=0.3)
    assert ((metrics.ssim(x, slightly) <= 1) & (metrics.ssim(x, very) >= -1)).all()
    assert (metrics.psnr(x, slightly) > metrics.psnr(x, very)).all()
    assert (metrics.ssim(x, slightly) > metrics.ssim(x, very)).all()
    assert (metrics.rmse(x, slightly) < metrics.rmse(x, very)).all()
    assert (metrics.mae(x, very) >= 0).all() and (metrics.mae(x, very) <= metrics.rmse(x, very)).all()


def test_identical_images():
    x, _ = noisy_pair()
    assert torch.isinf(metrics.psnr(x, x)).all() and (metrics.psnr(x, x) > 0).all()
    torch.testing.assert_close(metrics.ssim(x, x), torch.ones(3, dtype=x.dtype))
    assert (metrics.rmse(x, x) == 0).all() and (metrics.mae(x, x) == 0).all()


def test_per_image_reduction_is_independent_of_the_batch():
    x, y = noisy_pair((5, 3, 16, 16))
    for metric in (metrics.psnr, metrics.ssim, metrics.mae, metrics.rmse):
        batched = metric(x, y)
        single = torch.cat([metric(x[i : i + 1], y[i : i + 1]) for i in range(5)])
        torch.testing.assert_close(batched, single)


@pytest.mark.parametrize("metric", [metrics.psnr, metrics.mae, metrics.rmse, metrics.ssim])
def test_backward_gives_finite_gradients(metric):
    x, y = noisy_pair((2, 3, 16, 16))
    y = y.clone().requires_grad_(True)
    metric(x, y).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "x, y, message",
    [
        (torch.rand(3, 8, 8), torch.rand(3, 8, 8), "(B, C, H, W)"),
        (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 9), "one shape"),
        (torch.rand(1, 3, 8, 8), torch.full((1, 3, 8, 8), float("nan")), "NaN"),
        (torch.rand(1, 3, 8, 8), 2 * torch.rand(1, 3, 8, 8) - 1, "in [0, 1]"),
        (torch.rand(1, 3, 8, 8), torch.randint(0, 2, (1, 3, 8, 8)), "float"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, y, message):
    for metric in (metrics.psnr, metrics.ssim, metrics.mae, metrics.rmse):
        with pytest.raises(ValueError, match=re.escape(message)):
            metric(x, y)


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="window"):
        metrics.ssim(torch.rand(1, 1, 5, 5), torch.rand(1, 1, 5, 5))


def test_lpips_distance_is_the_squared_feature_distance():
    torch.manual_seed(0)
    net = LPIPSVGG(pretrained_backbone=False, min_size=16)
    x, y = noisy_pair((2, 3, 16, 16), dtype=torch.float32)
    distance = metrics.lpips_distance(x, y, net=net)
    reference = net.lpips(x, y, normalize=True).flatten()
    torch.testing.assert_close(distance, reference, rtol=1e-4, atol=1e-6)
    assert (metrics.lpips_distance(x, x, net=net) == 0).all()
    with pytest.raises(TypeError, match="FeatureNetwork"):
        metrics.lpips_distance(x, y, net=torch.nn.Identity())


def test_interval_coverage_is_calibrated_for_draws_from_the_same_gaussian():
    generator = torch.Generator().manual_seed(1)
    mean = torch.rand(4, 1, 32, 32, generator=generator)
    scale = 0.05 + 0.1 * torch.rand(4, 1, 32, 32, generator=generator)
    samples = mean + scale * torch.randn(400, 4, 1, 32, 32, generator=generator)
    truth = mean + scale * torch.randn(4, 1, 32, 32, generator=generator)
    coverage = metrics.interval_coverage(samples, truth, levels=(0.5, 0.9, 0.95))
    assert set(coverage) == {0.5, 0.9, 0.95}
    for level, fraction in coverage.items():
        assert abs(fraction - level) < 0.03, (level, fraction)
    overconfident = metrics.interval_coverage(mean + 0.3 * (samples - mean), truth, levels=(0.9,))
    assert overconfident[0.9] < 0.6


def test_interval_coverage_matches_numpy_weibull_quantiles_and_honours_the_mask():
    generator = torch.Generator().manual_seed(2)
    samples = torch.randn(9, 2, 1, 6, 6, generator=generator)
    truth = torch.randn(2, 1, 6, 6, generator=generator)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., :3] = 1
    lower, upper = np.quantile(samples.numpy(), [0.1, 0.9], axis=0, method="weibull")
    inside = (lower <= truth.numpy()) & (truth.numpy() <= upper)
    coverage = metrics.interval_coverage(samples, truth, levels=(0.8,), mask=mask)
    assert coverage[0.8] == pytest.approx(inside[..., :3].mean())


def test_interval_coverage_errors():
    samples, truth = torch.rand(5, 2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="S >= 2"):
        metrics.interval_coverage(samples[:1], truth)
    with pytest.raises(ValueError, match="match the samples"):
        metrics.interval_coverage(samples, truth[:1])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        metrics.interval_coverage(samples, truth, levels=(1.0,))
    with pytest.raises(ValueError, match="does not broadcast"):
        metrics.interval_coverage(samples, truth, mask=torch.ones(3, 1, 4, 4))
    with pytest.raises(ValueError, match="selects no pixel"):
        metrics.interval_coverage(samples, truth, mask=torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        metrics.interval_coverage(samples, torch.full_like(truth, float("nan")))


def test_spearman_std_error():
    generator = torch.Generator().manual_seed(3)
    std = torch.rand(2, 1, 8, 8, generator=generator)
    assert metrics.spearman_std_error(std, std.exp() - 1) == pytest.approx(1.0)
    assert metrics.spearman_std_error(std, 1 - std) == pytest.approx(-1.0)
    error = torch.rand(2, 1, 8, 8, generator=generator)
    mask = (torch.rand(2, 1, 8, 8, generator=generator) > 0.5).float()
    selected = mask.bool()
    expected = spearmanr(std[selected].numpy(), error[selected].numpy()).statistic
    assert metrics.spearman_std_error(std, error, mask=mask) == pytest.approx(expected)


def test_spearman_std_error_errors():
    std = torch.rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match="one shape"):
        metrics.spearman_std_error(std, torch.rand(1, 1, 4, 5))
    with pytest.raises(ValueError, match="non-negative"):
        metrics.spearman_std_error(std, std - 0.5)
    with pytest.raises(ValueError, match="non-constant"):
        metrics.spearman_std_error(torch.ones(1, 1, 4, 4), std)
    with pytest.raises(ValueError, match="NaN"):
        metrics.spearman_std_error(std, torch.full_like(std, float("inf")))


def test_probability_integral_transform_is_uniform_for_exchangeable_draws_whatever_their_number():
    """With S draws and a truth from the same distribution the randomised rank is uniform, so the
    central p of it holds a fraction p of the pixels, where an interval read off 16 order
    statistics holds far less; ties from clamping (a black background) do not break it."""
    generator = torch.Generator().manual_seed(4)
    for draws in (8, 16, 64):
        values = (0.2 * torch.randn(draws + 1, 50, 1, 16, 16, generator=generator)).clamp(0, 1)
        u = metrics.probability_integral_transform(values[1:], values[0], generator)
        assert u.shape == values[0].shape and 0 <= float(u.min()) and float(u.max()) <= 1
        for level in (0.5, 0.9):
            assert float(((u - 0.5).abs() <= level / 2).float().mean()) == pytest.approx(level, abs=0.01)
    centre = values[1:].mean(0)
    overconfident = metrics.probability_integral_transform(centre + 0.3 * (values[1:] - centre), values[0], generator)
    assert float(((overconfident - 0.5).abs() <= 0.45).float().mean()) < 0.6
    with pytest.raises(ValueError, match="S >= 2"):
        metrics.probability_integral_transform(values[:1], values[0])


def test_credible_interval_is_numpys_weibull_quantiles_and_holds_its_level_with_few_draws():
    """Hyndman and Fan's definition 6 (numpy's "weibull"): with 19 exchangeable draws (integer ranks 2 and
    18) the 80% interval holds 0.80 of the truths; with 16 (ranks 1.7 and 15.3, interpolated) a bit
    more, where numpy's default quantiles hold about 0.71; at 0.95, beyond 15 / 17, it is [min, max]."""
    generator = torch.Generator().manual_seed(5)
    samples = torch.randn(9, 2, 1, 5, 5, generator=generator)
    for level in (0.5, 0.8, 0.95):
        lower, upper = metrics.credible_interval(samples, level)
        expected = np.quantile(samples.numpy(), [(1 - level) / 2, (1 + level) / 2], axis=0, method="weibull")
        np.testing.assert_allclose(lower.numpy(), expected[0], rtol=1e-6)
        np.testing.assert_allclose(upper.numpy(), expected[1], rtol=1e-6)
    values = torch.randn(20, 8000, generator=generator)
    lower, upper = metrics.credible_interval(values[1:], 0.8)
    assert float(((lower <= values[0]) & (values[0] <= upper)).float().mean()) == pytest.approx(0.8, abs=0.015)
    values = values[:17]
    lower, upper = metrics.credible_interval(values[1:], 0.8)
    assert 0.8 <= float(((lower <= values[0]) & (values[0] <= upper)).float().mean()) < 0.86
    low, high = np.quantile(values[1:].numpy(), [0.1, 0.9], axis=0)
    assert float(((low <= values[0].numpy()) & (values[0].numpy() <= high)).mean()) < 0.74
    lower, upper = metrics.credible_interval(values[1:], 0.95)
    assert torch.equal(lower, values[1:].min(0).values) and torch.equal(upper, values[1:].max(0).values)


def test_image_level_coverage_follows_the_diagonal_when_calibrated_and_not_otherwise():
    generator = torch.Generator().manual_seed(6)
    draws, images = 16, 4000
    centre = torch.rand(images, 1, 4, 4, generator=generator)
    scale = 0.02 + 0.1 * torch.rand(images, 1, 1, 1, generator=generator)  # every image its own spread
    values = (centre + scale * torch.randn(draws + 1, images, 1, 4, 4, generator=generator)).clamp(0, 1)
    levels = (0.1, 0.5, 0.9)
    covered = metrics.image_level_coverage(values[1:], values[0], levels)
    assert covered.shape == (images, 3) and covered.dtype == torch.bool
    for k, level in enumerate(levels):
        assert float(covered[:, k].float().mean()) == pytest.approx(level, abs=0.025)
    narrow = centre + 0.5 * (values[1:] - centre)
    assert float(metrics.image_level_coverage(narrow, values[0], (0.9,)).float().mean()) < 0.3
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        metrics.image_level_coverage(values[1:], values[0], (1.0,))
