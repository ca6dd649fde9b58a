"""The draws as ArviZ sees them, and MCMC's convergence diagnostics: one home for both.

    inference_data(...)     an ``arviz.InferenceData``: monitored coordinates of w, the RMS z-score of
                            each w vector, every other latent (a sigma_pixel), MCMC's sample stats, y
    mcmc_diagnostics(...)   divergences, tree depths, R-hat and bulk ESS (ArviZ) of the monitored scalars

w has num_ws x w_dim coordinates; R-hat and ESS are computed on a few of them (the first two
coordinates of the first and last w vector) and on the RMS z-score (w - w_avg) / w_std per w vector
and per image, which is about 1 for a draw of the prior and moves with the spread of w.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pyro
import torch

__all__ = ["inference_data", "layer_rms_z", "mcmc_diagnostics", "monitored_w"]


def monitored_w(w: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """A few coordinates of the draws of w (S, B, num_ws, w_dim) to monitor: labels and draws (S, B, K),
    the first two coordinates of the first and of the last w vector."""
    num_ws, w_dim = w.shape[-2:]
    pairs = sorted({(layer, d) for layer in (0, num_ws - 1) for d in range(min(2, w_dim))})
    draws = torch.stack([w[..., layer, d] for layer, d in pairs], dim=-1)
    return [f"w[{layer},{d}]" for layer, d in pairs], draws


def layer_rms_z(w: torch.Tensor, w_avg: torch.Tensor, w_std: torch.Tensor) -> torch.Tensor:
    """RMS over coordinates of (w_l - w_avg) / w_std for each w vector: (S, B, num_ws)."""
    return ((w - w_avg) / w_std).square().mean(-1).sqrt()


def inference_data(
    latents: dict[str, torch.Tensor],
    num_chains: int,
    w_avg: torch.Tensor,
    w_std: torch.Tensor,
    y: torch.Tensor,
    sample_stats: dict[str, torch.Tensor] | None = None,
    images: torch.Tensor | None = None,
    attrs: dict[str, str] | None = None,
) -> Any:
    """An ``arviz.InferenceData`` of draws ``latents`` (site -> (S, B, ...), "w" among them), chain by
    chain: posterior "w_monitored", "w_rms_z" per image, "w_layer_rms_z" per w vector, every other
    latent, and ``images`` (S, B, C, H, W) as "image" if given; sample_stats; observed_data y.
    Dimension "batch" indexes the images of the batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az

    w = latents["w"]
    draws = w.shape[0] // num_chains

    def by_chain(t: torch.Tensor) -> Any:
        return t.reshape(num_chains, draws, *t.shape[1:]).double().numpy()

    labels, monitored = monitored_w(w)
    layer_rms = layer_rms_z(w, w_avg, w_std)
    posterior = {
        "w_monitored": by_chain(monitored),
        "w_rms_z": by_chain(layer_rms.square().mean(-1).sqrt()),
        "w_layer_rms_z": by_chain(layer_rms),
    }
    dims = {
        "w_monitored": ["batch", "coordinate"],
        "w_rms_z": ["batch"],
        "w_layer_rms_z": ["batch", "layer"],
        "y": ["batch", "channel", "y_row", "y_column"],
    }
    for name, value in latents.items():
        if name != "w":
            posterior[name] = by_chain(value)
            dims[name] = ["batch"] + [f"{name}_dim_{i}" for i in range(value.dim() - 2)]
    if images is not None:
        posterior["image"] = by_chain(images)
        dims["image"] = ["batch", "channel", "row", "column"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return az.from_dict(
            posterior=posterior,
            sample_stats={name: value.numpy() for name, value in (sample_stats or {}).items()} or None,
            observed_data={"y": y.double().numpy()},
            coords={"coordinate": labels},
            dims=dims,
            attrs={"inference_library": "pyro", "inference_library_version": pyro.__version__, **(attrs or {})},
        )


def mcmc_diagnostics(
    data: Any, sample_stats: dict[str, torch.Tensor], chain_seconds: list[float], max_tree_depth: int
) -> dict[str, Any]:
    """Divergences, tree depths, and R-hat and bulk ESS (ArviZ) of the monitored scalars of ``data`` (an
    InferenceData of :func:`inference_data`), with ESS per second of sampling."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        table = az.summary(data, kind="diagnostics", round_to="none")
    seconds = sum(chain_seconds) or float("nan")
    out: dict[str, Any] = {
        "divergences": int(sample_stats["diverging"].sum()),
        "divergence_fraction": float(sample_stats["diverging"].float().mean()),
        "mean_step_size": float(sample_stats["step_size"].mean()),
        "mean_n_steps": float(sample_stats["n_steps"].float().mean()),
        "sampling_s": seconds,
        "monitored": {
            label: {
                "r_hat": float(row["r_hat"]),
                "ess_bulk": float(row["ess_bulk"]),
                "ess_bulk_per_s": float(row["ess_bulk"]) / seconds,
            }
            for label, row in table.iterrows()
        },
    }
    if "tree_depth" in sample_stats:
        out["mean_tree_depth"] = float(sample_stats["tree_depth"].float().mean())
        out["max_tree_depth_fraction"] = float((sample_stats["tree_depth"] >= max_tree_depth).float().mean())
    r_hats = [v["r_hat"] for v in out["monitored"].values() if math.isfinite(v["r_hat"])]
    out["max_r_hat"] = max(r_hats) if r_hats else float("nan")
    out["min_ess_bulk"] = min(v["ess_bulk"] for v in out["monitored"].values())
    return out
