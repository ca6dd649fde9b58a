"""A deepinv user's loop: BRGM beside deepinv's total-variation solver, each run by ``deepinv.test``.

The first N Fashion-MNIST test images (padded to the prior's size) are measured by deepinv's bicubic
``Downsampling`` with Gaussian noise, online, the noise seeded so that every model sees the same y.
The rows: BRGM's MAP (``brgm_pyro.deepinv.BRGM``, the prior card's settings, sigma_pixel the physics'
noise level), optionally BRGM's posterior mean (``--posterior``), and deepinv's TV reconstruction
(proximal gradient descent on 1/2 ||A x - y||^2 + lambda TV(x), ``deepinv.optim.PGD`` with
``TVPrior``); the metrics are deepinv's PSNR and SSIM, "no learning" is deepinv's A^T y.

    python benchmarks/deepinv_loop.py --images 16 --factor 4 --noise 0.02
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import deepinv as dinv
import torch

import brgm_pyro as bp
from brgm_pyro.deepinv import BRGM
from brgm_pyro.fmnist.data import load_fashion_mnist


def models(G: torch.nn.Module, args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    schedule = None if args.steps is None else bp.MAPSchedule(steps=args.steps)
    rows = {"BRGM (MAP)": BRGM(G, schedule=schedule)}
    if args.posterior:
        svi = {} if args.svi_steps is None else {"method": "svi", "steps": args.svi_steps}
        rows["BRGM (posterior mean)"] = BRGM(G, "mean", schedule=schedule, num_samples=args.num_samples, **svi)
    rows["TV (deepinv PGD)"] = dinv.optim.PGD(
        data_fidelity=dinv.optim.L2(), prior=dinv.optim.TVPrior(n_it_max=20), lambda_reg=args.tv_lambda,
        stepsize=1.0, max_iter=args.tv_iterations)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32", help="a registered prior or a checkpoint path")
    parser.add_argument("--images", type=int, default=16, help="the first N Fashion-MNIST test images")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.02, help="std of deepinv's GaussianNoise")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=None, help="BRGM's MAP steps (default: the prior card's)")
    parser.add_argument("--posterior", action="store_true", help="also BRGM's posterior mean")
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--svi-steps", type=int, default=None)
    parser.add_argument("--tv-lambda", type=float, default=0.003,
                        help="TV weight (the best of 0.001-0.1 on 16 validation images at x4)")
    parser.add_argument("--tv-iterations", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # deepinv's deprecation and composition warnings
    G = bp.load_generator(args.generator)
    images, _ = load_fashion_mnist("test", pad_to=G.resolution)
    loader = torch.utils.data.DataLoader(dinv.datasets.TensorDataset(x=images[: args.images]),
                                         batch_size=args.batch_size)
    physics = dinv.physics.Downsampling(
        (G.channels, G.resolution, G.resolution), "bicubic", args.factor,
        noise_model=dinv.physics.GaussianNoise(sigma=args.noise, rng=torch.Generator().manual_seed(0)))
    metrics = [dinv.metric.PSNR(), dinv.metric.SSIM()]
    print(f"{args.images} Fashion-MNIST test images, deepinv Downsampling(bicubic, x{args.factor}) + GaussianNoise"
          f"({args.noise}), torch threads {torch.get_num_threads()}")
    table = {}
    for label, model in models(G, args).items():
        physics.noise_model.reset_rng()  # the same y for every model
        began = time.perf_counter()
        results = dinv.test(model, loader, physics, metrics=metrics, online_measurements=True,
                            show_progress_bar=False, verbose=False)
        seconds = (time.perf_counter() - began) / args.images
        table.setdefault("no learning (A^T y)", {"PSNR": results["PSNR no learning"],
                                                 "SSIM": results["SSIM no learning"], "seconds": None})
        table[label] = {"PSNR": results["PSNR"], "SSIM": results["SSIM"], "seconds": seconds}
    print("| model | PSNR (dB) | SSIM | s / image |\n|---|---|---|---|")
    for label, row in table.items():
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.2f}"
        print(f"| {label} | {row['PSNR']:.2f} | {row['SSIM']:.3f} | {seconds} |")
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "table": table}, indent=2))


if __name__ == "__main__":
    main()
