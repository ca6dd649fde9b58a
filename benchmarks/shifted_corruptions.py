"""Shifted corruptions: inputs made with a corruption the supervised networks were not trained on, and BRGM told
the wrong model, the true one, or the true one with the blur width unknown.

The corruption: a Gaussian blur of width sigma_b (pixels), box downsampling x4 (32 -> 8), added noise
of std 0.03 (the supervised x4 network saw bicubic downsampling without noise). Rows:

    supervised             the shipped x4 network, run on these inputs (allow_mismatch=True)
    brgm-told-bicubic      bp.reconstruct told the plain x4 bicubic model (the card's settings)
    brgm-told-truth        told the true f (blur sigma_b, box x4) and the true noise level, sigma_pixel 0.03
    brgm-unknown-blur      told box x4 and the noise, the width unknown: models/unknown_blur.py, a
                           LogNormal prior of median --prior-sigma and log-spread --prior-spread, MAP
    brgm-mean-unknown-blur its posterior mean (bp.sample_posterior, the unknown-blur model)

For each true width in --widths, the rows run on the same images, and the recovered width (the MAP's
sigma_b, and the posterior mean of sigma_b) is compared with the true one per image: the median of
|sigma_hat / sigma_b - 1|.

    python benchmarks/shifted_corruptions.py --widths 0.5,1,1.5,2,3 --images 25 --out runs/shifted
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

import brgm_pyro as bp
from brgm_pyro import evaluation, io
from brgm_pyro.card import PriorCard
from brgm_pyro.fmnist import FMNISTEval
from brgm_pyro.forward import Downsample
from brgm_pyro.models import unknown_blur

NOISE = 0.03
FACTOR = 4


def rows(G, prior_sigma: float, prior_spread: float, posterior: bool, steps: int | None) -> list[evaluation.Method]:
    """The rows; ``steps`` overrides the MAP's steps of every BRGM row (default: the card's)."""
    params = replace(PriorCard.of(G).params or bp.BRGMParams(), sigma_pixel=NOISE)
    box = Downsample(FACTOR, "box")
    unknown = unknown_blur.UnknownBlur(box, sigma=prior_sigma, spread=prior_spread)
    fewer = {} if steps is None else {"steps": steps}
    methods = [
        evaluation.Method("supervised", "supervised", {"allow_mismatch": True}),
        evaluation.Method("brgm-told-bicubic", "brgm", dict(fewer), told=Downsample(FACTOR, "bicubic")),
        evaluation.Method("brgm-told-truth", "brgm", {**fewer, "params": params}),
        evaluation.Method("brgm-unknown-blur", "brgm", {**fewer, "params": params, "model": unknown_blur.model},
                          told=unknown),
    ]
    if posterior:
        schedule = {} if steps is None else {"map_schedule": bp.MAPSchedule(steps=steps)}
        methods.append(evaluation.Method("brgm-mean-unknown-blur", "brgm-mean",
                                         {**schedule, "params": params, "model": "unknown-blur"},
                                         told=unknown))
    return methods


def recovered(result: dict, label: str, width: float) -> dict[str, float]:
    """The median relative error of the recovered widths of a row, and their median, over the images."""
    folder = Path(result["out"]) / label
    values = [json.loads((folder / f"{name}.json").read_text())["details"]["sigma_b"] for name in result["names"]]
    errors = [abs(value / width - 1) for value in values]
    return {"median_sigma_b": statistics.median(values), "median_relative_error": statistics.median(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--split", default="test", choices=("test", "val"))
    parser.add_argument("--widths", default="0.5,1,1.5,2,3", help="true blur widths sigma_b (pixels)")
    parser.add_argument("--images", type=int, default=25)
    parser.add_argument("--prior-sigma", type=float, default=1.5, help="median of the width's prior")
    parser.add_argument("--prior-spread", type=float, default=0.5, help="std of log sigma_b under the prior")
    parser.add_argument("--posterior", action="store_true", help="also the posterior mean of the unknown-blur model")
    parser.add_argument("--competitors", default="supervised", help="'' to leave the supervised network out")
    parser.add_argument("--steps", type=int, default=None, help="MAP steps of the BRGM rows (default: the card's)")
    parser.add_argument("--rows", default="", help="comma-separated labels of the rows to run (default: all); "
                        "the other rows' outputs already in --out are kept and tabled")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("runs/shifted"))
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    G = bp.load_generator(args.generator).requires_grad_(False)
    truth, labels, names = evaluation.split_images(args.split, range(args.images), G.resolution)
    evaluator = FMNISTEval()
    summary = {}
    for width in (float(w) for w in args.widths.split(",")):
        setting = evaluation.superres_setting(FACTOR, "box", blur=width, noise=NOISE)
        methods = [m for m in rows(G, args.prior_sigma, args.prior_spread, args.posterior, args.steps)
                   if (m.label != "supervised" or "supervised" in args.competitors.split(","))
                   and (not args.rows or m.label in args.rows.split(","))]
        out = args.out / f"blur-{width:g}"
        result = evaluation.evaluate(setting, methods, out, G, truth=truth, names=names, labels=labels,
                                     evaluator=evaluator, batch_size=args.batch_size, progress=not args.quiet)
        result["out"] = str(out)
        summary[width] = {label: recovered(result, label, width)
                          for label in ("brgm-unknown-blur", "brgm-mean-unknown-blur") if label in result["table"]}
        print(f"## sigma_b = {width:g}: {setting.description}, noise {NOISE}, {args.images} {args.split} images\n")
        print(evaluation.markdown_table(result["table"]))
    print("| true sigma_b | row | median recovered sigma_b | median relative error |\n|---|---|---|---|")
    for width, entries in summary.items():
        for label, entry in entries.items():
            print(f"| {width:g} | {label} | {entry['median_sigma_b']:.3f} | {entry['median_relative_error']:.3f} |")
    io.write_json(args.out / "recovered.json", {str(k): v for k, v in summary.items()})


if __name__ == "__main__":
    main()
