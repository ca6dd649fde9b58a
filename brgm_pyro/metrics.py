"""Image quality and calibration metrics.

Image metrics take two batches (B, C, H, W) of float images in [0, 1] and return one value per
image, a tensor (B,); every one of them validates its input with :func:`check_images`.
Calibration helpers score posterior samples against the truth and return Python floats.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.perceptual import LPIPSVGG, FeatureNetwork

__all__ = [
    "check_images",
    "credible_interval",
    "sorted_quantile",
    "image_level_coverage",
    "interval_coverage",
    "leave_one_out_mse",
    "lpips_distance",
    "mae",
    "mse_ball_radius",
    "probability_integral_transform",
    "psnr",
    "rmse",
    "spearman_std_error",
    "ssim",
]


def _describe(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _check_finite(tensor: torch.Tensor, name: str) -> None:
    if not torch.isfinite(tensor).all():
        raise InputError(f"{name} contains NaN or infinite values; check the reconstruction that produced it")


def check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise ValueError unless x and y are float tensors (B, C, H, W) of one shape, finite, in [0, 1]."""
    for name, images in (("x", x), ("y", y)):
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise InputError(
                f"metrics take image batches of shape (B, C, H, W), got {name} with shape "
                f"{_describe(images)}; add a batch dimension with image[None]"
            )
        if not images.is_floating_point():
            raise InputError(f"metrics take float images in [0, 1], got {name} with dtype {images.dtype}")
    if x.shape != y.shape:
        raise InputError(f"metrics compare images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    for name, images in (("x", x), ("y", y)):
        _check_finite(images, name)
        low, high = float(images.detach().min()), float(images.detach().max())
        if low < 0 or high > 1:
            raise InputError(
                f"metrics take images in [0, 1], got {name} in [{low:.4g}, {high:.4g}]; "
                "convert from [-1, 1] or [0, 255] first, or clamp"
            )


def _mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).square().flatten(1).mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for data range 1: 10 log10(1 / MSE), per image (B,).

    Identical images give +inf, as scikit-image's ``peak_signal_noise_ratio``.
    """
    check_images(x, y)
    return -10 * torch.log10(_mse(x, y))


def mae(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over pixels and channels, per image (B,)."""
    check_images(x, y)
    return (x - y).abs().flatten(1).mean(1)


def rmse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Root mean squared error over pixels and channels, per image (B,)."""
    check_images(x, y)
    return _mse(x, y).sqrt()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7) -> torch.Tensor:
    """Structural similarity, per image (B,); equal to scikit-image's ``structural_similarity``
    with its defaults (``data_range=1``, ``channel_axis`` over C, uniform ``window`` x ``window``
    window, sample covariance, K1 = 0.01, K2 = 0.03).

    Local means and (co)variances come from a uniform window; SSIM maps

        S = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))

    are averaged over the positions where the window lies inside the image, then over channels.
    Computed in float64 and differentiable; returned in the input dtype.
    """
    check_images(x, y)
    if window % 2 == 0 or window < 3 or min(x.shape[-2:]) < window:
        raise InputError(
            f"ssim needs an odd window >= 3 that fits the image, got window={window} for size "
            f"{tuple(x.shape[-2:])}; pass a smaller odd window"
        )
    c1, c2 = 0.01**2, 0.03**2
    batch, channels = x.shape[:2]
    a = x.double().reshape(batch * channels, 1, *x.shape[-2:])
    b = y.double().reshape(batch * channels, 1, *y.shape[-2:])
    local = F.avg_pool2d(torch.cat([a, b, a * a, b * b, a * b], dim=1), window, stride=1)
    mu_a, mu_b, mean_aa, mean_bb, mean_ab = local.unbind(1)
    sample = window**2 / (window**2 - 1)
    var_a = sample * (mean_aa - mu_a.square())
    var_b = sample * (mean_bb - mu_b.square())
    cov = sample * (mean_ab - mu_a * mu_b)
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2)
    )
    return ssim_map.reshape(batch, channels, -1).mean(2).mean(1).to(x.dtype)


@functools.lru_cache(maxsize=1)
def _default_lpips() -> LPIPSVGG:
    return LPIPSVGG()


def lpips_distance(x: torch.Tensor, y: torch.Tensor, net: FeatureNetwork | None = None) -> torch.Tensor:
    """Perceptual distance ||phi(x) - phi(y)||^2 per image (B,).

    ``net`` is any :class:`FeatureNetwork`; None uses one shared pretrained :class:`LPIPSVGG`, so the
    value is LPIPS-VGG (v0.1) after that network's resizing.
    """
    check_images(x, y)
    if net is None:
        net = _default_lpips()
    elif not isinstance(net, FeatureNetwork):
        raise InputTypeError(f"lpips_distance needs a FeatureNetwork as net, got {type(net).__name__}")
    return (net(x) - net(y)).square().sum(1)


def _selection(mask: torch.Tensor | None, shape: torch.Size, name: str) -> torch.Tensor | None:
    """Boolean selection of shape ``shape`` from a mask broadcastable to it (1 / True = counted)."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise InputTypeError(f"{name} must be a tensor, got {type(mask).__name__}")
    try:
        selected = torch.broadcast_to(mask, shape)
    except RuntimeError:
        raise InputError(
            f"{name} of shape {tuple(mask.shape)} does not broadcast to the images' shape {tuple(shape)}"
        ) from None
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise InputError(f"{name} must hold only 0 and 1 (1 = pixel counted)")
        selected = selected != 0
    if not selected.any():
        raise InputError(f"{name} selects no pixel; 1 marks the pixels to count")
    return selected


def _order_statistic(sorted_samples: torch.Tensor, rank: float) -> torch.Tensor:
    """The order statistic of 1-based ``rank`` along dim 0 of sorted samples, interpolated linearly
    between neighbours and clamped to [1, S]; torch.quantile refuses tensors over 2^24 elements."""
    last = sorted_samples.shape[0] - 1
    position = min(max(rank - 1, 0.0), float(last))
    below = int(position)
    above = min(below + 1, last)
    fraction = position - below
    return sorted_samples[below] + fraction * (sorted_samples[above] - sorted_samples[below])


def _central_interval(sorted_samples: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Order statistics of ranks (1 -+ level) / 2 (S + 1) along dim 0 (see ``credible_interval``)."""
    draws = sorted_samples.shape[0]
    return (_order_statistic(sorted_samples, (1 - level) / 2 * (draws + 1)),
            _order_statistic(sorted_samples, (1 + level) / 2 * (draws + 1)))


def sorted_quantile(sorted_samples: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of sorted draws (S, ...) along dim 0 by the rule of :func:`credible_interval`: the
    order statistic of rank q (S + 1), interpolated, clamped to [min, max]."""
    return _order_statistic(sorted_samples, q * (sorted_samples.shape[0] + 1))


def credible_interval(samples: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The central interval of probability ``level`` of draws (S, ...) along dim 0: (lower, upper).

    Its ends are the order statistics of ranks (1 -+ level) / 2 (S + 1), interpolated (Hyndman and
    Fan's definition 6, numpy's "weibull"), so that a truth exchangeable with the S draws lies inside
    with probability ``level`` (exactly when the ranks are whole numbers; interpolating between two
    order statistics errs on the wide side in the tails): the draws of a calibrated posterior then
    cover a fraction ``level`` of the truth, whatever S. numpy's default quantiles (ranks
    1 + q (S - 1)) would cover 0.79 at level 0.9 with 16 draws and 0.82 with 32. A level above (S - 1) / (S + 1) is out of reach of S draws (0.88 for
    16): the interval is then [min, max], which holds (S - 1) / (S + 1).
    """
    return _central_interval(samples.sort(dim=0).values, level)


def interval_coverage(
    samples: torch.Tensor,
    truth: torch.Tensor,
    levels: Sequence[float] = (0.5, 0.9, 0.95),
    mask: torch.Tensor | None = None,
) -> dict[float, float]:
    """Fraction of true pixel values inside the central credible interval of the samples.

    For each level p the interval of each pixel is :func:`credible_interval` of its S samples; a
    calibrated posterior covers a fraction p of the truth (for p <= (S - 1) / (S + 1)).

    Args:
        samples: posterior samples (S, B, C, H, W), S >= 2.
        truth: true images (B, C, H, W).
        levels: interval probabilities in (0, 1).
        mask: optional, broadcastable to (B, C, H, W); 1 = pixel counted. To score only the
            unobserved pixels of an inpainting task, pass ``1 - observed_mask``.

    Returns:
        ``{level: fraction covered}`` over all counted pixels of all images.
    """
    if not isinstance(samples, torch.Tensor) or samples.ndim != 5 or samples.shape[0] < 2:
        raise InputError(
            f"interval_coverage needs samples of shape (S, B, C, H, W) with S >= 2, got {_describe(samples)}"
        )
    if not isinstance(truth, torch.Tensor) or truth.shape != samples.shape[1:]:
        raise InputError(
            f"interval_coverage needs truth of shape {tuple(samples.shape[1:])} to match the samples, "
            f"got {_describe(truth)}"
        )
    for level in levels:
        if not 0 < level < 1:
            raise InputError(f"credible levels must lie strictly between 0 and 1, got {level}")
    _check_finite(samples, "samples")
    _check_finite(truth, "truth")
    selected = _selection(mask, truth.shape, "mask")
    sorted_samples = samples.sort(dim=0).values
    coverage = {}
    for level in levels:
        lower, upper = _central_interval(sorted_samples, level)
        inside = (lower <= truth) & (truth <= upper)
        coverage[level] = float(
            inside[selected].float().mean() if selected is not None else inside.float().mean()
        )
    return coverage


def probability_integral_transform(
    samples: torch.Tensor, truth: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The randomised rank of each true pixel among its S posterior draws, in [0, 1]: (B, C, H, W).

    u = (L + V (E + 1)) / (S + 1), with L the draws below the truth, E the draws equal to it and V
    uniform on [0, 1] (ties, e.g. draws clamped to 0 on a black background, are split at random).
    If the truth is exchangeable with the draws, u is uniform on [0, 1] whatever S, so the fraction
    of pixels with |u - 1/2| <= p / 2 is p at every level p: the posterior's calibration without
    the bias of an interval read off S order statistics (a central 90% interval between numpy's
    quantiles of 32 exchangeable draws holds the next one with probability 0.82, of 16 draws 0.79).
    """
    interval_coverage(samples, truth, (0.5,))  # the same checks of shapes and values
    below = (samples < truth).sum(0)
    equal = (samples == truth).sum(0)
    jitter = torch.rand(truth.shape, generator=generator, dtype=torch.float64)
    return ((below + jitter * (equal + 1)) / (samples.shape[0] + 1)).to(truth.dtype)


def image_level_coverage(
    samples: torch.Tensor, truth: torch.Tensor, levels: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
) -> torch.Tensor:
    """Whether each true image lies inside the posterior's ball of probability p around its mean.

    The ball of image b at level p is {x : MSE(x, mean_b) <= r_p}, with r_p the p-quantile of
    MSE(x_s, mean_-s) over the draws s, where mean_-s leaves draw s out (so that a draw is scored
    against a mean it is not part of, as the truth is; with the full mean the draws' MSE is low by a
    factor (S - 1) / S). The quantile is the order statistic of rank p (S + 1), interpolated, so
    that a truth exchangeable with the S draws falls below it with probability p exactly (numpy's
    default rank 1 + p (S - 1) would give 0.88 for p = 0.9 and S = 32). A calibrated posterior holds the truth in the ball of level p for a
    fraction p of the images (the image-level coverage curve of Tachella and Pereyra's
    equivariant bootstrap).

    Args:
        samples: posterior draws (S, B, C, H, W), S >= 2.
        truth: true images (B, C, H, W).
        levels: probabilities in (0, 1).

    Returns a bool tensor (B, len(levels)).
    """
    interval_coverage(samples, truth, levels)  # the same checks of shapes, values and levels
    error = (truth - samples.mean(0)).square().flatten(1).mean(-1)  # (B,)
    return error[:, None] <= mse_ball_radius(samples, levels)


def leave_one_out_mse(samples: torch.Tensor) -> torch.Tensor:
    """MSE(x_s, mean_-s) of each draw against the mean of the other draws: (S, B) for draws (S, B, C, H, W).

    A truth exchangeable with the draws has MSE(x, mean) distributed like these, up to a factor
    (1 + 1/S) / (1 + 1/(S - 1)) (against the full mean, a draw's MSE is low by (S - 1) / S).
    """
    draws = samples.shape[0]
    leave_one_out = (draws * samples.mean(0) - samples) / (draws - 1)
    return (samples - leave_one_out).square().flatten(2).mean(-1)


def mse_ball_radius(samples: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
    """The radius r_p of the posterior's MSE ball of level p around the mean, per image: (B, len(levels)),
    the order statistic of rank p (S + 1) of :func:`leave_one_out_mse` (see :func:`image_level_coverage`)."""
    ordered = leave_one_out_mse(samples).sort(0).values
    draws = samples.shape[0]
    return torch.stack([_order_statistic(ordered, p * (draws + 1)) for p in levels], dim=-1)


def spearman_std_error(std: torch.Tensor, abs_error: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Spearman rank correlation between the posterior standard deviation and the absolute error
    of the reconstruction, over pixels. Near 1: the uncertainty map points at the errors.

    Args:
        std: per-pixel posterior standard deviation, any shape (e.g. (B, C, H, W)), >= 0.
        abs_error: |posterior mean - truth|, same shape, >= 0.
        mask: optional, broadcastable to that shape; 1 = pixel counted.
    """
    from scipy.stats import spearmanr

    if (
        not isinstance(std, torch.Tensor)
        or not isinstance(abs_error, torch.Tensor)
        or std.shape != abs_error.shape
    ):
        raise InputError(
            f"spearman_std_error needs std and abs_error of one shape, got {_describe(std)} and "
            f"{_describe(abs_error)}"
        )
    for name, tensor in (("std", std), ("abs_error", abs_error)):
        _check_finite(tensor, name)
        if (tensor < 0).any():
            raise InputError(
                f"{name} must be non-negative; pass the absolute error and the standard deviation"
            )
    selected = _selection(mask, std.shape, "mask")
    a = (std[selected] if selected is not None else std.flatten()).detach().double().cpu().numpy()
    b = (abs_error[selected] if selected is not None else abs_error.flatten()).detach().double().cpu().numpy()
    if a.size < 2 or a.min() == a.max() or b.min() == b.max():
        raise InputError("spearman_std_error needs at least two pixels and non-constant std and abs_error")
    return float(spearmanr(a, b).statistic)
