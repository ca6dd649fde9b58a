"""Quality figures of a Fashion-MNIST prior (for its model card).

* FID in ``fmnist-eval`` penultimate features between N generated samples and the test split, next
  to the floor: the same distance between the real validation images and the test split.
* The class histogram of the samples as ``fmnist-eval`` sees them (mode collapse shows here).
* Coverage: MAP inversion with f = identity on validation images (median PSNR), since a prior that
  cannot reach an image cannot restore it, and the RMS of the residual x - G(w*) over their pixels,
  which ``scripts/ship_prior.py`` ships as the card's ``sigma_reach`` (``brgm_pyro.uncertainty.discrepancy``).
* A grid of 64 uncurated samples (``--grid``).

    python benchmarks/prior_quality.py --generator fashion-mnist-32 [--samples 10000] [--invert 100]
"""

from __future__ import annotations

import argparse
import json
import time

import brgm_pyro as bp
from brgm_pyro import io
from brgm_pyro.fmnist.data import CLASS_NAMES, load_fashion_mnist
from brgm_pyro.fmnist.evaluator import FMNISTEval, class_histogram, fid
from brgm_pyro.metrics import psnr

INVERT_FIRST = 1000


def quality(generator: str, samples: int, invert: int, invert_steps: int, seed: int) -> dict:
    G = bp.load_generator(generator)
    evaluator = FMNISTEval()
    test, _ = load_fashion_mnist("test")
    val, _ = load_fashion_mnist("val")
    start = time.perf_counter()
    fake = G.sample(samples, seed=seed)
    figures: dict = {"generator": generator, "samples": samples}
    figures["fid_samples_vs_test"] = round(fid(fake, test, evaluator), 3)
    figures["fid_floor_val_vs_test"] = round(fid(val, test, evaluator), 3)
    figures["fid_floor_images"] = len(val)
    hist = class_histogram(fake, evaluator).tolist()
    figures["class_histogram"] = dict(zip(CLASS_NAMES, hist))
    figures["largest_class_fraction"] = round(max(hist) / samples, 4)
    figures["seconds_sampling_and_fid"] = round(time.perf_counter() - start, 1)
    if invert:
        start = time.perf_counter()
        # Validation images from INVERT_FIRST on: disjoint from those that tune the defaults and
        # calibrate the posterior (the first ones), since the residual RMS sets sigma_reach.
        target = val[INVERT_FIRST : INVERT_FIRST + invert]
        f = bp.forward.Identity()
        params = bp.BRGMParams(sigma_pixel=0.02, sigma_percept=1.0, kappa=0.0)
        rec = bp.reconstruct(target, f, G, params=params, perceptual=None, steps=invert_steps, lr=0.05,
                             progress=False)
        values = psnr(rec.image, target)
        figures["inversion"] = {
            "images": invert,
            "steps": invert_steps,
            "median_psnr": round(float(values.median()), 2),
            "p10_psnr": round(float(values.quantile(0.1)), 2),
            "p90_psnr": round(float(values.quantile(0.9)), 2),
            "first_image": INVERT_FIRST,
            # RMS of x - G(w*) over all pixels of all inverted images: the prior's reach residual,
            # shipped as the card's sigma_reach (brgm_pyro.uncertainty.discrepancy).
            "residual_rms": round(float((rec.image - target).square().mean().sqrt()), 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--invert", type=int, default=100, help="validation images to invert (0: skip)")
    parser.add_argument("--invert-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default=None, help="write 64 uncurated samples (8x8) to this PNG")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    figures = quality(args.generator, args.samples, args.invert, args.invert_steps, args.seed)
    print(json.dumps(figures, indent=2))
    if args.grid:
        samples = bp.load_generator(args.generator).sample(64, seed=args.seed)
        io.save_grid(args.grid, [list(samples[r * 8 : (r + 1) * 8]) for r in range(8)], scale=2)
    if args.json:
        io.write_json(args.json, figures)


if __name__ == "__main__":
    main()
