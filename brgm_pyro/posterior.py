"""The result of posterior sampling, ``Posterior``: draws of the clean images and of the latents.

    post.samples          (S, B, C, H, W) posterior predictive draws of the clean images, in [0, 1]
    post.generator_samples  the images G(w) of the same draws of w (the plausible reconstructions)
    post.mean, post.std   (B, C, H, W) per-pixel posterior mean and standard deviation
    post.interval(0.9)    per-pixel 90% interval (lower, upper): calibrated when the prior's card
                          has a calibration for the task (``brgm_pyro.uncertainty.conformal``), else the
                          posterior's own; ``calibrated=False`` always gives the posterior's own
    post.error_radius(0.9)  per image, the MSE from the mean within which the truth lies with 90%
    post.inference_data   ArviZ InferenceData: w summaries, a latent sigma_pixel, MCMC sample stats

``brgm_pyro.sampling.sample_posterior`` makes one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from brgm_pyro.errors import InputError
from brgm_pyro.inference.diagnostics import inference_data, layer_rms_z, monitored_w
from brgm_pyro.io import atomic_path
from brgm_pyro.metrics import leave_one_out_mse, mse_ball_radius, sorted_quantile
from brgm_pyro.reconstruct import ReconstructionResult

if TYPE_CHECKING:
    from brgm_pyro.uncertainty.conformal import Calibration

__all__ = ["Posterior", "PosteriorModes"]


@dataclass(frozen=True)
class PosteriorModes:
    """The modes of a mixture posterior, K per image, K-major (``inference.mixture``).

    Attributes:
        images: (K, B, C, H, W) each mode's estimate of the clean image, G(w_k) + E[r | y, w_k] in [0, 1].
        weights: (K, B) each mode's posterior mass, summing to 1 per image (0 for a start that ended on
            another mode's).
        log_evidence: (K, B) Laplace's log evidence of each mode (-inf for a merged one).
        log_joint: (K, B) log p(theta_k, y) at each mode.
    """

    images: torch.Tensor
    weights: torch.Tensor
    log_evidence: torch.Tensor
    log_joint: torch.Tensor

    def __len__(self) -> int:
        return self.weights.shape[0]

    def of_image(self, index: int) -> list[dict[str, Any]]:
        """The modes of image ``index`` with weight above 0, heaviest first: image, weight, log evidence."""
        order = self.weights[:, index].argsort(descending=True).tolist()
        return [{"image": self.images[k, index], "weight": float(self.weights[k, index]),
                 "log_evidence": float(self.log_evidence[k, index])} for k in order if self.weights[k, index] > 0]


@dataclass
class Posterior:
    """Posterior draws for a batch of B corrupted images.

    Attributes:
        samples: posterior predictive draws of the clean images, (S, B, C, H, W) in [0, 1]
            (clamped): G(w) + r with the reach residual r when ``sigma_reach`` is set, else G(w).
            For MCMC the S draws are ordered chain by chain, ``num_chains`` chains of S / num_chains
            draws. ``mean``, ``std``, ``quantile`` and ``interval`` are of these.
        latents: site -> draws of each latent of the model: "w" (S, B, num_ws, w_dim) and, for
            the learned-noise model, "sigma_pixel" (S, B).
        num_chains: chains (1 for SVI).
        method: "svi", "nuts" or "hmc".
        map: the MAP reconstruction the inference started from.
        y, observed: the corrupted input and its observation mask (1 = observed).
        w_avg, w_std: the generator's prior statistics, for the w summaries.
        sample_stats: MCMC statistic -> (num_chains, draws): "diverging", "step_size", "n_steps",
            "tree_depth" (NUTS); empty for SVI.
        loss_trace: SVI's -ELBO per step (nats) of the guide of each mode, (modes, steps) over the images
            in turn; None for the Laplace mixture and MCMC.
        diagnostics: a JSON-able dict: timings and, for MCMC, acceptance rates, divergences,
            tree depths, R-hat and bulk ESS of the monitored scalars.
        settings: a JSON-able dict of everything that defined the run.
        conditional_means: E[x | y, w_s] = G(w_s) + E[r | y, w_s] of each draw, (S, B, C, H, W) in [0, 1]
            (``generator_samples`` without the reach): what ``mean`` averages.
        generator_samples: G(w) of each draw, (S, B, C, H, W) in [0, 1]; the same tensor as
            ``samples`` when the reach term is off.
        sigma_reach: std of the reach residual per clean pixel, None when off.
        task: the task family (``conformal.task_family`` of f), None for other corruptions.
        unpinned: True where the data cannot pin the clean pixel (``brgm_pyro.uncertainty.leverage``),
            (B, C, H, W) bool; None where it was not computed (no task family).
        calibration: the calibration ``interval`` and ``error_radius`` use by default, or None.
        calibration_note: one sentence saying which intervals these are and why.
        notes: sentences a user should read about how this posterior was made (a model chosen for
            a corruption without structure, ...).
        modes: the modes of the mixture (method "laplace"): each one's image, weight and log evidence;
            for SVI, NUTS and HMC, which run from the mode of highest density, that mode alone.
    """

    samples: torch.Tensor
    latents: dict[str, torch.Tensor]
    num_chains: int
    method: str
    map: ReconstructionResult
    y: torch.Tensor
    observed: torch.Tensor
    w_avg: torch.Tensor
    w_std: torch.Tensor
    sample_stats: dict[str, torch.Tensor] = field(default_factory=dict)
    loss_trace: torch.Tensor | None = None
    diagnostics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    generator_samples: torch.Tensor | None = None
    conditional_means: torch.Tensor | None = None
    sigma_reach: float | None = None
    task: str | None = None
    unpinned: torch.Tensor | None = None
    calibration: Calibration | None = None
    calibration_note: str = "The posterior's own intervals: no calibration was looked for."
    notes: tuple[str, ...] = ()
    modes: PosteriorModes | None = None

    def __post_init__(self) -> None:
        if self.generator_samples is None:
            self.generator_samples = self.samples
        if self.conditional_means is None:
            self.conditional_means = self.generator_samples if self.sigma_reach is None else self.samples

    @property
    def num_samples(self) -> int:
        return self.samples.shape[0]

    @property
    def w_samples(self) -> torch.Tensor:
        """Draws of w, (S, B, num_ws, w_dim)."""
        return self.latents["w"]

    @functools.cached_property
    def mean(self) -> torch.Tensor:
        """Per-pixel posterior mean E[x | y], (B, C, H, W): the mean over draws of E[x | y, w_s] = G(w_s) +
        E[r | y, w_s] (``conditional_means``), the same expectation as the mean of ``samples`` without the
        Monte Carlo noise of the reach residual's draws (Rao-Blackwell)."""
        return self.conditional_means.mean(0)


    @functools.cached_property
    def std(self) -> torch.Tensor:
        """Per-pixel posterior standard deviation, (B, C, H, W) (zero for a single draw)."""
        return self.samples.std(0, correction=1 if self.num_samples > 1 else 0)

    @functools.cached_property
    def _sorted(self) -> torch.Tensor:
        return self.samples.sort(dim=0).values

    def quantile(self, q: float) -> torch.Tensor:
        """Per-pixel q-quantile of the draws, (B, C, H, W), q in [0, 1]: the order statistic of rank
        q (S + 1), interpolated (``metrics.sorted_quantile``), the rule of the posterior's own
        :meth:`interval`, so ``interval(p, calibrated=False)`` is ``(quantile((1 - p) / 2),
        quantile((1 + p) / 2))``."""
        if not 0 <= q <= 1:
            raise InputError(f"The quantile q must lie in [0, 1], got {q!r}.")
        return sorted_quantile(self._sorted, q)

    def _calibrated(self, calibrated: bool | None) -> bool:
        if calibrated is None:
            return self.calibration is not None
        if calibrated and self.calibration is None:
            raise InputError(
                f"This posterior has no calibration to use: {self.calibration_note} Pass calibrated=False (or "
                "None) for the posterior's own interval, or calibrate the prior with `brgm calibrate`."
            )
        return bool(calibrated)

    def interval(self, level: float = 0.9, calibrated: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel interval of probability ``level``: (lower, upper), each (B, C, H, W).

        ``calibrated`` None (the default) gives the calibrated interval when the posterior has a
        calibration (``self.calibration``: the prior's card holds one for this task and posterior
        procedure), else the posterior's own; True insists on the calibrated one, False gives the
        posterior's own. The calibrated interval is mean -+ lambda std, with lambda measured on
        validation images per region kind (``brgm_pyro.uncertainty.conformal``: what it guarantees and when).
        The posterior's own interval is central, between the draws' order statistics of ranks
        (1 -+ level) / 2 (S + 1) (``metrics.credible_interval``), so that the interval of a
        calibrated posterior holds the truth with probability ``level`` whatever the number of draws
        S; beyond (S - 1) / (S + 1) (0.88 for 16 draws) it is [min, max].
        """
        if not 0 < level < 1:
            raise InputError(f"The credible level must lie strictly between 0 and 1, got {level!r}.")
        if self._calibrated(calibrated):
            return self.calibration.interval(self.mean, self.std, self.unpinned, level)
        return self.quantile((1 - level) / 2), self.quantile((1 + level) / 2)

    def error_radius(self, level: float = 0.9, calibrated: bool | None = None) -> torch.Tensor:
        """Per image, the radius r of the ball MSE(x, mean) <= r of probability ``level``: (B,).

        The posterior's own: the order statistic of rank level (S + 1) of the draws' MSE from the
        mean of the others (``metrics.mse_ball_radius``); calibrated (as for :meth:`interval`):
        the calibration's multiplier times the draws' mean MSE.
        """
        if not 0 < level < 1:
            raise InputError(f"The credible level must lie strictly between 0 and 1, got {level!r}.")
        if self._calibrated(calibrated):
            return self.calibration.image_radius(leave_one_out_mse(self.samples).mean(0), level)
        return mse_ball_radius(self.samples, (level,))[:, 0]

    def monitored_w(self) -> tuple[list[str], torch.Tensor]:
        """A few coordinates of w to monitor, as labels and draws (S, B, K) (``inference.diagnostics``)."""
        return monitored_w(self.w_samples)

    def w_layer_rms_z(self) -> torch.Tensor:
        """RMS over coordinates of (w_l - w_avg) / w_std for each w vector: (S, B, num_ws); about 1
        for a draw of the prior."""
        return layer_rms_z(self.w_samples, self.w_avg, self.w_std)

    def to_arviz(self, images: bool = False) -> Any:
        """An ``arviz.InferenceData`` of the draws (``inference.diagnostics.inference_data``): monitored w
        coordinates "w_monitored", "w_rms_z" per image and "w_layer_rms_z" per w vector, every other latent
        such as "sigma_pixel", and with ``images=True`` the draws of the clean image as "image";
        sample_stats for MCMC and observed_data y. Dimension "batch" indexes the images of the batch."""
        return inference_data(
            self.latents, self.num_chains, self.w_avg, self.w_std, self.y, self.sample_stats,
            images=self.samples if images else None,
            attrs={"method": self.method, "model": str(self.settings.get("model", ""))},
        )

    @functools.cached_property
    def inference_data(self) -> Any:
        """``to_arviz()``, computed once."""
        return self.to_arviz()

    def save_netcdf(self, path: str | Path, images: bool = True) -> Path:
        """Write ``to_arviz(images)`` as NetCDF (h5netcdf), atomically; returns the path."""
        path = Path(path)
        data = self.to_arviz(images=images)
        with atomic_path(path) as tmp:
            data.to_netcdf(str(tmp), engine="h5netcdf")
        return path

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary: settings, diagnostics, the intervals' calibration and, per image, the
        spread of the draws."""
        images = []
        rms_z = self.w_layer_rms_z().square().mean((0, 2)).sqrt()
        for i in range(self.samples.shape[1]):
            entry: dict[str, Any] = {
                "mean_std": float(self.std[i].mean()),
                "max_std": float(self.std[i].max()),
                "w_rms_z": float(rms_z[i]),
            }
            for name, value in self.latents.items():
                if name != "w" and value[:, i].numel() == self.num_samples:
                    entry[name] = {"mean": float(value[:, i].mean()), "std": float(value[:, i].std())}
            images.append(entry)
        return {
            "method": self.method,
            "num_samples": self.num_samples,
            "num_chains": self.num_chains,
            "settings": self.settings,
            "diagnostics": self.diagnostics,
            "intervals": {
                "task": self.task,
                "calibrated": self.calibration is not None,
                "note": self.calibration_note,
                "calibration": None if self.calibration is None else {
                    "images": self.calibration.images, "data": self.calibration.data,
                    "lambda_90": {region: [v if math.isfinite(v) else None for v in scales[0.9]] if 0.9 in scales
                                  else None for region, scales in self.calibration.scales.items()},
                    "cell_edges": {region: list(v) for region, v in self.calibration.edges.items()},
                },
            },
            "images": images,
        }
