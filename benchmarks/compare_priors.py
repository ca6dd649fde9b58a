"""Compare Fashion-MNIST priors (e.g. the snapshots of a training run) as samplers and as reconstruction priors.

For each generator: the Frechet distance in ``fmnist-eval`` features between N samples and the test
split (lower is better; the floor, validation vs test, is about 0.2), the largest class's share of
the samples, and the reconstruction score: the mean ``fmnist-eval`` distance between the MAP and the
truth over super-resolution x4 (from 8x8) and centre inpainting (16x16 hole) of validation images
that neither tuning (0-15) nor calibration (0-19) uses, with the same fixed settings for every prior
(so the prior is the only difference). Lower is better; PSNR per task is printed beside it.

    python benchmarks/compare_priors.py fashion-mnist-32 fashion-mnist-32-794kimg runs/snap/*.safetensors
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tune_defaults import evaluate

import brgm_pyro as bp
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.fmnist.evaluator import FMNISTEval, class_histogram, fid

SETTING = {"sigma_pixel": 0.02, "sigma_percept": 0.3, "kappa": 0.5, "lr": 0.1}


def compare(generator: str, evaluator: FMNISTEval, test: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor,
            samples: int, steps: int) -> dict:
    G = bp.load_generator(generator)
    began = time.perf_counter()
    row: dict = {"generator": generator}
    if samples:
        fake = G.sample(samples, seed=0)
        row["fid"] = fid(fake, test, evaluator)
        row["largest_class"] = float(class_histogram(fake, evaluator).max()) / samples
    result = evaluate(SETTING, G, truth, labels, evaluator, steps)
    row["score"] = result["score"]
    row["psnr"] = {task: r["psnr"] for task, r in result["tasks"].items()}
    row["seconds"] = time.perf_counter() - began
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("generators", nargs="+", help="prior names or checkpoint paths")
    parser.add_argument("--samples", type=int, default=5000, help="samples for the Frechet distance (0: skip)")
    parser.add_argument("--first", type=int, default=100, help="first validation image to reconstruct")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200, help="MAP steps")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    evaluator = FMNISTEval()
    test, _ = load_fashion_mnist("test")
    val, labels = load_fashion_mnist("val")
    truth, labels = val[args.first : args.first + args.images], labels[args.first : args.first + args.images]
    print(f"validation images {args.first}-{args.first + args.images - 1}, MAP {args.steps} steps, settings {SETTING}, "
          f"{args.samples} samples for the Frechet distance")
    print("| generator | Frechet distance | largest class | score | PSNR SR x4 | PSNR inpaint | s |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for generator in args.generators:
        r = compare(generator, evaluator, test, truth, labels, args.samples, args.steps)
        rows.append(r)
        fd = f"{r['fid']:.2f}" if "fid" in r else "-"
        lc = f"{r['largest_class']:.3f}" if "largest_class" in r else "-"
        print(f"| {generator} | {fd} | {lc} | {r['score']:.4f} | {r['psnr']['superres-x4']:.2f} | "
              f"{r['psnr']['inpaint-center']:.2f} | {r['seconds']:.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
