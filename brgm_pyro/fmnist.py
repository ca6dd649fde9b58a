"""Fashion-MNIST feature networks: a perceptual phi for the likelihood and an evaluator for the metrics.

Two small classifiers of 1 x 32 x 32 images in [0, 1] (Fashion-MNIST padded to 32 px), trained on
the ``train`` split (55,000 images), selected on ``val`` (5,000), scored once on ``test``:

* :class:`PerceptNet` (VGG-like) behind :class:`FMNISTPercept`, the feature network
  registered as ``"fmnist"`` for the perceptual likelihood ``phi(y) ~ Normal(phi(f(x)), sigma^2)``.
* :class:`EvalNet` (a small ResNet: strided 5x5 stem, one residual block), of another
  architecture and seed, behind :class:`FMNISTEval`. It is used only by the metrics, never inside a
  loss, so that a reconstruction cannot be scored well by the network it was optimised against.

Both networks take images of any size: smaller than 32 px they are enlarged to 32 by nearest
neighbour (pixel replication, exact for sizes that divide 32, e.g. the 8 x 8 or 4 x 4 low-resolution
images of super-resolution), larger ones are area-resized to 32 (exact averaging of blocks for sizes
that 32 divides). Each axis is resized on its own. Values are not clamped, since generator outputs may
overshoot [0, 1]. The networks normalise their input, ``(x - mean) / std`` with the pixel statistics
of the training split, inside themselves.

LPIPS-style distance (:meth:`FMNISTPercept.forward`, :meth:`FMNISTEval.distance`). For each tapped
layer l of L, with activations A_l (after the ReLU) of size (C_l, H_l, W_l),

    phi_l(x) = n(A_l(x)) / sqrt(H_l W_l) / sqrt(L),    n(a) = a / sqrt(||a||^2 + eps^2) per position,

where ||a|| is the norm over the C_l channels at one position (the unit normalisation of LPIPS; the
eps = 1e-6 under the root keeps it smooth where every channel is zero). Flattened and concatenated
over layers, ``||phi(a) - phi(b)||^2 = mean over l of (mean over positions of ||n(A_l(a)) -
n(A_l(b))||^2)``: LPIPS with equal, unlearnt channel weights, in [0, 4].

Metrics on top of :class:`FMNISTEval`: :func:`frechet_distance` / :func:`fid` on its penultimate
features (128, the hidden layer of its head), :func:`class_fidelity` (does a reconstruction keep its
true class) and :func:`class_histogram`. Training: :func:`train_feature_net`, run by the script
``scripts/train_feature_nets.py``.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn
from tqdm.auto import tqdm

from brgm_pyro.errors import InputError
from brgm_pyro.io import atomic_path, write_json
from brgm_pyro.perceptual import FeatureNetwork, register_perceptual

__all__ = [
    "CLASS_NAMES",
    "FEATURES_DIR",
    "INPUT_SIZE",
    "EvalNet",
    "FMNISTEval",
    "FMNISTPercept",
    "PerceptNet",
    "class_fidelity",
    "class_histogram",
    "feature_net_path",
    "fid",
    "frechet_distance",
    "frechet_distance_gaussians",
    "load_feature_net",
    "resize_to_input",
    "train_feature_net",
]

INPUT_SIZE = 32
FEATURES_DIR = Path(__file__).resolve().parent / "priors" / "features"
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
)  # fmt: skip
NORM_EPS = 1e-6
_METADATA_KEY = "brgm_pyro.feature_net"


# ----------------------------------------------------------------------------- input handling


def _check_gray(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(
            f"the Fashion-MNIST networks take grayscale images of shape (B, 1, H, W), got {shape}; "
            "add a batch dimension or convert colour to grayscale"
        )
    if not images.is_floating_point():
        raise InputError(f"the Fashion-MNIST networks take float images in [0, 1], got dtype {images.dtype}")


def resize_to_input(images: torch.Tensor) -> torch.Tensor:
    """Resize images (B, 1, H, W) to (B, 1, 32, 32): area-average axes above 32, then replicate
    pixels (nearest neighbour) along axes below 32. Images of 32 x 32 pass unchanged."""
    _check_gray(images)
    height, width = images.shape[-2:]
    if height > INPUT_SIZE or width > INPUT_SIZE:
        images = F.interpolate(images, size=(min(height, INPUT_SIZE), min(width, INPUT_SIZE)), mode="area")
    height, width = images.shape[-2:]
    if INPUT_SIZE % height == 0 and INPUT_SIZE % width == 0:
        # Whole factors (8 px -> 32): the same pixels as "nearest-exact", by an op that torch.func
        # can batch (the dense Hessian of the Laplace whitening vmaps through this network).
        return images.repeat_interleave(INPUT_SIZE // height, dim=-2).repeat_interleave(INPUT_SIZE // width, dim=-1)
    return F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="nearest-exact")


def _normalise_channels(activation: torch.Tensor) -> torch.Tensor:
    return activation / torch.sqrt(activation.square().sum(dim=1, keepdim=True) + NORM_EPS**2)


def _lpips_features(activations: list[torch.Tensor]) -> torch.Tensor:
    """Tapped activations -> (B, N) features whose squared distance is the LPIPS-style distance."""
    scale = 1.0 / math.sqrt(len(activations))
    parts = []
    for activation in activations:
        height, width = activation.shape[-2:]
        parts.append((_normalise_channels(activation) * (scale / math.sqrt(height * width))).flatten(1))
    return torch.cat(parts, dim=1)


# ----------------------------------------------------------------------------- the two classifiers


def _conv_bn(inputs: int, outputs: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(outputs),
    )


class _Classifier(nn.Module):
    """Shared plumbing: input statistics as buffers, resizing, a 512 -> 128 -> 10 head."""

    feature_dim = 128

    def __init__(self) -> None:
        super().__init__()
        # Set from the training split by train_feature_net; saved with the weights.
        self.register_buffer("pixel_mean", torch.tensor(0.0))
        self.register_buffer("pixel_std", torch.tensor(1.0))
        self.hidden = nn.Linear(128 * 2 * 2, self.feature_dim)
        self.classifier = nn.Linear(self.feature_dim, 10)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return (resize_to_input(images) - self.pixel_mean) / self.pixel_std

    def taps(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Images (B, 1, H, W) in [0, 1] -> (tapped activations, penultimate features (B, 128))."""
        raise NotImplementedError

    def head(self, last: torch.Tensor) -> torch.Tensor:
        """The last conv map (B, 128, 2, 2) -> penultimate features (B, 128), after ReLU."""
        return F.relu(self.hidden(last.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 10)."""
        return self.classifier(self.taps(images)[1])


class PerceptNet(_Classifier):
    """VGG-like classifier: four stages of 3x3 conv, batch norm, ReLU and 2x2 max-pool (16, 32, 64,
    128 channels), then 128 x 2 x 2 -> 128 -> 10. Taps: the four ReLU outputs, at 32, 16, 8 and 4 px."""

    def __init__(self) -> None:
        super().__init__()
        widths = (1, 16, 32, 64, 128)
        self.convs = nn.ModuleList(_conv_bn(i, o, 3) for i, o in itertools.pairwise(widths))

    def taps(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.prepare(images)
        activations = []
        for conv in self.convs:
            x = F.relu(conv(x))
            activations.append(x)
            x = F.max_pool2d(x, 2)
        return activations, self.head(x)


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(channels, channels, 3)
        self.conv2 = _conv_bn(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class EvalNet(_Classifier):
    """Small ResNet: 5x5 stride-2 stem (32 ch, 16 px), 3x3 stride-2 conv (48 ch, 8 px), a residual
    block, 3x3 stride-2 conv (128 ch, 4 px), every conv with batch norm; 2x2 average pool, then
    128 x 2 x 2 -> 128 (penultimate features) -> 10. Taps: stem, residual block and last conv outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(1, 32, 5, stride=2)
        self.down1 = _conv_bn(32, 48, 3, stride=2)
        self.block = _ResidualBlock(48)
        self.down2 = _conv_bn(48, 128, 3, stride=2)

    def taps(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        stem = F.relu(self.stem(self.prepare(images)))
        block = self.block(F.relu(self.down1(stem)))
        last = F.relu(self.down2(block))
        return [stem, block, last], self.head(F.avg_pool2d(last, 2))


_ARCHITECTURES: dict[str, type[_Classifier]] = {"percept": PerceptNet, "eval": EvalNet}


# ----------------------------------------------------------------------------- shipped weights


def feature_net_path(kind: str) -> Path:
    """Where the shipped weights of ``kind`` ("percept" or "eval") live: ``priors/features/fmnist-KIND``."""
    if kind not in _ARCHITECTURES:
        raise InputError(f"kind must be 'percept' or 'eval', got {kind!r}")
    return FEATURES_DIR / f"fmnist-{kind}.safetensors"


def load_feature_net(kind: str, path: str | Path | None = None) -> _Classifier:
    """Build a :class:`PerceptNet` (kind "percept") or :class:`EvalNet` ("eval") with trained weights,
    from ``path`` or the shipped file, frozen and in eval mode."""
    path = Path(path) if path is not None else feature_net_path(kind)
    if not path.is_file():
        raise FileNotFoundError(
            f"the Fashion-MNIST {kind} network weights {path} are missing; reinstall brgm-pyro or "
            f"train them with `python scripts/train_feature_nets.py`"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{path} is not a readable safetensors file ({error}); train it again") from None
    info = json.loads(metadata.get(_METADATA_KEY, "{}"))
    if info.get("kind") != kind:
        raise InputError(
            f"{path} holds a {info.get('kind', 'foreign')!r} network, not a Fashion-MNIST {kind!r} network"
        )
    net = _ARCHITECTURES[kind]()
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{path} does not match the {type(net).__name__} architecture (missing {missing}, "
            f"unexpected {unexpected}); train it again with scripts/train_feature_nets.py"
        )
    return net.eval().requires_grad_(False)


class FMNISTPercept(FeatureNetwork):
    """The Fashion-MNIST perceptual network phi (registered as ``"fmnist"``).

    ``forward(images)`` maps (B, 1, H, W) images in [0, 1], any size (see the module docstring), to
    (B, 30720) features, the LPIPS-style normalised activations of PerceptNet's four conv layers
    (16 x 32^2 + 32 x 16^2 + 64 x 8^2 + 128 x 4^2 values), so ``||phi(a) - phi(b)||^2`` is in [0, 4].

    Example:
        >>> phi = FMNISTPercept()
        >>> phi(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 30720])
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        self.net = load_feature_net("percept", weights)
        self.freeze()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        activations, _ = self.net.taps(images)
        return _lpips_features(activations)


class FMNISTEval(nn.Module):
    """The frozen Fashion-MNIST evaluator (:class:`EvalNet`) for metrics only; never put it in a loss.

    All methods take images (B, 1, H, W) in [0, 1] of any size (see the module docstring).
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
        """Class logits (B, 10), in the order of :data:`CLASS_NAMES`."""
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
        features_a = _lpips_features(self.net.taps(a)[0])
        features_b = _lpips_features(self.net.taps(b)[0])
        return (features_a - features_b).square().sum(dim=1)


@functools.lru_cache(maxsize=1)
def _default_eval() -> FMNISTEval:
    return FMNISTEval()


# ----------------------------------------------------------------------------- metrics


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
    _check_gray(images)
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


# ----------------------------------------------------------------------------- training


def _augment(images: torch.Tensor, low_resolution: bool, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips; with ``low_resolution``, an eighth of the images are also area-reduced
    by 2, 4 or 8 and enlarged back by pixel replication, as phi sees low-resolution observations."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if low_resolution:
        chosen = torch.rand(images.shape[0], generator=generator) < 0.125
        factors = torch.tensor([2, 4, 8])[torch.randint(0, 3, (images.shape[0],), generator=generator)]
        images = images.clone()
        for factor in (2, 4, 8):
            rows = chosen & (factors == factor)
            if rows.any():
                small = F.avg_pool2d(images[rows], factor)
                images[rows] = F.interpolate(small, scale_factor=factor, mode="nearest")
    return images


def _accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    net.eval()
    with torch.no_grad():
        correct = sum(
            int((net(x).argmax(1) == y).sum())
            for x, y in zip(images.split(batch_size), labels.split(batch_size))
        )
    return correct / len(labels)


def train_feature_net(
    kind: str,
    epochs: int,
    seed: int,
    out_path: str | Path,
    batch_size: int = 256,
    lr: float = 3e-3,
    augment: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a :class:`PerceptNet` (``kind="percept"``) or :class:`EvalNet` (``"eval"``) classifier.

    Adam with a one-cycle learning-rate schedule (peak ``lr``) on the ``train`` split; the epoch of
    best ``val`` accuracy is kept; the ``test`` accuracy of that network is measured once, for the
    card. Augmentation: horizontal flips, and for "percept" also low-resolution copies (see
    :func:`_augment`). Writes ``out_path`` (safetensors) and the card ``out_path`` with suffix .json
    atomically, and returns the card: val / test accuracy, epochs, seed, seconds, parameter count.
    """
    from brgm_pyro.data import load_fashion_mnist

    if kind not in _ARCHITECTURES:
        raise InputError(f"kind must be 'percept' or 'eval', got {kind!r}")
    if epochs < 1:
        raise InputError(f"epochs must be >= 1, got {epochs}")
    out_path = Path(out_path)
    start = time.perf_counter()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train_images, train_labels = load_fashion_mnist("train")
    val_images, val_labels = load_fashion_mnist("val")

    net = _ARCHITECTURES[kind]()
    net.pixel_mean.fill_(float(train_images.mean()))
    net.pixel_std.fill_(float(train_images.std()))
    steps_per_epoch = math.ceil(len(train_labels) / batch_size)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch)
    history, best_accuracy, best_state = [], -1.0, None
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(train_labels), generator=generator)
        batches = tqdm(
            order.split(batch_size), desc=f"{kind} epoch {epoch + 1}/{epochs}", disable=not progress
        )
        for rows in batches:
            images = train_images[rows]
            if augment:
                images = _augment(images, low_resolution=kind == "percept", generator=generator)
            loss = F.cross_entropy(net(images), train_labels[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            batches.set_postfix(loss=f"{loss.item():.3f}")
        val_accuracy = _accuracy(net, val_images, val_labels)
        history.append(val_accuracy)
        if val_accuracy > best_accuracy:
            best_accuracy, best_state = val_accuracy, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    test_images, test_labels = load_fashion_mnist("test")
    card = {
        "name": f"fmnist-{kind}",
        "architecture": type(net).__name__,
        "role": "perceptual feature network phi" if kind == "percept" else "evaluation network, metrics only",
        "data": "Fashion-MNIST padded to 32x32: trained on train (55,000), selected on val (5,000)",
        "val_accuracy": best_accuracy,
        "val_accuracy_per_epoch": history,
        "test_accuracy": _accuracy(net, test_images, test_labels),
        "epochs": epochs,
        "best_epoch": history.index(best_accuracy) + 1,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "augment": augment,
        "parameters": sum(p.numel() for p in net.parameters()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    tensors = {name: value.detach().contiguous() for name, value in net.state_dict().items()}
    metadata = {_METADATA_KEY: json.dumps({"kind": kind, **card})}
    with atomic_path(out_path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    write_json(out_path.with_suffix(".json"), card)
    return card


# overwrite: re-importing this module (importlib.reload) must not fail.
register_perceptual("fmnist", FMNISTPercept, overwrite=True)
