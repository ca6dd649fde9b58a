"""What closes the gap between BRGM and a supervised network at low resolution, measured on the validation split.

Each variant changes one thing of ``bp.reconstruct`` with the prior's defaults (its card): the
posterior mean instead of the MAP, the single start from w_avg instead of the mode search, fewer or
more modes refined by the search, the pixel noise
level and the learned-noise likelihood, the perceptual term, the schedule, the prior, and (inpainting)
y kept on the observed pixels. The task "reach" observes the whole image (f = Identity): G's best fit
of the truth, the ceiling of every reconstruction with this prior. All run through
``brgm_pyro.evaluation`` on the same validation images (never the test split), next to the
supervised network and PULSE, and the script prints one table per task.

    python benchmarks/close_the_gap.py --images 20 --tasks superres-x8,superres-x4 --out runs/gap
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import brgm_pyro as bp
from brgm_pyro import baselines, evaluation
from brgm_pyro.card import PriorCard
from brgm_pyro.fmnist import FMNISTEval
from brgm_pyro.forward import Identity
from brgm_pyro.models import learned_noise
from brgm_pyro.search import SearchSettings

TASKS = {
    "superres-x8": lambda size: evaluation.superres_setting(8),
    "superres-x4": lambda size: evaluation.superres_setting(4),
    "superres-x2": lambda size: evaluation.superres_setting(2),
    "inpaint": lambda size: evaluation.inpaint_setting(size=size),
    # the prior's ceiling: G's best fit of the whole image, which no corruption can improve on
    "reach": lambda size: evaluation.Setting("superres", "Identity (the whole image observed)", lambda names: Identity()),
}


def variants(G, other_prior, steps: int | None) -> list[evaluation.Method]:
    """The rows: the defaults, then one change each."""
    card = PriorCard.of(G)
    schedule = card.schedule if steps is None else replace(card.schedule, steps=steps)
    params = card.params or bp.BRGMParams()
    common = {"schedule": schedule}
    rows = [
        evaluation.Method("brgm", "brgm", common),
        evaluation.Method("brgm-mean", "brgm-mean", {"map_schedule": schedule}),
        evaluation.Method("brgm-mean-no-reach", "brgm-mean", {"map_schedule": schedule, "sigma_reach": None}),
        evaluation.Method("brgm-mean-fixed-noise", "brgm-mean",
                          {"map_schedule": schedule, "sigma_reach": None, "model": "brgm"}),
        evaluation.Method("brgm-single-start", "brgm", {**common, "search": None}),
        evaluation.Method("brgm-2-modes", "brgm", {**common, "search": SearchSettings(modes=2)}),
        evaluation.Method("brgm-8-modes", "brgm", {**common, "search": SearchSettings(modes=8)}),
        evaluation.Method("brgm-2x-steps", "brgm", {"schedule": replace(schedule, steps=2 * schedule.steps)}),
        evaluation.Method("brgm-learned-noise", "brgm", {**common, "model": learned_noise.model}),
        evaluation.Method("brgm-no-percept", "brgm", {**common, "perceptual": None}),
        evaluation.Method("brgm-keep-observed", "brgm", {**common, "keep_observed": True}),
    ]
    for sigma_pixel in (0.02, 0.05):
        rows.append(evaluation.Method(f"brgm-sigma-pixel-{sigma_pixel}", "brgm",
                                      {**common, "params": replace(params, sigma_pixel=sigma_pixel)}))
    rows.append(evaluation.Method("brgm-sigma-percept-0.1", "brgm",
                                  {**common, "params": replace(params, sigma_percept=0.1)}))
    if other_prior is not None:
        rows.append(evaluation.Method(f"brgm-{other_prior.name}", "brgm", common, generator=other_prior))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--other-prior", default="fashion-mnist-32-pl-748kimg", help="a prior to compare ('none': skip)")
    parser.add_argument("--images", type=int, default=20, help="validation images (the first N)")
    parser.add_argument("--tasks", default="superres-x8,superres-x4")
    parser.add_argument("--steps", type=int, default=None, help="MAP steps (default: the card's)")
    parser.add_argument("--competitors", default="supervised,pulse", help="other methods to run ('' for none)")
    parser.add_argument("--only", default=None, help="run only these variant labels (comma-separated)")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("runs/gap"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    G = bp.load_generator(args.generator).requires_grad_(False)
    other = None if args.other_prior == "none" else bp.load_generator(args.other_prior).requires_grad_(False)
    truth, labels, names = evaluation.split_images("val", range(args.images), G.resolution)
    evaluator = FMNISTEval()
    for task in args.tasks.split(","):
        setting = TASKS[task](G.resolution)
        rows = [evaluation.Method(name, name) for name in args.competitors.split(",") if name
                if setting.task in baselines.tasks(name)]
        rows += variants(G, other, args.steps)
        if args.only:
            keep = set(args.only.split(","))
            rows = [row for row in rows if row.label in keep]
        result = evaluation.evaluate(setting, rows, args.out / task, G, truth=truth, names=names, labels=labels,
                                     evaluator=evaluator, batch_size=args.batch_size, progress=not args.quiet)
        print(f"## {task}: {setting.description}, {args.images} validation images\n")
        print(evaluation.markdown_table(result["table"]))


if __name__ == "__main__":
    main()
