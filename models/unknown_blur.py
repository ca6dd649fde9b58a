"""BRGM with an unknown blur: the width sigma_b of a Gaussian blur in the corruption is a latent with a prior.

The paper fixes the corruption f (Sec. 2.3) and names "jointly optimizing the parameters of the
corruption models" as future work (Sec. 4). Here f = after o Blur_gaussian(sigma_b), and each image
gets its own blur width, inferred with w:

    sigma_b  ~ LogNormal(log sigma_0, s^2)                    per image; sigma_0 = f.sigma, s = f.spread
    w_{l,d}  ~ Normal(w_avg_d, w_std^2)
    factor     kappa * sum_{i<j} cos(w_i, w_j)
    x        = G(w)
    y        ~ Normal(f_{sigma_b}(x), sigma_pixel^2)           on observed pixels
    phi(y)   ~ Normal(phi(f_{sigma_b}(x)), sigma_percept^2)

The corruption is given as an :class:`UnknownBlur` operator, which holds the known part (``after``,
e.g. ``Downsample(4, "box")``) and the belief about the width (the prior's median ``sigma`` and its
log-scale ``spread``). Its blur is differentiable in sigma_b, so MAP, SVI and NUTS see the gradient
of the likelihood with respect to the width:

    f = UnknownBlur(Downsample(4, "box"), sigma=1.5)
    rec = bp.reconstruct(y, f, G, model=unknown_blur.model)      rec.latents["sigma_b"]: (B,)
    post = bp.sample_posterior(y, f, G, model="unknown-blur")     post.latents["sigma_b"]: (S, B)

``corruption(f, latents)`` (the registry's ``BRGMModel.corruption``) is f at the inferred widths, which the MAP uses for f(G(w)) and its
data consistency. The prior's reach term needs a known f, so ``sample_posterior`` leaves it off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.forward import Operator
from brgm_pyro.models.brgm import BRGMParams, colinearity
from brgm_pyro.models.observation import observe
from brgm_pyro.stylegan2 import to_unit

__all__ = ["UnknownBlur", "blur_prior", "corruption", "model"]


def _gaussian_profiles(sigma: Tensor, size: int) -> Tensor:
    """Normalised 1-D Gaussian taps, (B, size), for widths sigma (B,) in pixels."""
    taps = torch.arange(size, dtype=sigma.dtype, device=sigma.device) - (size - 1) / 2
    profile = torch.exp(-0.5 * (taps / sigma[:, None]) ** 2)
    return profile / profile.sum(-1, keepdim=True)


class UnknownBlur(Operator):
    r"""f_sigma(x) = after(k_sigma * x): a Gaussian blur of width sigma (pixels) per image, then ``after``.

    k_sigma is the normalised Gaussian exp(-(u^2 + v^2) / (2 sigma^2)) of odd ``size`` x ``size`` taps,
    applied per channel with reflect padding, as ``Blur.gaussian(sigma, size)``; it is separable, so
    it is applied as two 1-D convolutions, and differentiable in sigma. Called as an operator
    (``f(x)``) it blurs with the prior's median ``sigma``; :meth:`at` fixes one width per image.

    Args:
        after: the known rest of the corruption (``Downsample``, ``Mask``, ``Compose``, ...).
        sigma: the prior's median width sigma_0 in pixels.
        spread: the prior's standard deviation of log sigma_b (0.5: a factor 1.65 either way).
        size: kernel taps (odd); default 2 ceil(3 sigma_max) + 1 with sigma_max = sigma e^(3 spread),
            the width three prior standard deviations up.
    """

    def __init__(self, after: Operator, sigma: float, spread: float = 0.5, size: int | None = None) -> None:
        super().__init__()
        if not isinstance(after, Operator):
            raise InputTypeError(f"UnknownBlur needs an operator of brgm_pyro.forward to apply after the blur, "
                                 f"got {type(after).__name__}.")
        for name, value in (("sigma", sigma), ("spread", spread)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise InputError(f"UnknownBlur {name} must be a positive finite number, got {value!r}.")
        size = 2 * math.ceil(3 * sigma * math.exp(3 * spread)) + 1 if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
            raise InputError(f"UnknownBlur size must be a positive odd integer, got {size!r}; pass e.g. size=15.")
        self.after, self.sigma, self.spread, self.size = after, float(sigma), float(spread), size

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, spread={self.spread}, size={self.size}"

    def output_shape(self, shape: Sequence[int]) -> torch.Size:
        shape = super().output_shape(shape)
        half = self.size // 2
        if half >= min(shape[2], shape[3]):
            raise InputError(
                f"UnknownBlur's kernel of {self.size} taps needs reflect padding of {half} pixels, more than an "
                f"image of {shape[2]}x{shape[3]} allows; pass a smaller size or spread."
            )
        return self.after.output_shape(shape)

    def input_shape(self, shape: Sequence[int]) -> torch.Size:
        return self.after.input_shape(shape)

    @property
    def per_image(self) -> bool:
        return self.after.per_image

    def tile(self, repeats: int) -> UnknownBlur:
        if not self.per_image:
            return self
        return UnknownBlur(self.after.tile(repeats), self.sigma, self.spread, self.size)

    def select(self, index: int) -> UnknownBlur:
        if not self.per_image:
            return self
        return UnknownBlur(self.after.select(index), self.sigma, self.spread, self.size)

    def observed(self, shape: Sequence[int], device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        # The blur observes every pixel; what is missing is only what ``after`` hides.
        return self.after.observed(shape, device=device, dtype=dtype)

    def blur(self, x: Tensor, sigma: Tensor) -> Tensor:
        """x (B, C, H, W) blurred with width sigma[b] for image b; sigma (B,) or a scalar."""
        b, c, h, w = x.shape
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(b)
        profile = _gaussian_profiles(sigma, self.size).repeat_interleave(c, dim=0)  # (B C, size)
        half = self.size // 2
        padded = F.pad(x.reshape(1, b * c, h, w), (half, half, half, half), mode="reflect")
        rows = F.conv2d(padded, profile[:, None, :, None], groups=b * c)
        return F.conv2d(rows, profile[:, None, None, :], groups=b * c).reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        return self.after(self.blur(x, x.new_tensor(self.sigma)))

    def _abs_forward(self, x: Tensor) -> Tensor:
        return self.after._abs_forward(self.blur(x, x.new_tensor(self.sigma)))

    def at(self, sigma: Tensor) -> nn.Module:
        """The operator with the widths fixed, one per image: x (B, ...) -> after(k_sigma[b] * x[b])."""
        return _FixedWidths(self, sigma)


class _FixedWidths(nn.Module):
    """An :class:`UnknownBlur` at known widths, one per image (what ``UnknownBlur.at`` returns)."""

    def __init__(self, family: UnknownBlur, sigma: Tensor) -> None:
        super().__init__()
        self.family, self.sigma = family, sigma

    def forward(self, x: Tensor) -> Tensor:
        self.family.check(x)
        return self.family.after(self.family.blur(x, self.sigma.to(x)))


def blur_prior(forward: UnknownBlur, batch: int, like: Tensor) -> dist.TorchDistribution:
    """The prior of sigma_b, (batch,): LogNormal(log sigma_0, spread^2) with f's sigma_0 and spread."""
    loc = like.new_tensor(math.log(forward.sigma)).expand(batch)
    return dist.LogNormal(loc, like.new_tensor(forward.spread).expand(batch))


def model(y: Tensor, forward: nn.Module, generator: nn.Module, params: BRGMParams,
          observed: Tensor | None = None, perceptual: nn.Module | None = None,
          y_features: Tensor | None = None) -> Tensor:
    """BRGM with a latent blur width per image (site "sigma_b", shape (B,)); ``forward`` must be an
    :class:`UnknownBlur`, the other arguments as :func:`brgm_pyro.models.brgm.model`. Returns G(w) in [0, 1]."""
    if not isinstance(forward, UnknownBlur):
        raise InputTypeError(
            f"The unknown-blur model needs f = UnknownBlur(after, sigma) (the blur of unknown width, then the rest "
            f"of the corruption), got {type(forward).__name__}."
        )
    batch = y.shape[0]
    prior_loc = generator.w_avg.expand(generator.num_ws, generator.w_dim)
    with pyro.plate("images", batch):
        sigma_b = pyro.sample("sigma_b", blur_prior(forward, batch, y))
        w = pyro.sample("w", dist.Normal(prior_loc, generator.w_std).to_event(2))
        pyro.factor("colinear", params.kappa * colinearity(w))
        x = pyro.deterministic("image", to_unit(generator.synthesis(w)), event_dim=3)
        y_clean = forward.after(forward.blur(x, sigma_b))
        observe(y, y_clean, params, observed, perceptual, y_features)
    return x


def corruption(forward: UnknownBlur, latents: dict[str, Tensor]) -> nn.Module:
    """f at the inferred widths ``latents["sigma_b"]`` (B,)."""
    return forward.at(latents["sigma_b"])

