"""NUTS convergence on one 32 px image: R-hat, bulk ESS and ESS per second of the monitored scalars.

Runs ``sample_posterior(..., method="nuts")`` on one validation image of Fashion-MNIST (never a test
image), super-resolution x4 from 8x8 (bicubic) or inpainting of a centre box, with the model and
preconditioner given, and prints ArviZ's diagnostics of the monitored scalars (sigma_pixel when
the model has it, four w coordinates, the RMS z-score of w), the divergences, the step size, the
tree depth and the timings. Compare preconditioners on the same image and seed:

    python benchmarks/nuts.py --precondition laplace --num-samples 300 --warmup 300
    python benchmarks/nuts.py --precondition none --num-samples 300 --warmup 300

Chains can also run in separate processes (one per core: ``--chain K --netcdf chainK.nc``: the same
MAP, and chain K's own seed and jitter) and be pooled afterwards; ``--merge`` prints the
same table for all of them together (R-hat across the chains; ESS per second over the summed chain
time, i.e. per CPU-second):

    for k in 0 1 2 3; do python benchmarks/nuts.py --chain $k --netcdf runs/chain$k.nc --json runs/chain$k.json & done; wait
    python benchmarks/nuts.py --merge runs/chain*.nc
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

import brgm_pyro as bp
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.models.variants import get_model
from brgm_pyro.problem import prepare_problem


def print_table(monitored: dict[str, dict[str, float]]) -> None:
    print("| scalar | R-hat | bulk ESS | ESS/s |")
    print("|---|---|---|---|")
    for label, m in monitored.items():
        print(f"| {label} | {m['r_hat']:.3f} | {m['ess_bulk']:.0f} | {m['ess_bulk_per_s']:.3f} |")
    r_hats = [m["r_hat"] for m in monitored.values() if math.isfinite(m["r_hat"])]
    print(f"max R-hat {max(r_hats, default=float('nan')):.3f} (target <= 1.05), min bulk ESS {min(m['ess_bulk'] for m in monitored.values()):.0f}")


def merge(paths: list[Path], json_path: str | None) -> dict:
    """Pool chains saved by separate runs (``--netcdf``) and print their joint diagnostics."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az
        import xarray as xr

        if len(paths) < 2:
            raise SystemExit("--merge needs the NetCDF files of at least two chains.")
        datas = [az.from_netcdf(str(p)) for p in paths]
        groups = {}
        for group in ("posterior", "sample_stats"):
            parts = []
            for i, data in enumerate(datas):
                ds = getattr(data, group)
                if ds.sizes["chain"] != 1:
                    raise SystemExit(f"{paths[i]} holds {ds.sizes['chain']} chains; merge files of one chain each.")
                parts.append(ds.assign_coords(chain=[i]))
            groups[group] = xr.concat(parts, dim="chain")
        pooled = az.InferenceData(**groups)
        table = az.summary(pooled, kind="diagnostics", round_to="none")
    seconds = 0.0
    for path in paths:
        sidecar = path.with_suffix(".json")
        if not sidecar.exists():
            raise SystemExit(f"{sidecar} is missing: run each chain with --json next to its --netcdf.")
        seconds += json.loads(sidecar.read_text())["diagnostics"]["sampling_s"]
    stats = groups["sample_stats"]
    monitored = {
        label: {"r_hat": float(row["r_hat"]), "ess_bulk": float(row["ess_bulk"]),
                "ess_bulk_per_s": float(row["ess_bulk"]) / seconds}
        for label, row in table.iterrows()
    }
    diverging = stats["diverging"].values
    print(f"{len(paths)} chains x {diverging.shape[1]} kept draws from {', '.join(p.name for p in paths[:3])}"
          f"{', ...' if len(paths) > 3 else ''}")
    print(f"divergences {int(diverging.sum())} ({diverging.mean():.2%}), mean step size "
          f"{float(stats['step_size'].mean()):.4f}, mean gradients per draw {float(stats['n_steps'].mean()):.1f}, "
          f"mean tree depth {float(stats['tree_depth'].mean()):.2f}")
    print(f"chain time {seconds:.0f} CPU-s in all (warm-up included)")
    print_table(monitored)
    out = {"chains": [str(p) for p in paths], "sampling_s": seconds, "divergence_fraction": float(diverging.mean()),
           "monitored": monitored}
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=2) + "\n")
    return out


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
    parser.add_argument("--max-tree-depth", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--map-steps", type=int, default=None, help="MAP steps (default: the prior's card)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--init-jitter", type=float, default=None,
                        help="std of each chain's start around the MAP, in whitened units when preconditioned "
                        "(1: a draw of the Laplace approximation; default MCMCSettings')")
    parser.add_argument("--chain", type=int, default=None, metavar="K",
                        help="run only chain K of the run (its own process; pool the chains with --merge)")
    parser.add_argument("--netcdf", type=Path, default=None,
                        help="also save the draws' InferenceData (no images) here, for --merge")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="NC",
                        help="pool chains saved with --netcdf (and --json beside them) and print their diagnostics")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.json)
        return
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
    # The MAP is seeded --seed; chain k of the run is seeded --seed + k, so --chain K alone draws
    # exactly what chain K of the same run with all chains would.
    rec = bp.reconstruct(y, f, G, params=params, perceptual=perceptual, model=get_model(args.model), seed=args.seed,
                         steps=args.map_steps, progress=args.progress)
    map_s = time.perf_counter() - began
    post = bp.sample_posterior(
        y, f, G, "nuts", args.num_samples, model=args.model, params=params, map_result=rec,
        perceptual=perceptual, num_chains=1 if args.chain is not None else args.num_chains,
        warmup_steps=args.warmup, max_tree_depth=args.max_tree_depth, seed=args.seed + (args.chain or 0),
        progress=args.progress, precondition=None if args.precondition == "none" else args.precondition,
        **({"init_jitter": args.init_jitter} if args.init_jitter is not None else {}),
    )
    wall = time.perf_counter() - began
    d = post.diagnostics
    d["map_s"] = map_s
    chains = f"chain {args.chain}" if args.chain is not None else f"{args.num_chains} chains"
    print(f"generator {args.generator}, validation image {args.image}, {args.task}, model {args.model}, "
          f"sigma_pixel {params.sigma_pixel}, perceptual {args.perceptual}, precondition {args.precondition}, {chains} x ({args.warmup} warm-up + "
          f"{args.num_samples}) draws, tree depth cap {args.max_tree_depth}, torch threads {torch.get_num_threads()}")
    print(f"divergences {d['divergences']} ({d['divergence_fraction']:.2%}), mean step size {d['mean_step_size']:.4f}, "
          f"mean gradients per draw {d['mean_n_steps']:.1f}, mean tree depth {d['mean_tree_depth']:.2f}, "
          f"draws at the depth cap {d['max_tree_depth_fraction']:.1%}")
    print(f"time: MAP {d.get('map_s', 0):.1f} s, preconditioner {d.get('precondition_s', 0):.1f} s, "
          f"chains {d['sampling_s']:.1f} s (warm-up included), total {wall:.1f} s")
    print_table(d["monitored"])
    if args.netcdf:
        post.save_netcdf(args.netcdf, images=False)
    if args.json:
        keep = {k: v for k, v in d.items() if isinstance(v, (int, float, str, dict, list))}
        with open(args.json, "w") as fh:
            json.dump({"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "wall_s": wall, "diagnostics": keep}, fh, indent=2)


if __name__ == "__main__":
    main()
