"""NUTS convergence on one 32 px image: R-hat, bulk ESS and ESS per second of the monitored scalars.

Runs ``sample_posterior(..., method="nuts")`` on one validation image of Fashion-MNIST (never a test
image), super-resolution x4 from 8x8 (bicubic) or inpainting of a centre box, with the model and
preconditioner given, and prints ArviZ's diagnostics of the monitored scalars (sigma_pixel when
the model has it, four w coordinates, the RMS z-score of w), the divergences, the step size, the
tree depth and the timings. Compare preconditioners on the same image and seed:

    python benchmarks/nuts.py --precondition laplace --num-samples 300 --warmup 300
    python benchmarks/nuts.py --precondition none --num-samples 300 --warmup 300
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

import brgm_pyro as bp
from brgm_pyro.api import prepare_problem
from brgm_pyro.data import load_fashion_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--image", type=int, default=0, help="index into the validation split")
    parser.add_argument("--task", choices=["superres", "inpaint"], default="superres")
    parser.add_argument("--model", default="learned-noise")
    parser.add_argument("--sigma-pixel", type=float, default=None,
                        help="sigma_pixel of the model (default: the card's; the prior of learned-noise is centred there)")
    parser.add_argument("--perceptual", default="auto", help="auto (the card's), none, or a registered name")
    parser.add_argument("--precondition", choices=["auto", "laplace", "none"], default="auto")
    parser.add_argument("--num-samples", type=int, default=300, help="kept draws per chain")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--num-chains", type=int, default=2)
    parser.add_argument("--max-tree-depth", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    G = bp.load_generator(args.generator)
    x = load_fashion_mnist("val")[0][args.image : args.image + 1]
    if args.task == "superres":
        f = bp.forward.Downsample(4, "bicubic")
    else:
        f = bp.forward.Mask.center_box(G.resolution, G.resolution // 2)
    y = f(x).clamp(0, 1)
    perceptual = None if args.perceptual == "none" else args.perceptual
    # The parameters sample_posterior would use (the card's, or the default preset), with --sigma-pixel.
    params = prepare_problem(y, f, G, None, perceptual).params
    if args.sigma_pixel:
        params = replace(params, sigma_pixel=args.sigma_pixel)
    began = time.perf_counter()
    post = bp.sample_posterior(
        y, f, G, "nuts", args.num_samples, model=args.model, params=params,
        perceptual=perceptual, num_chains=args.num_chains,
        warmup_steps=args.warmup, max_tree_depth=args.max_tree_depth, seed=args.seed, progress=args.progress,
        precondition=None if args.precondition == "none" else args.precondition,
    )
    wall = time.perf_counter() - began
    d = post.diagnostics
    print(f"generator {args.generator}, validation image {args.image}, {args.task}, model {args.model}, "
          f"sigma_pixel {params.sigma_pixel}, perceptual {args.perceptual}, precondition {args.precondition}, {args.num_chains} chains x ({args.warmup} warm-up + "
          f"{args.num_samples}) draws, tree depth cap {args.max_tree_depth}, torch threads {torch.get_num_threads()}")
    print(f"divergences {d['divergences']} ({d['divergence_fraction']:.2%}), mean step size {d['mean_step_size']:.4f}, "
          f"mean gradients per draw {d['mean_n_steps']:.1f}, mean tree depth {d['mean_tree_depth']:.2f}, "
          f"draws at the depth cap {d['max_tree_depth_fraction']:.1%}")
    print(f"time: MAP {d.get('map_s', 0):.1f} s, preconditioner {d.get('precondition_s', 0):.1f} s, "
          f"chains {d['sampling_s']:.1f} s (warm-up included), total {wall:.1f} s")
    print("| scalar | R-hat | bulk ESS | ESS/s |")
    print("|---|---|---|---|")
    for label, m in d["monitored"].items():
        print(f"| {label} | {m['r_hat']:.3f} | {m['ess_bulk']:.0f} | {m['ess_bulk_per_s']:.3f} |")
    print(f"max R-hat {d['max_r_hat']:.3f} (target <= 1.05), min bulk ESS {d['min_ess_bulk']:.0f}")
    if args.json:
        keep = {k: v for k, v in d.items() if isinstance(v, (int, float, str, dict, list))}
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "wall_s": wall, "diagnostics": keep}, fh, indent=2)


if __name__ == "__main__":
    main()
