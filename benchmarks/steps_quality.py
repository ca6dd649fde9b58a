"""Steps against quality: the authors' MAP schedule against the prior card's, fmnist-eval distance and PSNR by step count.

The authors' released code (brgm-pytorch) runs Adam at a constant learning rate 0.1 for 501 steps
from w_avg with its own loss weights (the "brgm-reference" preset of ``models/brgm.py``); the card
runs its tuned parameters with a warm-up and a cosine ramp-down over fewer steps. Each row is a
full run with that many steps (the card's ramps scale with its steps; the authors' constant rate
makes their run of k steps the first k steps of their 501), on validation images.

    python benchmarks/steps_quality.py --images 25 --tasks superres-x8,superres-x4,inpaint --out runs/steps
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import brgm_pyro as bp
from brgm_pyro import evaluation
from brgm_pyro.card import PriorCard
from brgm_pyro.fmnist import FMNISTEval

SETTINGS = {
    "superres-x8": lambda size: evaluation.superres_setting(8),
    "superres-x4": lambda size: evaluation.superres_setting(4),
    "inpaint": lambda size: evaluation.inpaint_setting(size=size),
}


def rows(G, authors_steps: list[int], card_steps: list[int]) -> list[evaluation.Method]:
    card = PriorCard.of(G).schedule
    methods = [evaluation.Method(f"authors-{k}", "brgm", {
        "params": "brgm-reference", "schedule": bp.MAPSchedule(steps=k, lr=0.1, rampup=0.0, rampdown=0.0)})
        for k in authors_steps]
    methods += [evaluation.Method(f"card-{k}", "brgm", {"schedule": replace(card, steps=k)}) for k in card_steps]
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--images", type=int, default=25, help="validation images (the first N)")
    parser.add_argument("--tasks", default="superres-x8,superres-x4,inpaint")
    parser.add_argument("--authors-steps", default="25,50,100,167,250,501")
    parser.add_argument("--card-steps", default="25,50,100,150,300")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("runs/steps"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    G = bp.load_generator(args.generator).requires_grad_(False)
    truth, labels, names = evaluation.split_images("val", range(args.images), G.resolution)
    methods = rows(G, [int(k) for k in args.authors_steps.split(",")], [int(k) for k in args.card_steps.split(",")])
    evaluator = FMNISTEval()
    for task in args.tasks.split(","):
        result = evaluation.evaluate(SETTINGS[task](G.resolution), methods, args.out / task, G, truth=truth,
                                     names=names, labels=labels, evaluator=evaluator, batch_size=args.batch_size,
                                     progress=not args.quiet)
        print(f"## {task}, {args.images} validation images\n")
        print("| schedule | steps | fmnist-eval distance | PSNR (dB) | class fidelity |\n|---|---|---|---|---|")
        for label, entry in result["table"].items():
            schedule, steps = label.rsplit("-", 1)
            row = entry["mean"]
            print(f"| {schedule} | {steps} | {row['fmnist_eval_distance']:.4f} | {row['psnr']:.2f} | "
                  f"{row['class_fidelity']:.2f} |")
        print()


if __name__ == "__main__":
    main()
