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

import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from brgm_pyro.errors import InputError
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
        """The card of ``generator`` (its ``card`` dict, if it has one); an :class:`InputError` naming the entry
        for a card whose defaults do not read (a card edited by hand, or damaged)."""
        card: Any = getattr(generator, "card", None) or {}
        if not isinstance(card, dict):
            raise InputError(f"The prior's card is a JSON {type(card).__name__}, not an object; restore the card shipped with it.")
        entry = "params"
        try:
            params = card.get("params")
            sigma_reach = card.get("sigma_reach")
            # The reach is the prior's, so its default parameters carry it (the "reach" model uses it).
            params = BRGMParams(**params, sigma_reach=float(sigma_reach or 0.0)) if params else None
            entry = "schedule"
            schedule = MAPSchedule(**(card.get("schedule") or {}))
            entry = "sigma_reach"
            sigma_reach = float(sigma_reach) if sigma_reach else None
            if sigma_reach is not None and not 0 < sigma_reach < math.inf:
                raise ValueError(f"{sigma_reach} is not a positive number")
            entry = "perceptual"
            perceptual = card.get("perceptual")
            if perceptual is not None and not isinstance(perceptual, str):
                raise TypeError("it names no network")
            entry = "calibration"
            calibrations = read_calibrations(card)
        except InputError as err:
            raise InputError(f"The prior card's {entry!r} entry does not read: {err}") from None
        except (TypeError, ValueError, OverflowError) as err:
            raise InputError(
                f"The prior card's {entry!r} entry does not read ({type(err).__name__}: {err}); restore the card "
                "shipped with the prior."
            ) from None
        return cls(params=params, schedule=schedule, perceptual=perceptual, sigma_reach=sigma_reach,
                   calibrations=calibrations)
