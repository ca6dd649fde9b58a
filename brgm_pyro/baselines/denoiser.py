"""The diffusion denoiser of the DPS and DiffPIR baselines: D(x, sigma), a small U-Net with EDM preconditioning.

deepinv's diffusion samplers take a Gaussian denoiser in deepinv's convention: ``D(x, sigma)`` gets
x = x0 + sigma n, with x0 an image in [0, 1] and n ~ N(0, I), and returns an estimate of x0
(E[x0 | x], the MMSE denoiser, from which both DPS and DiffPIR read the score by Tweedie's formula:
grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2). DPS's variance-preserving schedule asks for
sigma from about 1e-3 up to 76 (152 in its [-1, 1] state), DiffPIR's up to 79, so the network must
stay sane over five decades of sigma. That is what the preconditioning of Karras et al. (2022, EDM,
Table 1) gives; in the centred range x' = 2 x - 1, sigma' = 2 sigma, with sigma_data = 0.5:

    D'(x', sigma') = c_skip x' + c_out F(c_in x', c_noise)
    c_skip = sigma_data^2 / (sigma'^2 + sigma_data^2)
    c_out  = sigma' sigma_data / sqrt(sigma'^2 + sigma_data^2)
    c_in   = 1 / sqrt(sigma'^2 + sigma_data^2)
    c_noise = log(sigma') / 4

and D(x, sigma) = (D'(2 x - 1, 2 sigma) + 1) / 2. The network F sees inputs of unit variance and
predicts a target of unit variance at every sigma; at large sigma D tends to the data mean, at small
sigma to the identity.

F is a U-Net (:class:`UNet`) on 32x32 images: residual blocks (GroupNorm, SiLU, 3x3 convs) whose
features are scaled and shifted by an embedding of c_noise, at three resolutions (32, 16, 8) with
skips, and one self-attention layer at 8x8. Its constructor arguments are its ``config``, stored in
the weight file's header (:func:`save_denoiser`).

The shipped weights, ``weights/diffusion-fmnist-32.safetensors``, are trained by
``scripts/train_diffusion.py`` (:mod:`~brgm_pyro.baselines.diffusion_training`); their card is
``weights/diffusion-fmnist-32.md``.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from brgm_pyro.baselines.common import read_weights
from brgm_pyro.errors import CheckpointError, MissingWeightsError
from brgm_pyro.io import PathLike, atomic_path

__all__ = ["FORMAT", "SIGMA_DATA", "Denoiser", "UNet", "load_denoiser", "save_denoiser", "weights_path"]

FORMAT = "brgm-pyro-diffusion-denoiser"
SIGMA_DATA = 0.5
"""The std EDM assumes for images in [-1, 1] (the preconditioning's sigma_data)."""
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def weights_path() -> Path:
    """The shipped denoiser: ``weights/diffusion-fmnist-32.safetensors``."""
    return WEIGHTS_DIR / "diffusion-fmnist-32.safetensors"


class _ResidualBlock(nn.Module):
    """h + conv(silu(norm(conv(silu(norm(h)))) * (1 + scale) + shift)), the scale and shift from the noise embedding."""

    def __init__(self, channels_in: int, channels_out: int, embedding: int, groups: int):
        super().__init__()
        self.norm_in = nn.GroupNorm(groups, channels_in)
        self.conv_in = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.film = nn.Linear(embedding, 2 * channels_out)
        self.norm_out = nn.GroupNorm(groups, channels_out)
        self.conv_out = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv_out.bias)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        out = self.conv_in(F.silu(self.norm_in(h)))
        scale, shift = self.film(embedding)[:, :, None, None].chunk(2, dim=1)
        out = F.silu(self.norm_out(out) * (1 + scale) + shift)
        return self.skip(h) + self.conv_out(out)


class _Attention(nn.Module):
    """h + self-attention over the pixels of h (one head), for the coarsest level where the image is 8x8."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, height, width = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, c, height * width).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C)
        return h + self.out(attended.transpose(-1, -2).reshape(b, c, height, width))


class UNet(nn.Module):
    """F(x_in, c_noise): (B, C, H, W), (B,) -> (B, C, H, W), the network inside the preconditioning.

    Levels at H, H/2, H/4 with ``channels[i]`` feature maps; ``blocks`` residual blocks per level on the
    way down and ``blocks + 1`` on the way up (each taking a skip), two blocks and an attention layer
    at the coarsest level. c_noise enters through random Fourier features of fixed frequencies and a
    two-layer MLP. H and W must be divisible by 4.

    Args:
        channels: feature maps per level (three levels).
        blocks: residual blocks per level on the way down.
        embedding: width of the noise embedding.
        image_channels: image channels.
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64, 64), blocks: int = 1, embedding: int = 128,
                 image_channels: int = 1):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3:
            raise ValueError(f"UNet takes three levels of channels, got {channels}.")
        self.config = dict(channels=list(channels), blocks=blocks, embedding=embedding, image_channels=image_channels)
        groups = 8
        self.register_buffer("frequencies", torch.randn(embedding // 2, generator=torch.Generator().manual_seed(0)) * 4)
        self.embed = nn.Sequential(nn.Linear(embedding, embedding), nn.SiLU(), nn.Linear(embedding, embedding))
        self.head = nn.Conv2d(image_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips = [channels[0]]
        width = channels[0]
        for level, features in enumerate(channels):
            for _ in range(blocks):
                self.down.append(_ResidualBlock(width, features, embedding, groups))
                width = features
                skips.append(width)
            if level < len(channels) - 1:
                self.down.append(nn.AvgPool2d(2))
                skips.append(width)
        self.middle = nn.ModuleList([_ResidualBlock(width, width, embedding, groups), _Attention(width, groups),
                                     _ResidualBlock(width, width, embedding, groups)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(channels))):
            for _ in range(blocks + 1):
                self.up.append(_ResidualBlock(width + skips.pop(), channels[level], embedding, groups))
                width = channels[level]
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.tail = nn.Sequential(nn.GroupNorm(groups, width), nn.SiLU(), nn.Conv2d(width, image_channels, 3, padding=1))
        nn.init.zeros_(self.tail[-1].weight)
        nn.init.zeros_(self.tail[-1].bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        angles = c_noise[:, None] * self.frequencies[None] * (2 * math.pi)
        embedding = F.silu(self.embed(torch.cat([angles.cos(), angles.sin()], dim=1)))
        h = self.head(x)
        saved = [h]
        for layer in self.down:
            h = layer(h, embedding) if isinstance(layer, _ResidualBlock) else layer(h)
            saved.append(h)
        for layer in self.middle:
            h = layer(h, embedding) if isinstance(layer, _ResidualBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, _ResidualBlock):
                h = layer(torch.cat([h, saved.pop()], dim=1), embedding)
            else:
                h = layer(h)
        return self.tail(h)


class Denoiser(nn.Module):
    """D(x, sigma) -> the MMSE estimate of x0 from x = x0 + sigma n, images in [0, 1] (module notes).

    ``sigma`` is a number, a 0-d tensor or one value per image (B,); x is (B, C, H, W). The output is
    not clamped (the samplers clip where they want to).
    """

    def __init__(self, **config):
        super().__init__()
        self.network = UNet(**config)
        self.config = self.network.config

    def preconditioned(self, x_centred: torch.Tensor, sigma_centred: torch.Tensor) -> torch.Tensor:
        """D' in the centred range: x' (B, C, H, W) in [-1, 1] plus noise of std sigma' (B,)."""
        total = sigma_centred.square() + SIGMA_DATA**2
        c_skip = (SIGMA_DATA**2 / total)[:, None, None, None]
        c_out = (sigma_centred * SIGMA_DATA / total.sqrt())[:, None, None, None]
        c_in = total.rsqrt()[:, None, None, None]
        return c_skip * x_centred + c_out * self.network(c_in * x_centred, sigma_centred.log() / 4)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        return (self.preconditioned(2 * x - 1, 2 * sigma) + 1) / 2


def save_denoiser(denoiser: Denoiser, path: PathLike, card: dict | None = None) -> Path:
    """Write the denoiser's weights and architecture (safetensors header, with ``card`` if given) atomically."""
    metadata = {"format": FORMAT, "config": json.dumps(denoiser.config)}
    if card is not None:
        metadata["card"] = json.dumps(card)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in denoiser.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return Path(path)


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime_ns: int) -> Denoiser:
    tensors, metadata = read_weights(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a diffusion denoiser of brgm-pyro (no {FORMAT} header); write it with "
            "scripts/train_diffusion.py."
        )
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's generator alone
        denoiser = Denoiser(**json.loads(metadata["config"]))
    denoiser.load_state_dict(tensors)
    return denoiser.eval().requires_grad_(False)


def load_denoiser(path: PathLike | None = None) -> Denoiser:
    """The denoiser in eval mode from a file of :func:`save_denoiser` (default: the shipped one); cached per file version."""
    path = weights_path() if path is None else Path(path)
    if not path.is_file():
        raise MissingWeightsError(
            f"The diffusion denoiser {path} is missing; train it with `python scripts/train_diffusion.py` "
            "or reinstall brgm-pyro."
        )
    return _load(str(path.resolve()), path.stat().st_mtime_ns)

