"""The two priors as samplers: the diffusion denoiser's draws against the GAN's, on the same footing.

N draws from the diffusion prior (``brgm_pyro.baselines.diffusion.prior_samples``: deepinv's reverse
diffusion with no data, the DDPM sampler in ``--steps`` steps) and N from the generator
(``G.sample``), each scored by the Frechet distance in ``fmnist-eval`` features to the test split and
by the share of the largest class (``brgm_pyro.fmnist.evaluator``). N is the same for both because the
Frechet distance is biased upwards for small N (the GAN's card quotes it for 10,000 samples). The
first 64 diffusion draws are saved as a grid.

    python benchmarks/diffusion_prior.py --samples 500 --steps 250 --figure docs/results/diffusion-samples.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import brgm_pyro as bp
from brgm_pyro import io
from brgm_pyro.baselines.diffusion import prior_samples
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.fmnist.evaluator import FMNISTEval, class_histogram, fid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--steps", type=int, default=250, help="reverse diffusion steps")
    parser.add_argument("--weights", type=Path, default=None, help="a denoiser file instead of the shipped one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, default=None, help="a PNG grid of the first 64 diffusion draws")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    evaluator = FMNISTEval()
    test, _ = load_fashion_mnist("test", pad_to=32)
    rows = {}
    began = time.perf_counter()
    diffusion = prior_samples(args.samples, args.steps, args.seed, args.weights)
    rows["diffusion"] = {"seconds": time.perf_counter() - began, "images": diffusion}
    G = bp.load_generator(args.generator).requires_grad_(False)
    began = time.perf_counter()
    gan = G.sample(args.samples, seed=args.seed)
    rows["gan"] = {"seconds": time.perf_counter() - began, "images": gan}
    report = {}
    print("| prior | samples | Frechet distance to the test split | largest class | s / sample |\n|---|---|---|---|---|")
    for name, row in rows.items():
        counts = class_histogram(row["images"], evaluator)
        report[name] = {"samples": args.samples, "fid": fid(row["images"], test, evaluator),
                        "largest_class": float(counts.max()) / args.samples, "class_counts": counts.tolist(),
                        "seconds_per_sample": row["seconds"] / args.samples}
        r = report[name]
        label = f"diffusion ({args.steps} steps)" if name == "diffusion" else f"GAN ({args.generator})"
        print(f"| {label} | {args.samples} | {r['fid']:.2f} | {r['largest_class']:.3f} | {r['seconds_per_sample']:.3f} |")
    if args.figure is not None:
        shown = diffusion[:64]
        io.save_grid(args.figure, [list(shown[i : i + 8]) for i in range(0, len(shown), 8)], scale=2)
    if args.json is not None:
        io.write_json(args.json, {"steps": args.steps, "seed": args.seed, **report})
    print(json.dumps({name: round(r["fid"], 3) for name, r in report.items()}))


if __name__ == "__main__":
    main()
