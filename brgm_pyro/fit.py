"""Whether a reconstruction fits its observed pixels: the residual y - f(G(w)) against what the model's noise explains.

With the prior's reach (``docs/model.md``), an observed value is y = f(G(w) + r) + n with r ~ N(0,
sigma_reach^2 I) per clean pixel and n ~ N(0, sigma_pixel^2 I), so at the true w the residual
e = y - f(G(w)) has per-pixel variance sigma_pixel^2 + sigma_reach^2 (F F^T)_ii, and its mean square over
the n observed pixels has mean

    s^2 = sigma_pixel^2 + sigma_reach^2 d,      d = the mean of (F F^T)_ii over the observed pixels,

and, were the pixels independent, standard deviation s^2 sqrt(2 / n). A reconstruction is flagged when
its mean square residual exceeds s^2 (1 + 3 sqrt(2 / n)), three standard deviations above it: f(G(w))
is then further from y than the model's noise and the prior's reach (measured on held-out images, in
the prior's card) explain, so the reconstruction does not explain its input, whether the optimiser
stopped in a poor mode or the prior cannot reach the image. For the embedded prior (sigma_pixel 0.005,
sigma_reach 0.0611) and a 16x16 hole in 32x32 (n = 768, d = 1) the bound is an RMS of 0.066 (23.6 dB);
bicubic x4 downsampling averages the reach away (d ~ 0.1), and the bound drops with it. The tuned
sigma_pixel is a weight more than a noise level; it is the reach that sets the bound for real images.

d is estimated with seeded Gaussian probes z (E[(F z)_i^2] = (F F^T)_ii), so it holds for any linear f.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from brgm_pyro.reconstruct import ReconstructionResult

__all__ = ["FitCheck", "check_fit"]

PROBES = 16  # Gaussian probes of diag(F F^T): the estimate of d has a relative error of about 1 / sqrt(16 n)
SIGMAS = 3.0  # how many standard deviations of the mean square residual above its mean are flagged


@dataclass(frozen=True)
class FitCheck:
    """Per image of a batch: the RMS residual over the observed pixels and the largest RMS the model explains.

    Attributes:
        rmse: (B,) RMS of y - f(G(w)) over the observed pixels.
        allowed: (B,) sqrt(s^2 (1 + 3 sqrt(2 / n))), the bound of the module notes.
    """

    rmse: torch.Tensor
    allowed: torch.Tensor

    @property
    def fits(self) -> torch.Tensor:
        """(B,) True where the reconstruction explains its observed pixels."""
        return self.rmse <= self.allowed

    def record(self, index: int) -> dict[str, float | bool]:
        """What brgm.json and metrics.json hold for image ``index``."""
        return {"rmse_observed": round(float(self.rmse[index]), 5), "rmse_allowed": round(float(self.allowed[index]), 5),
                "fits": bool(self.fits[index])}

    def note(self, index: int, name: str) -> str | None:
        """One sentence for image ``index`` (called ``name``) when it does not fit; None when it does."""
        if self.fits[index]:
            return None
        rmse, allowed = float(self.rmse[index]), float(self.allowed[index])
        return (f"{name}: f(reconstruction) misses the observed pixels of the input by an RMS of {rmse:.3f} "
                f"({-20 * math.log10(max(rmse, 1e-6)):.1f} dB), more than the {allowed:.3f} that the noise and the prior's "
                "reach explain; the reconstruction does not explain its input there.")


def check_fit(rec: ReconstructionResult, forward: nn.Module, seed: int = 0) -> FitCheck:
    """The :class:`FitCheck` of a MAP result ``rec`` under its linear corruption ``forward`` (module notes)."""
    observed = rec.observed.expand_as(rec.y).flatten(1)
    count = observed.sum(1).clamp_min(1)
    residual = ((rec.y_reconstructed - rec.y).square().flatten(1) * observed).sum(1) / count
    generator = torch.Generator().manual_seed(seed)
    device = next((b.device for b in forward.buffers()), torch.device("cpu"))
    response = torch.zeros_like(observed)
    with torch.no_grad():  # one batch of probes per draw, so that an operator with one mask per image applies
        for _ in range(PROBES):
            probe = torch.randn(rec.image.shape, generator=generator, dtype=rec.image.dtype)
            response += forward(probe.to(device)).cpu().square().flatten(1).expand_as(response) / PROBES
    d = (response * observed).sum(1) / count
    s2 = rec.params.sigma_pixel**2 + rec.params.sigma_reach**2 * d
    allowed = s2 * (1 + SIGMAS * (2 / count).sqrt())
    return FitCheck(rmse=residual.sqrt(), allowed=allowed.sqrt())
