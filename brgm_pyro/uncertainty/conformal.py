"""Distribution-free recalibration of the posterior's intervals on validation images (conformal risk control).

The posterior's own intervals are only as right as the model: where the prior cannot reach the
truth or the approximation is too narrow they cover less than they claim, and nothing inside the
model says by how much. Calibration measures it on validation images whose truth is known and
widens (or narrows) the intervals until they hold what they claim there.

**The calibrated interval.** For a pixel with posterior mean m and std s (of the predictive draws),
the calibrated interval of level p is

    [m - lambda_p(k, c) s, m + lambda_p(k, c) s]  (clipped to [0, 1])

with one multiplier per level p, per region kind k and, optionally, per cell c of the posterior mean.
The region kinds are the pixels the data pin and those they cannot (``brgm_pyro.uncertainty.leverage``: the
observed pixels and the hole of an inpainting; every pixel of a super-resolution is unpinned). The std
map keeps ranking the pixels; only the scale is calibrated.

**Cells of the mean** (``fit(..., cells=3)``; default ``CELLS`` = 1, one cell per region): each region
is cut into cells by m, at the quantiles of m over the calibration images' pixels of that region
(``Calibration.edges``), each cell calibrated alone. How far the truth strays in units of s depends
on what the pixel shows: on Fashion-MNIST test posteriors the 90% quantile of |x - m| / s in the hole
is about 0.9 in the darkest third (background) and 2.7-3.8 elsewhere. The cells depend on the
posterior alone, never on the truth. They are not the default because, measured (leave-one-out on
the validation posteriors, and on 50 test images per task), three cells over-cover the box holes
(0.937 against 0.899 with one cell) and leave free-form holes where they were (0.956): with fewer of an
image's pixels in each cell, the per-image losses are noisier and the risk control more conservative
(docs/results/calibration.md).

**How lambda is chosen: conformal risk control** (Angelopoulos, Bates, Fisch, Lei and Schuster,
*Conformal Risk Control*, ICLR 2024; for images, Angelopoulos et al., *Image-to-Image Regression
with Distribution-Free Uncertainty Quantification*, ICML 2022). On each of n calibration images j
the loss L_j(lambda) is the fraction of its pixels of cell (k, c) whose truth lies outside the
interval, a non-increasing function of lambda bounded by 1. lambda_p is the smallest lambda with

    n / (n + 1) * mean_j L_j(lambda) + 1 / (n + 1) <= 1 - p,

i.e. the empirical risk with the **finite-sample correction** for n images (the +1 stands for the
unseen image, whose loss can be as large as 1); n counts the images with pixels in the cell. The
correction makes the expected coverage lie between p and about p + 2 / (n + 1): at 90%, about 0.945
for n = 20 and 0.92 for n = 45, so a calibration on few images over-covers.

**The guarantee.** If the new image (its truth, its corruption and its posterior) and the n
calibration images are **exchangeable** (drawn alike from one distribution), then the expected
fraction of its pixels of cell (k, c) inside the calibrated interval is at least p, over the draw of
the calibration images and of the new image:  E[coverage] >= p. (Strictly, this holds given the cell
edges; they are terciles of the calibration posteriors' means, which moves the guarantee by an amount
that vanishes as the calibration pixels grow in number; edges from other images make it exact.) It is not per pixel, not per
image (one image may be covered worse, another better), and nothing is assumed about the model
or the sampler. When the scores have no ties the expected coverage is also at most
p + 2 / (n + 1). It says nothing once exchangeability fails: images of another kind (another
data set, a brighter exposure), another task or mask distribution, another noise level, or a
posterior computed otherwise (another prior, model, method, or fewer draws) than the calibration
images had. Calibrated on one distribution and used on another, the intervals can cover far less
than p (``tests/test_conformal.py`` shows both). A calibration therefore records the prior's
fingerprint, the task and the posterior's settings, and applies only where they match.

**Image level.** For the whole image the posterior's ball of level p is {x : MSE(x, m) <= r_p}.
The score of a calibration image is t_j = MSE(x_j, m_j) / E_post MSE, its true squared error over
the posterior's expected one (the mean over draws of MSE(x_s, m_-s), ``metrics.image_level_coverage``).
Split conformal prediction takes q_p, the ceil((n + 1) p)-th smallest t_j, and r_p = q_p E_post MSE:
then P(MSE(x, m) <= r_p) >= p for an exchangeable new image (and <= p + 1 / (n + 1) without ties).

    calibration = fit(scores, task="inpaint", ...)     # scores: image_scores(...) of validation images
    lower, upper = calibration.interval(mean, std, unpinned, 0.9)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brgm_pyro.errors import InputError
from brgm_pyro.io import atomic_path, read_json
from brgm_pyro.metrics import leave_one_out_mse

__all__ = [
    "CARD_KEY",
    "CELLS",
    "LEVELS",
    "REGIONS",
    "Calibration",
    "ImageScores",
    "conformal_quantile",
    "fingerprint",
    "fit",
    "image_scores",
    "load_calibrations",
    "procedure",
    "read_calibrations",
    "risk_controlling_scale",
    "save_calibration",
]

LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))
"""The levels a calibration holds multipliers for: 0.05, 0.10, ..., 0.95."""
REGIONS = ("unpinned", "pinned")
CELLS = 1
"""Cells of the posterior mean per region kind in a calibration by default, each with its own multipliers (module notes)."""
SETTINGS = ("method", "guide", "model", "sigma_reach", "params", "perceptual", "map_schedule", "search")
"""The posterior settings a calibration is valid for (all must match), besides its minimum number of draws."""
CARD_KEY = "calibration"
"""Where a card (or a calibration file) keeps its calibrations: task -> record."""


def procedure(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings of ``Posterior.settings`` that a calibration must share with a posterior (``SETTINGS``)."""
    chosen = {name: settings.get(name) for name in SETTINGS}
    chosen["guide"] = (settings.get("inference") or {}).get("guide") if settings.get("method") == "svi" else None
    return chosen


def fingerprint(G: nn.Module) -> str:
    """A short hash of the generator's weights and buffers: a calibration holds only for these."""
    digest = hashlib.sha256()
    for name, tensor in sorted(G.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class ImageScores:
    """One calibration image's scores: |x - m| / s of its pixels per region kind (empty when the
    region is), its image-level score t = MSE(x, m) / E_post MSE, and the posterior mean m of the
    same pixels (which cell of the region each pixel is in)."""

    pixels: dict[str, torch.Tensor]
    image: float
    means: dict[str, torch.Tensor]


def image_scores(
    samples: torch.Tensor, truth: torch.Tensor, unpinned: torch.Tensor, scale: torch.Tensor | None = None
) -> ImageScores:
    """Scores of one image from its posterior draws (S, C, H, W), truth (C, H, W) and unpinned mask (C, H, W).

    The pixel scores are |x - m| / s with s the draws' std, or ``scale`` instead of s (ones give the
    scores of a constant-width interval, the comparison the std map must beat). A pixel whose s is
    0 scores 0 if the truth equals m and infinity otherwise: no multiplier widens a zero-width interval.
    """
    if samples.dim() != 4 or samples.shape[0] < 2 or samples.shape[1:] != truth.shape:
        raise InputError(
            f"image_scores needs draws (S, C, H, W) with S >= 2 and a truth (C, H, W) of their image shape, got "
            f"{tuple(samples.shape)} and {tuple(truth.shape)}."
        )
    mean = samples.mean(0)
    std = samples.std(0) if scale is None else scale.expand_as(mean)
    error = (truth - mean).abs()
    ratio = torch.where(std > 0, error / std.clamp_min(torch.finfo(std.dtype).tiny),
                        torch.where(error > 0, torch.inf, 0.0))
    unpinned = unpinned.bool().expand_as(truth)
    expected = float(leave_one_out_mse(samples[:, None]).mean())
    return ImageScores(
        pixels={"unpinned": ratio[unpinned], "pinned": ratio[~unpinned]},
        image=float(error.square().mean()) / max(expected, torch.finfo(torch.float32).tiny),
        means={"unpinned": mean[unpinned], "pinned": mean[~unpinned]},
    )


def risk_controlling_scale(scores: Sequence[torch.Tensor], level: float) -> float:
    """The smallest lambda >= 0 whose corrected risk n/(n+1) mean_j L_j(lambda) + 1/(n+1) is at most 1 - level.

    ``scores`` holds one 1-D tensor per calibration image (its region's pixel scores); L_j(lambda)
    is the fraction of them above lambda. Returns ``inf`` when no lambda reaches the level (too few
    images for it, or too many pixels that no finite lambda covers).
    """
    if not 0 < level < 1:
        raise InputError(f"The calibration level must lie strictly between 0 and 1, got {level!r}.")
    scores = [s.flatten().double() for s in scores if s.numel()]
    n = len(scores)
    # Rounding (e.g. 10 * 0.1 - 1 = -5.6e-17) must not decide whether the target is reached.
    target = ((n + 1) * (1 - level) - 1) / n if n else -1.0
    if target < -1e-12:
        return math.inf
    values = torch.cat(scores)
    weights = torch.cat([torch.full_like(s, 1 / (n * s.numel())) for s in scores])
    unique, inverse = torch.unique(values, return_inverse=True)  # ascending
    weight = torch.zeros_like(unique).scatter_add_(0, inverse, weights)
    above = weight.sum() - weight.cumsum(0)  # risk at lambda = unique[m]: the weight of scores above it
    feasible = (above <= target + 1e-12).nonzero()
    return float(unique[int(feasible[0])]) if len(feasible) else math.inf


def conformal_quantile(scores: Sequence[float], level: float) -> float:
    """Split conformal: the ceil((n + 1) level)-th smallest score (inf when that rank exceeds n)."""
    if not 0 < level < 1:
        raise InputError(f"The calibration level must lie strictly between 0 and 1, got {level!r}.")
    rank = math.ceil((len(scores) + 1) * level)
    return sorted(scores)[rank - 1] if rank <= len(scores) else math.inf


@dataclass
class Calibration:
    """Interval multipliers for one prior, task family and posterior procedure (module notes).

    Attributes:
        task: the task family (``f.task`` of the operator: "inpaint", "superres-x4", ...).
        prior: the prior's :func:`fingerprint`.
        settings: the posterior settings it holds for (``SETTINGS``), as ``Posterior.settings`` records them.
        min_samples: the fewest posterior draws it holds for (the number it was made with; more
            draws estimate m and s better, so the guarantee carries over, fewer do not).
        images: n, the calibration images.
        scales: region kind -> level -> lambda per cell of the posterior mean, lowest m first
            (``inf``: the level is out of reach of the cell's images).
        image_scales: level -> q, the image-level multiplier of E_post MSE.
        data: what the calibration images were, in words.
        edges: region kind -> the values of m between its cells (one cell where absent).
    """

    task: str
    prior: str
    settings: dict[str, Any]
    min_samples: int
    images: int
    scales: dict[str, dict[float, tuple[float, ...]]]
    image_scales: dict[float, float]
    data: str = ""
    notes: dict[str, Any] = field(default_factory=dict)
    edges: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def _check_level(self, level: float) -> float:
        if not 0 < level < 1:
            raise InputError(f"The credible level must lie strictly between 0 and 1, got {level!r}.")
        for known in self.image_scales:
            if abs(known - level) < 1e-9:
                return known
        raise InputError(
            f"The calibration for {self.task} holds levels {', '.join(f'{p:g}' for p in self.image_scales)}, "
            f"not {level!r}; pass one of them, or calibrated=False for the posterior's own interval."
        )

    def scale(self, region: str, level: float) -> tuple[float, ...]:
        """lambda of ``region`` ("unpinned" or "pinned") at ``level``, one per cell of the posterior mean."""
        return self.scales[region][self._check_level(level)]

    def cell(self, mean: torch.Tensor, region: str) -> torch.Tensor:
        """The cell of the posterior mean each pixel of ``mean`` falls in for ``region`` (0 with one cell)."""
        return torch.bucketize(mean, torch.tensor(self.edges.get(region, ()), dtype=mean.dtype, device=mean.device))

    def multiplier(self, mean: torch.Tensor, unpinned: torch.Tensor, level: float) -> torch.Tensor:
        """lambda_p of every pixel, of mean's shape: by its region kind and the cell its posterior mean is in."""
        level = self._check_level(level)
        unpinned = unpinned.bool().expand_as(mean)
        out = torch.empty_like(mean)
        for region, where in (("unpinned", unpinned), ("pinned", ~unpinned)):
            values = torch.tensor(self.scales[region][level], dtype=mean.dtype, device=mean.device)
            out = torch.where(where, values[self.cell(mean, region)], out)
        return out

    def interval(
        self, mean: torch.Tensor, std: torch.Tensor, unpinned: torch.Tensor, level: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The calibrated interval of ``level``: (lower, upper), each of mean's shape, within [0, 1]."""
        multiplier = self.multiplier(mean, unpinned, level)
        half = torch.where(multiplier.isinf(), torch.ones_like(std), multiplier * std)
        return (mean - half).clamp(0.0, 1.0), (mean + half).clamp(0.0, 1.0)

    def image_radius(self, expected_mse: torch.Tensor, level: float) -> torch.Tensor:
        """The calibrated MSE radius around the mean of ``level``: q_p times E_post MSE, per image."""
        return self.image_scales[self._check_level(level)] * expected_mse

    def check(self, task: str | None, prior: str, settings: dict[str, Any], num_samples: int) -> str | None:
        """Why this calibration does not hold for a posterior of ``task``, ``prior`` and
        ``settings`` (``Posterior.settings``) with ``num_samples`` draws: a clause, or None when it holds."""
        if task != self.task:
            return f"it is for the task {self.task}, and this posterior's task is {task or 'not a calibrated kind'}"
        if prior != self.prior:
            return f"it is for another prior (fingerprint {self.prior}, this one {prior})"
        settings = procedure(settings)
        differ = [name for name in SETTINGS if _jsonable(settings.get(name)) != _jsonable(self.settings.get(name))]
        if differ:
            return "it is for other posterior settings (" + ", ".join(
                f"{name} {self.settings.get(name)!r} instead of {settings.get(name)!r}" for name in differ) + ")"
        if num_samples < self.min_samples:
            return f"it is for at least {self.min_samples} draws, and this posterior has {num_samples}"
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (levels as strings, unreachable levels as null), as the prior's card stores it."""
        out = asdict(self)
        out["scales"] = {k: {f"{p:g}": [_finite(v) for v in cells] for p, cells in d.items()}
                         for k, d in self.scales.items()}
        out["edges"] = {k: list(v) for k, v in self.edges.items()}
        out["image_scales"] = {f"{p:g}": _finite(v) for p, v in self.image_scales.items()}
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Calibration:
        try:
            # A record of one multiplier per region (no cells) reads as one cell.
            scales = {k: {float(p): tuple(_infinite(v) for v in (cells if isinstance(cells, list) else [cells]))
                          for p, cells in d.items()} for k, d in values["scales"].items()}
            image_scales = {float(p): _infinite(v) for p, v in values["image_scales"].items()}
            edges = {k: tuple(float(v) for v in e) for k, e in (values.get("edges") or {}).items()}
            for region, by_level in scales.items():
                if any(len(cells) != len(edges.get(region, ())) + 1 for cells in by_level.values()):
                    raise ValueError(f"the {region} multipliers do not match its {len(edges.get(region, ()))} cell edges")
            multipliers = [v for d in scales.values() for cells in d.values() for v in cells] + list(image_scales.values())
            levels = [p for d in scales.values() for p in d] + list(image_scales)
            if not all(v > 0 for v in multipliers) or not all(0 < p < 1 for p in levels):
                raise ValueError("a multiplier is not positive or a level is not between 0 and 1")
            if not (isinstance(values["task"], str) and isinstance(values["prior"], str)):
                raise TypeError("its task and prior are not text")
            return cls(task=values["task"], prior=values["prior"], settings=dict(values["settings"]),
                       min_samples=int(values["min_samples"]), images=int(values["images"]), scales=scales,
                       image_scales=image_scales, data=values.get("data", ""), notes=dict(values.get("notes", {})),
                       edges=edges)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            raise InputError(
                f"This is not a calibration record ({type(err).__name__}: {err}); make one with `brgm calibrate`."
            ) from None


def _finite(value: float) -> float | None:
    return None if math.isinf(value) else value


def _infinite(value: float | None) -> float:
    return math.inf if value is None else float(value)


def _jsonable(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists), for comparing settings."""
    return json.loads(json.dumps(value, sort_keys=True))


def read_calibrations(card: dict[str, Any]) -> dict[str, Calibration]:
    """The calibrations a card (or a calibration file's dict) holds, by task."""
    records = card.get(CARD_KEY) or {}
    if not isinstance(records, dict):
        raise InputError(f"The card's {CARD_KEY!r} entry must map tasks to calibration records; make it with `brgm calibrate`.")
    return {task: Calibration.from_dict(record) for task, record in records.items()}


def load_calibrations(path: str | Path) -> dict[str, Calibration]:
    """The calibrations in a JSON file written by ``brgm calibrate`` (or a prior's card), by task."""
    path = Path(path)
    card = read_json(path, "calibration file", "give the file `brgm calibrate` wrote.")
    if not isinstance(card, dict) or CARD_KEY not in card:
        raise InputError(f"{path} holds no {CARD_KEY!r} entry; give the file `brgm calibrate` wrote, or a prior's card.")
    return read_calibrations(card)


def save_calibration(path: str | Path, calibration: Calibration, replace: bool = False) -> Path:
    """Add ``calibration`` to the JSON file at ``path`` (a prior's card or a calibration file), atomically.

    Everything else in the file is kept; a new file holds only the calibration. A calibration of
    the same task already there is replaced only with ``replace=True``.
    """
    path = Path(path)
    card: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    records = dict(card.get(CARD_KEY) or {})
    if calibration.task in records and not replace:
        raise InputError(
            f"{path} already holds a calibration for {calibration.task}; pass replace=True (--replace) to replace it, "
            "or write to another file."
        )
    records[calibration.task] = calibration.to_dict()
    card[CARD_KEY] = dict(sorted(records.items()))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    return path


def fit(
    scores: Sequence[ImageScores],
    task: str,
    prior: str,
    settings: dict[str, Any],
    num_samples: int,
    levels: Sequence[float] = LEVELS,
    data: str = "",
    cells: int = CELLS,
) -> Calibration:
    """A :class:`Calibration` from the scores of n validation images (:func:`image_scores`): per region kind,
    ``cells`` cells of the posterior mean at the quantiles of its calibration pixels, each calibrated alone."""
    if not scores:
        raise InputError("A calibration needs at least one validation image; give the images to calibrate on.")
    if cells < 1:
        raise InputError(f"A calibration needs at least one cell per region, got cells={cells!r}.")
    edges, scales = {}, {}
    for region in REGIONS:
        means = torch.cat([s.means[region].flatten().double() for s in scores])
        if means.numel() and cells > 1:
            cuts = torch.arange(1, cells, dtype=torch.float64) / cells
            edges[region] = tuple(float(v) for v in torch.quantile(means, cuts))
        bounds = torch.tensor(edges.get(region, ()), dtype=torch.float64)
        cell_of = [torch.bucketize(s.means[region].flatten().double(), bounds) for s in scores]
        scales[region] = {
            p: tuple(risk_controlling_scale([s.pixels[region].flatten()[c == k] for s, c in zip(scores, cell_of)], p)
                     for k in range(len(bounds) + 1))
            for p in levels
        }
    return Calibration(
        task=task, prior=prior, settings=_jsonable(procedure(settings)),
        min_samples=num_samples, images=len(scores), data=data, scales=scales, edges=edges,
        image_scales={p: conformal_quantile([s.image for s in scores], p) for p in levels},
    )
