"""The Fashion-MNIST evaluator and the metrics on its features: Frechet distance, class fidelity, histogram.

:class:`FMNISTEval` wraps the frozen :class:`~brgm_pyro.fmnist.networks.EvalNet`, a network of
another architecture and seed than the perceptual phi, used only by the metrics, never inside a loss.
On top of it: :func:`frechet_distance` / :func:`fid` on its penultimate features (128, the hidden
layer of its head), :func:`class_fidelity` (does a reconstruction keep its true class) and
:func:`class_histogram` (mode collapse shows here).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from brgm_pyro.errors import InputError
from brgm_pyro.fmnist.networks import check_gray, load_feature_net, lpips_features

__all__ = [
    "FMNISTEval",
    "class_fidelity",
    "class_histogram",
    "fid",
    "frechet_distance",
    "frechet_distance_gaussians",
]


class FMNISTEval(nn.Module):
    """The frozen Fashion-MNIST evaluator (:class:`~brgm_pyro.fmnist.networks.EvalNet`) for metrics
    only; never put it in a loss.

    All methods take images (B, 1, H, W) in [0, 1] of any size (see :mod:`brgm_pyro.fmnist.networks`).
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        self.net = load_feature_net("eval", weights)
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> FMNISTEval:
        # Batch norm must keep its running statistics even inside a module switched to training.
        return super().train(False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, 128): the hidden layer of the head, after ReLU."""
        return self.net.taps(images)[1]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 10), in the order of :data:`brgm_pyro.fmnist.data.CLASS_NAMES`."""
        return self.net(images)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted class indices (B,)."""
        return self.logits(images).argmax(dim=1)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS-style distance per image (B,), in [0, 4], on the normalised activations of 3 layers."""
        if a.shape != b.shape:
            raise InputError(
                f"distance compares images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        features_a = lpips_features(self.net.taps(a)[0])
        features_b = lpips_features(self.net.taps(b)[0])
        return (features_a - features_b).square().sum(dim=1)


@functools.lru_cache(maxsize=1)
def _default_eval() -> FMNISTEval:
    return FMNISTEval()


def frechet_distance_gaussians(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Frechet (2-Wasserstein squared) distance of N(mu1, sigma1) and N(mu2, sigma2):

        ||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    The trace of the square root is taken in its symmetric form, tr (sigma1 sigma2)^(1/2) =
    tr (sigma1^(1/2) sigma2 sigma1^(1/2))^(1/2) (the two products are similar matrices), from the
    eigenvalues of symmetric positive semi-definite matrices, with round-off negatives clipped to 0.
    Unlike ``scipy.linalg.sqrtm`` of the non-symmetric product, this stays exact and real for singular
    covariances (dead features, fewer samples than features); no offset is added.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise InputError(
            f"frechet distance needs means (F,) and covariances (F, F) of one F, got {mu1.shape}, "
            f"{sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    eigenvalues, eigenvectors = np.linalg.eigh(sigma1)
    root1 = (eigenvectors * np.sqrt(eigenvalues.clip(min=0))) @ eigenvectors.T
    trace_root = np.sqrt(np.linalg.eigvalsh(root1 @ sigma2 @ root1).clip(min=0)).sum()
    distance = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_root
    return max(float(distance), 0.0)


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted (mean, unbiased covariance) to two feature sets (N, F)."""
    stats = []
    for name, features in (("features_a", features_a), ("features_b", features_b)):
        if isinstance(features, torch.Tensor):
            features = features.detach().cpu().numpy()
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise InputError(f"{name} must be (N, F) with N >= 2 samples, got shape {features.shape}")
        if not np.isfinite(features).all():
            raise InputError(f"{name} contains NaN or infinite values")
        stats.append((features.mean(axis=0), np.cov(features, rowvar=False)))
    (mu1, sigma1), (mu2, sigma2) = stats
    return frechet_distance_gaussians(mu1, sigma1, mu2, sigma2)


def _batched(net: FMNISTEval, method: str, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    check_gray(images)
    with torch.no_grad():
        return torch.cat([getattr(net, method)(chunk) for chunk in images.split(batch_size)])


def fid(
    images_a: torch.Tensor, images_b: torch.Tensor, net: FMNISTEval | None = None, batch_size: int = 500
) -> float:
    """Frechet distance of two image sets (N, 1, H, W) in the penultimate features of ``net``
    (default: the shipped :class:`FMNISTEval`). Like any FID it is biased upwards for small N."""
    net = _default_eval() if net is None else net
    return frechet_distance(
        _batched(net, "features", images_a, batch_size), _batched(net, "features", images_b, batch_size)
    )


def class_fidelity(
    reconstructions: torch.Tensor, labels: torch.Tensor, net: FMNISTEval | None = None, batch_size: int = 500
) -> torch.Tensor:
    """Whether ``net`` classifies each reconstruction (B, 1, H, W) as its true label (B,): bool (B,)."""
    labels = torch.as_tensor(labels)
    if labels.shape != reconstructions.shape[:1]:
        raise InputError(
            f"class_fidelity needs one label per image, got {tuple(labels.shape)} labels for "
            f"{reconstructions.shape[0]} images"
        )
    net = _default_eval() if net is None else net
    return _batched(net, "predict", reconstructions, batch_size) == labels.to(reconstructions.device)


def class_histogram(
    images: torch.Tensor, net: FMNISTEval | None = None, batch_size: int = 500
) -> torch.Tensor:
    """How many images ``net`` assigns to each class: int64 counts (10,), in the order of CLASS_NAMES."""
    net = _default_eval() if net is None else net
    return torch.bincount(_batched(net, "predict", images, batch_size).cpu(), minlength=10)
