"""The BRGM paper's Fig. 4 on Fashion-MNIST: from StyleGAN2's projector to BRGM, one change at a time.

Rows, each adding one change to the one above (``brgm_pyro.baselines.projector``): (a) the projector
(one w, noise maps optimised with their regulariser, perceptual loss only, 1000 steps, noise on w);
(b) G's fixed noise instead; (c) W+ (one w per layer); (d) + the pixel likelihood; (e) + the prior
on w; (f) + the colinearity factor (kappa 0.5: the prior's card sets kappa 0, which measured no
different on the validation images, so (f) would repeat (e)); then BRGM as shipped (``bp.reconstruct``
with the card: the terms of (e), its own 150-step schedule, no noise on w). Tasks: super-resolution x8
(4x4 inputs) and inpainting with the seven mask kinds in turn. Writes, per task, ``ablation.md``,
``ablation.json`` and the figure ``ablation.png`` (input | a-f | brgm | truth) into the task's folder,
which may be the folder of the main comparison (the projector's outputs are then reused).

    python benchmarks/ablation.py --images 25 --out runs/test
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import brgm_pyro as bp
from brgm_pyro import evaluation
from brgm_pyro.card import PriorCard
from brgm_pyro.fmnist import FMNISTEval

COLINEAR_KAPPA = 0.5
STEPS = {
    "projector": {},
    "fixed-noise": {"optimise_noise": False},
    "w-plus": {"w_plus": True},
    "pixel": {"pixel": True},
    "prior": {"prior": True},
    "colinear": {"colinear": True},
}


def rows(G, steps: int | None, perceptual: str) -> list[evaluation.Method]:
    """The rows of Fig. 4: each step's options added to those above it, then BRGM as shipped."""
    params = PriorCard.of(G).params or bp.BRGMParams()
    options: dict = {} if steps is None else {"steps": steps}
    if perceptual != "auto":
        options["perceptual"] = perceptual
    methods = []
    for label, change in STEPS.items():
        options = {**options, **change}
        if label == "colinear":
            options["params"] = replace(params, kappa=COLINEAR_KAPPA)
        methods.append(evaluation.Method(label if label == "projector" else f"projector+{label}", "projector",
                                         dict(options)))
    shipped = {key: value for key, value in options.items() if key in ("steps", "perceptual")}
    methods.append(evaluation.Method("brgm", "brgm", shipped))
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--split", default="test", choices=("test", "val"))
    parser.add_argument("--images", type=int, default=25)
    parser.add_argument("--tasks", default="superres-x8,inpaint")
    parser.add_argument("--steps", type=int, default=None, help="steps of every row (default: each row's own)")
    parser.add_argument("--perceptual", default="auto", help="phi of every row (default: the card's)")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("runs/test"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    G = bp.load_generator(args.generator).requires_grad_(False)
    truth, labels, names = evaluation.split_images(args.split, range(args.images), G.resolution)
    settings = {"superres-x8": evaluation.superres_setting(8), "inpaint": evaluation.inpaint_setting(size=G.resolution)}
    for task in args.tasks.split(","):
        result = evaluation.evaluate(settings[task], rows(G, args.steps, args.perceptual), args.out / task, G, truth=truth,
                                     names=names, labels=labels, evaluator=FMNISTEval(), batch_size=args.batch_size,
                                     progress=not args.quiet, report="ablation")
        print(f"## {task}, {args.images} {args.split} images\n")
        print(evaluation.markdown_table(result["table"]))


if __name__ == "__main__":
    main()
