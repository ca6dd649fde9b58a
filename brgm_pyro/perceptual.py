"""Feature networks phi for the perceptual likelihood of BRGM.

The paper models perceptual noise as independent Gaussian noise in a feature space:

    phi(y) ~ Normal(phi(f(x)), sigma_percept^2 I)

so -log p = ||phi(y) - phi(f(x))||^2 / (2 sigma_percept^2) + const. A :class:`FeatureNetwork` maps
images (B, C, H, W) in [0, 1] to flat features (B, N) chosen so that the squared Euclidean distance
of two feature vectors *is* the perceptual distance; for :class:`LPIPSVGG` it equals LPIPS-VGG
exactly, so the Gaussian likelihood on the features is an LPIPS term.

Networks are frozen (always in eval mode, no trainable parameters); gradients flow to the input.
"""

from __future__ import annotations

import abc
import math
import os
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from brgm_pyro.errors import InputError, InputTypeError, MissingWeightsError

__all__ = [
    "LPIPSVGG",
    "VGG16_FILENAME",
    "VGG16_URL",
    "FeatureNetwork",
    "MissingWeightsError",
    "available_perceptual",
    "check_images",
    "get_perceptual",
    "register_perceptual",
    "vgg16_weights_path",
]

VGG16_FILENAME = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILENAME}"



class FeatureNetwork(nn.Module, abc.ABC):
    """A frozen feature map phi: images (B, C, H, W) in [0, 1] -> features (B, N).

    Subclasses implement :meth:`forward` such that ``(phi(a) - phi(b)).square().sum(1)`` is the
    perceptual distance between ``a`` and ``b``. Call :meth:`freeze` at the end of ``__init__``.
    """

    @abc.abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map images (B, C, H, W) in [0, 1] to features (B, N)."""

    def freeze(self) -> FeatureNetwork:
        """Put the network in eval mode and stop gradients to its parameters (not to its input)."""
        self.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> FeatureNetwork:
        # A parent module calling .train() must not switch on dropout or batch statistics in phi.
        return super().train(False)


def vgg16_weights_path() -> str:
    """Where torchvision caches its ImageNet VGG16 weights: ``torch.hub.get_dir()/checkpoints/``."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", VGG16_FILENAME)


def _ensure_vgg16_weights() -> str:
    """Return the cached VGG16 weights file, downloading it once if absent.

    A present file is used as is, so no network access is tried; a failed download becomes a
    :class:`MissingWeightsError` that says where to place the file by hand.
    """
    path = vgg16_weights_path()
    if os.path.isfile(path):
        return path
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.hub.download_url_to_file(VGG16_URL, path, hash_prefix=VGG16_FILENAME[6:14], progress=False)
    except Exception as error:  # urllib, socket, hash and file errors all mean the same to the user
        raise MissingWeightsError(
            f"LPIPS-VGG needs torchvision's ImageNet weights {VGG16_FILENAME}, which are not cached and "
            f"could not be downloaded ({type(error).__name__}: {error}); download {VGG16_URL} on a "
            f"machine with internet access and place it at {path}"
        ) from error
    return path


def check_images(images: torch.Tensor) -> None:
    """Raise InputError unless ``images`` is a float tensor (B, C, H, W) with C = 1 or 3."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(
            f"perceptual networks take images of shape (B, C, H, W) with C = 1 or 3, got {shape}; "
            "add a batch dimension or convert the channels"
        )
    if not images.is_floating_point():
        raise InputError(f"perceptual networks take float images in [0, 1], got dtype {images.dtype}")


def _unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Scale each spatial position to unit norm over channels, as lpips.normalize_tensor.

    The eps^2 under the root changes nothing in float32 for non-zero features but keeps the
    gradient finite where every channel is zero (sqrt has an infinite slope at 0).
    """
    norm = torch.sqrt(features.square().sum(dim=1, keepdim=True) + eps**2)
    return features / (norm + eps)


class LPIPSVGG(FeatureNetwork):
    """LPIPS-VGG (v0.1) features: ``||phi(a) - phi(b)||^2 = LPIPS(a, b)``.

    For each of the five VGG16 layers l (relu1_2 ... relu5_3) with activations A_l of size
    (C_l, H_l, W_l) and LPIPS linear weights w_l >= 0,

        phi_l(x) = sqrt(w_l) * A_l(x) / ||A_l(x)||_channels / sqrt(H_l W_l),

    flattened and concatenated over l. LPIPS averages sum_c w_lc (a_c - b_c)^2 over positions and
    sums over layers, which is exactly the squared distance of these features.

    Preprocessing, as in the authors' code: grayscale is repeated to RGB; images larger than
    ``max_size`` are area-resized so the longer side is ``max_size`` (256 = 1024 / 4 for FFHQ).
    Images with a side below ``min_size`` are enlarged by the smallest integer factor that reaches
    it, replicating pixels (what the authors' area resize does when it enlarges); the default 64
    is the patch size LPIPS was calibrated on and keeps relu5_3 at 4x4 or more. VGG needs at least
    16 px (four poolings), so ``min_size`` must be >= 16. ``min_size=256`` reproduces the authors,
    who resize every image to 256x256. Values are not clamped: generator outputs may overshoot.

    Args:
        pretrained_backbone: load torchvision's ImageNet VGG16 weights (cached under the torch hub
            directory; see :class:`MissingWeightsError`). ``False`` gives a random backbone, for tests.
        max_size: longer side above which images are area-downsampled.
        min_size: shorter side below which images are enlarged by pixel replication.

    Example:
        >>> net = LPIPSVGG(pretrained_backbone=False)
        >>> net(torch.rand(2, 1, 32, 32)).shape
        torch.Size([2, 499712])
    """

    def __init__(self, pretrained_backbone: bool = True, max_size: int = 256, min_size: int = 64) -> None:
        super().__init__()
        if min_size < 16 or max_size < min_size:
            raise InputError(
                f"LPIPSVGG needs 16 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}"
            )
        import lpips

        if pretrained_backbone:
            _ensure_vgg16_weights()
        with warnings.catch_warnings():
            # lpips still passes torchvision's deprecated `pretrained=` argument.
            warnings.simplefilter("ignore", UserWarning)
            self.lpips = lpips.LPIPS(
                net="vgg", pretrained=True, pnet_rand=not pretrained_backbone, verbose=False
            )
        self.max_size = max_size
        self.min_size = min_size
        self.freeze()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> (B, 3, H', W') in [0, 1] at the size VGG sees."""
        check_images(images)
        height, width = images.shape[-2:]
        if max(height, width) > self.max_size:
            scale = self.max_size / max(height, width)
            height, width = max(1, round(height * scale)), max(1, round(width * scale))
            images = F.interpolate(images, size=(height, width), mode="area")
        if min(height, width) < self.min_size:
            factor = math.ceil(self.min_size / min(height, width))
            images = F.interpolate(images, scale_factor=factor, mode="nearest")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.lpips.scaling_layer(2 * self.preprocess(images) - 1)
        features = []
        for activation, lin in zip(self.lpips.net(x), self.lpips.lins, strict=True):
            weight = lin.model[-1].weight.reshape(1, -1, 1, 1)
            height, width = activation.shape[-2:]
            scaled = _unit_normalize(activation) * weight.sqrt() / math.sqrt(height * width)
            features.append(scaled.flatten(1))
        return torch.cat(features, dim=1)


def _fmnist() -> FeatureNetwork:
    # Imported when asked for, not with this module: brgm_pyro.fmnist imports this module, and a user
    # of the API asks for "fmnist" (the embedded prior's card does) without importing brgm_pyro.fmnist.
    from brgm_pyro.fmnist.percept import FMNISTPercept

    return FMNISTPercept()


_REGISTRY: dict[str, Callable[[], FeatureNetwork]] = {"lpips-vgg": LPIPSVGG, "fmnist": _fmnist}


def register_perceptual(name: str, factory: Callable[[], FeatureNetwork], overwrite: bool = False) -> None:
    """Make ``get_perceptual(name)`` return ``factory()``; ``factory`` builds a :class:`FeatureNetwork`."""
    key = name.lower()
    if key == "none":
        raise InputError("'none' is reserved for 'no perceptual term'; choose another name")
    if not callable(factory):
        raise InputTypeError(f"register_perceptual needs a callable factory, got {type(factory).__name__}")
    if key in _REGISTRY and not overwrite:
        raise InputError(
            f"perceptual network {name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTRY[key] = factory


def available_perceptual() -> list[str]:
    """Names accepted by :func:`get_perceptual`, besides 'none'."""
    return sorted(_REGISTRY)


def get_perceptual(name_or_module: str | nn.Module | None) -> FeatureNetwork | None:
    """Resolve a perceptual network: None or 'none' -> None (no perceptual term), a registered name
    -> a new network, a :class:`FeatureNetwork` instance -> itself."""
    if name_or_module is None:
        return None
    if isinstance(name_or_module, str):
        key = name_or_module.lower()
        if key == "none":
            return None
        if key not in _REGISTRY:
            names = ", ".join(["none", *available_perceptual()])
            raise InputError(f"unknown perceptual network {name_or_module!r}; choose one of: {names}")
        network = _REGISTRY[key]()
        if not isinstance(network, FeatureNetwork):
            raise InputTypeError(
                f"the factory registered as {name_or_module!r} returned {type(network).__name__}, "
                "not a FeatureNetwork"
            )
        return network
    if isinstance(name_or_module, FeatureNetwork):
        return name_or_module
    raise InputTypeError(
        f"perceptual must be None, a name or a FeatureNetwork, got {type(name_or_module).__name__}; "
        "subclass brgm_pyro.perceptual.FeatureNetwork so that forward(images) returns (B, N) features"
    )
