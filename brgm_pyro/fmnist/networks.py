"""The Fashion-MNIST feature networks: two small classifiers, their input handling and shipped weights.

Two classifiers of 1 x 32 x 32 images in [0, 1] (Fashion-MNIST padded to 32 px), trained on the
``train`` split (55,000 images), selected on ``val`` (5,000), scored once on ``test``
(:func:`brgm_pyro.training.feature_nets.train_feature_net`):

* :class:`PerceptNet` (VGG-like), behind the perceptual phi ``"fmnist"`` (:mod:`brgm_pyro.fmnist.percept`);
* :class:`EvalNet` (a small ResNet: strided 5x5 stem, one residual block), of another architecture
  and seed, behind the evaluator (:mod:`brgm_pyro.fmnist.evaluator`). It is used only by the
  metrics, never inside a loss, so that a reconstruction cannot be scored well by the network it
  was optimised against.

Both networks take images of any size: smaller than 32 px they are enlarged to 32 by nearest
neighbour (pixel replication, exact for sizes that divide 32, e.g. the 8 x 8 or 4 x 4 low-resolution
images of super-resolution), larger ones are area-resized to 32 (exact averaging of blocks for sizes
that 32 divides). Each axis is resized on its own. Values are not clamped, since generator outputs may
overshoot [0, 1]. The networks normalise their input, ``(x - mean) / std`` with the pixel statistics
of the training split, inside themselves.

LPIPS-style distance (:func:`lpips_features`). For each tapped layer l of L, with activations A_l
(after the ReLU) of size (C_l, H_l, W_l),

    phi_l(x) = n(A_l(x)) / sqrt(H_l W_l) / sqrt(L),    n(a) = a / sqrt(||a||^2 + eps^2) per position,

where ||a|| is the norm over the C_l channels at one position (the unit normalisation of LPIPS; the
eps = 1e-6 under the root keeps it smooth where every channel is zero). Flattened and concatenated
over layers, ``||phi(a) - phi(b)||^2 = mean over l of (mean over positions of ||n(A_l(a)) -
n(A_l(b))||^2)``: LPIPS with equal, unlearnt channel weights, in [0, 4].
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from torch import nn

from brgm_pyro.errors import InputError
from brgm_pyro.fmnist.data import CLASS_NAMES
from brgm_pyro.perceptual import check_images

__all__ = [
    "ARCHITECTURES",
    "CLASS_NAMES",
    "FEATURES_DIR",
    "INPUT_SIZE",
    "METADATA_KEY",
    "EvalNet",
    "PerceptNet",
    "check_gray",
    "check_kind",
    "feature_net_path",
    "load_feature_net",
    "lpips_features",
    "resize_to_input",
]

INPUT_SIZE = 32
FEATURES_DIR = Path(__file__).resolve().parent.parent / "priors" / "features"
NORM_EPS = 1e-6
METADATA_KEY = "brgm_pyro.feature_net"  # the safetensors metadata entry of a network's card


# ----------------------------------------------------------------------------- input handling


def check_gray(images: torch.Tensor) -> None:
    """Raise InputError unless ``images`` is a float tensor (B, 1, H, W)."""
    check_images(images)
    if images.shape[1] != 1:
        raise InputError(
            f"the Fashion-MNIST networks take grayscale images of shape (B, 1, H, W), got "
            f"{tuple(images.shape)}; convert colour to grayscale"
        )


def resize_to_input(images: torch.Tensor) -> torch.Tensor:
    """Resize images (B, 1, H, W) to (B, 1, 32, 32): area-average axes above 32, then replicate
    pixels (nearest neighbour) along axes below 32. Images of 32 x 32 pass unchanged."""
    check_gray(images)
    height, width = images.shape[-2:]
    if height > INPUT_SIZE or width > INPUT_SIZE:
        images = F.interpolate(images, size=(min(height, INPUT_SIZE), min(width, INPUT_SIZE)), mode="area")
    height, width = (int(size) for size in images.shape[-2:])  # constants in a recorded log density
    if INPUT_SIZE % height == 0 and INPUT_SIZE % width == 0:
        # Whole factors (8 px -> 32): the same pixels as "nearest-exact", by an op that torch.func
        # can batch (the dense Hessian of the Laplace whitening vmaps through this network).
        return images.repeat_interleave(INPUT_SIZE // height, dim=-2).repeat_interleave(INPUT_SIZE // width, dim=-1)
    return F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="nearest-exact")


def _normalise_channels(activation: torch.Tensor) -> torch.Tensor:
    return activation / torch.sqrt(activation.square().sum(dim=1, keepdim=True) + NORM_EPS**2)


def lpips_features(activations: list[torch.Tensor]) -> torch.Tensor:
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
        """Class logits (B, 10), in the order of :data:`CLASS_NAMES`."""
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


ARCHITECTURES: dict[str, type[_Classifier]] = {"percept": PerceptNet, "eval": EvalNet}


# ----------------------------------------------------------------------------- shipped weights


def check_kind(kind: str) -> None:
    """Raise InputError unless ``kind`` names one of the two networks, "percept" or "eval"."""
    if kind not in ARCHITECTURES:
        raise InputError(f"kind must be 'percept' or 'eval', got {kind!r}")


def feature_net_path(kind: str) -> Path:
    """Where the shipped weights of ``kind`` ("percept" or "eval") live: ``priors/features/fmnist-KIND``."""
    check_kind(kind)
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
    info = json.loads(metadata.get(METADATA_KEY, "{}"))
    if info.get("kind") != kind:
        raise InputError(
            f"{path} holds a {info.get('kind', 'foreign')!r} network, not a Fashion-MNIST {kind!r} network"
        )
    net = ARCHITECTURES[kind]()
    missing, unexpected = net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{path} does not match the {type(net).__name__} architecture (missing {missing}, "
            f"unexpected {unexpected}); train it again with scripts/train_feature_nets.py"
        )
    return net.eval().requires_grad_(False)
