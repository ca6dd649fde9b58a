"""The prior's card read in one place: the reconstruction defaults a registered prior ships with.

A registered prior's card (``brgm_pyro/priors/NAME.json``, set as ``G.card`` by the checkpoint
loader) records, besides its provenance, the settings that measured best on its validation images.
``PriorCard.of(G)`` reads them once; a generator without a card (random weights, a foreign
checkpoint) gets the library's defaults:

    card = PriorCard.of(G)
    card.params        BRGMParams of the "default" preset (with the card's sigma_reach), or None
                       (the library's BRGMParams())
    card.schedule      the MAP's Adam schedule (MAPSchedule() without a card)
    card.perceptual    the feature network of perceptual="auto" (None: the pixel likelihood alone)
    card.sigma_reach   std of the prior's reach residual per clean pixel, or None (no reach term)
    card.calibrations  task -> the interval calibration measured on its validation images
                       (``brgm_pyro.uncertainty.conformal``; ``brgm calibrate`` writes them)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.models.brgm import BRGMParams
from brgm_pyro.uncertainty.conformal import Calibration, read_calibrations

__all__ = ["PriorCard"]


@dataclass(frozen=True)
class PriorCard:
    """The reconstruction defaults of a prior's card (module notes)."""

    params: BRGMParams | None = None
    schedule: MAPSchedule = field(default_factory=MAPSchedule)
    perceptual: str | None = None
    sigma_reach: float | None = None
    calibrations: dict[str, Calibration] = field(default_factory=dict)

    @classmethod
    def of(cls, generator: nn.Module) -> PriorCard:
        """The card of ``generator`` (its ``card`` dict, if it has one)."""
        card: dict[str, Any] = getattr(generator, "card", None) or {}
        params = card.get("params")
        sigma_reach = card.get("sigma_reach")
        return cls(
            # The reach is the prior's, so its default parameters carry it (the "reach" model uses it).
            params=BRGMParams(**params, sigma_reach=float(sigma_reach or 0.0)) if params else None,
            schedule=MAPSchedule(**(card.get("schedule") or {})),
            perceptual=card.get("perceptual"),
            sigma_reach=float(sigma_reach) if sigma_reach else None,
            calibrations=read_calibrations(card),
        )
