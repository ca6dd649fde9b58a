"""Calibration of the posterior per inference method, for super-resolution and inpainting.

For each validation image x and task f, y = f(x); the MAP runs once and every method samples
the posterior from it. Printed per task and method, pooled over the pixels of all images:

* coverage of the per-pixel central 50%, 90% and 95% credible intervals (calibrated: 0.50, 0.90, 0.95);
* Spearman correlation between the per-pixel posterior std and |posterior mean - x|;
* PSNR (dB) of the posterior mean and of the MAP against x, averaged over images;
* inpainting: mean posterior std inside the hole over that on observed pixels, and a second row
  "inpaint (hole)" scoring the hole's pixels only;
* seconds per image of the sampling (the MAP's time is printed below the table).

``--data val`` takes the Fashion-MNIST validation images (the real test, model error included);
``--data prior`` takes images G(w) of prior draws of w, for which the model is exactly right, so
any miscalibration there is the inference's.

    python benchmarks/calibration.py --num-images 20 --methods svi-lowrank,svi-normal,nuts
    python benchmarks/calibration.py --generator runs/fashion-mnist-32/generator.safetensors --num-images 2 \
        --methods svi-lowrank --svi-steps 100 --map-steps 100        # a quick check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.models.variants import available_models, get_model

import brgm_pyro as bp
from brgm_pyro.metrics import interval_coverage, psnr, spearman_std_error
from brgm_pyro.sampling import DEFAULT_MODEL, sample_posterior
from brgm_pyro.stylegan2 import to_unit

LEVELS = (0.5, 0.9, 0.95)
# Method name of this script -> (sample_posterior method, its options).
METHODS = {
    "svi-lowrank": ("svi", {"guide": "lowrank"}),
    "svi-normal": ("svi", {"guide": "normal"}),
    "svi-laplace": ("svi", {"guide": "laplace"}),
    "nuts": ("nuts", {}),
    "hmc": ("hmc", {}),
}


@dataclass
class Tally:
    """Per-pixel results of one (task, method), accumulated over images."""

    covered: dict[float, list[float]] = field(default_factory=lambda: {level: [] for level in LEVELS})
    covered_hole: dict[float, list[float]] = field(default_factory=lambda: {level: [] for level in LEVELS})
    std: list[torch.Tensor] = field(default_factory=list)
    error: list[torch.Tensor] = field(default_factory=list)
    hole: list[torch.Tensor] = field(default_factory=list)
    psnr_mean: list[float] = field(default_factory=list)
    psnr_map: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    extra: list[dict] = field(default_factory=list)
    sigma_pixel: list[float] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32", help="prior name or checkpoint path")
    parser.add_argument("--data", choices=("val", "prior"), default="val")
    parser.add_argument("--num-images", type=int, default=20)
    parser.add_argument("--first", type=int, default=0, help="index of the first validation image")
    parser.add_argument("--tasks", default="superres,inpaint")
    parser.add_argument("--factor", type=int, default=4, help="super-resolution factor (32 px -> 8 px for 4)")
    parser.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise added to y (pixels in [0, 1])")
    parser.add_argument("--box", type=int, default=12, help="side of the inpainting hole, centred, in pixels")
    parser.add_argument("--methods", default="svi-lowrank,svi-normal", help=f"comma-separated: {', '.join(METHODS)}")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=available_models())
    parser.add_argument("--preset", default="default")
    parser.add_argument("--perceptual", default="auto", help="auto, none or a registered name")
    parser.add_argument("--sigma-reach", default="auto",
                        help="prior reach residual (brgm_pyro.discrepancy): auto (the card's), none, or a number")
    parser.add_argument("--num-samples", type=int, default=32, help="SVI draws, or kept draws per MCMC chain")
    parser.add_argument("--map-steps", type=int, default=None, help=f"default {MAPSchedule.steps}")
    parser.add_argument("--svi-steps", type=int, default=None)
    parser.add_argument("--svi-lr", type=float, default=None)
    parser.add_argument("--rank", type=int, default=None)
    parser.add_argument("--init-scale", type=float, default=None)
    parser.add_argument("--num-chains", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--max-tree-depth", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args(argv)
    if args.sigma_reach not in ("auto", "none"):
        args.sigma_reach = float(args.sigma_reach)
    elif args.sigma_reach == "none":
        args.sigma_reach = None
    args.methods = args.methods.split(",")
    args.tasks = args.tasks.split(",")
    unknown = [m for m in args.methods if m not in METHODS] + [t for t in args.tasks if t not in ("superres", "inpaint")]
    if unknown:
        parser.error(f"unknown method or task: {', '.join(unknown)}")
    return args


def method_options(args: argparse.Namespace, name: str) -> tuple[str, dict]:
    method, options = METHODS[name]
    options = dict(options)
    given = (
        {"steps": args.svi_steps, "lr": args.svi_lr, "rank": args.rank, "init_scale": args.init_scale}
        if method == "svi"
        else {"num_chains": args.num_chains, "warmup_steps": args.warmup}
    )
    if method == "nuts":
        given["max_tree_depth"] = args.max_tree_depth
    if method == "svi" and options.get("guide") != "lowrank":
        given.pop("rank")
    options.update({k: v for k, v in given.items() if v is not None})
    return method, options


def truth_images(args: argparse.Namespace, G: torch.nn.Module) -> torch.Tensor:
    if args.data == "prior":
        gen = torch.Generator().manual_seed(1000 + args.seed)
        w = G.w_avg.cpu() + G.w_std.cpu() * torch.randn(args.num_images, G.num_ws, G.w_dim, generator=gen)
        with torch.no_grad():
            return to_unit(G.synthesis(w.to(G.w_avg.device)), clamp=True).cpu()
    from brgm_pyro.data import load_fashion_mnist

    images, _ = load_fashion_mnist("val", pad_to=G.resolution)
    return images[args.first : args.first + args.num_images]


def corruption(task: str, args: argparse.Namespace, resolution: int) -> bp.forward.Operator:
    if task == "superres":
        return bp.forward.Downsample(args.factor, "bicubic")
    return bp.forward.Mask.center_box(resolution, args.box)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    G = bp.load_generator(args.generator, device=device)
    truth = truth_images(args, G)
    perceptual = None if args.perceptual == "none" else args.perceptual
    schedule = MAPSchedule(**({"steps": args.map_steps} if args.map_steps else {}))
    results: dict = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    map_seconds = []
    realised_noise: dict[str, list[float]] = {}
    for task in args.tasks:
        f = corruption(task, args, G.resolution)
        tallies = {name: Tally() for name in args.methods}
        hole = None
        if task == "inpaint":
            hole = f.observed(truth[:1].shape, device="cpu").expand_as(truth[:1]) == 0
        seen = f.observed(truth[:1].shape, device="cpu").expand(f.output_shape(truth[:1].shape)).bool()
        for i in range(truth.shape[0]):
            x = truth[i : i + 1]
            clean = f(x)
            gen = torch.Generator().manual_seed(args.seed * 100_003 + i)
            y = (clean + args.noise * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
            # The noise left after clamping y to [0, 1] (less than --noise on black or white pixels).
            realised_noise.setdefault(task, []).append(float((y - clean)[seen].square().mean().sqrt()))
            began = time.perf_counter()
            common = dict(params=args.preset, perceptual=perceptual, seed=args.seed, progress=args.progress)
            rec = bp.reconstruct(y, f, G, schedule=schedule, model=get_model(args.model), **common)
            map_seconds.append(time.perf_counter() - began)
            for name in args.methods:
                method, options = method_options(args, name)
                began = time.perf_counter()
                post = sample_posterior(
                    y, f, G, method, args.num_samples, model=args.model, map_result=rec, sigma_reach=args.sigma_reach,
                    **common, **options
                )
                tally = tallies[name]
                tally.seconds.append(time.perf_counter() - began)
                results["sigma_reach"] = post.sigma_reach  # as sample_posterior resolved it
                for level, value in interval_coverage(post.samples, x, LEVELS).items():
                    tally.covered[level].append(value)
                if hole is not None:
                    for level, value in interval_coverage(post.samples, x, LEVELS, mask=hole).items():
                        tally.covered_hole[level].append(value)
                    tally.hole.append(hole)
                if "sigma_pixel" in post.latents:
                    tally.sigma_pixel.append(float(post.latents["sigma_pixel"].mean()))
                tally.std.append(post.std)
                tally.error.append((post.mean - x).abs())
                tally.psnr_mean.append(float(psnr(post.mean, x)[0]))
                tally.psnr_map.append(float(psnr(rec.image, x)[0]))
                if method != "svi":
                    d = post.diagnostics
                    tally.extra.append({k: d[k] for k in ("max_r_hat", "min_ess_bulk", "divergence_fraction")})
        results[task] = {name: summarise(tally) for name, tally in tallies.items()}
    results["map_seconds_per_image"] = sum(map_seconds) / len(map_seconds)
    results["realised_noise_rms"] = {task: sum(v) / len(v) for task, v in realised_noise.items()}
    return results


def summarise(tally: Tally) -> dict:
    std, error = torch.cat(tally.std), torch.cat(tally.error)
    out = {
        "coverage": {str(level): sum(v) / len(v) for level, v in tally.covered.items()},
        "spearman": spearman_std_error(std, error),
        "psnr_mean": sum(tally.psnr_mean) / len(tally.psnr_mean),
        "psnr_map": sum(tally.psnr_map) / len(tally.psnr_map),
        "seconds_per_image": sum(tally.seconds) / len(tally.seconds),
        "images": len(tally.seconds),
    }
    if tally.sigma_pixel:
        out["sigma_pixel_mean"] = sum(tally.sigma_pixel) / len(tally.sigma_pixel)
        out["sigma_pixel_per_image"] = tally.sigma_pixel
    if tally.hole:
        hole = torch.cat(tally.hole)
        out["coverage_hole"] = {str(level): sum(v) / len(v) for level, v in tally.covered_hole.items()}
        out["spearman_hole"] = spearman_std_error(std, error, mask=hole)
        out["std_ratio_hole_observed"] = float(std[hole].mean() / std[~hole].mean())
    if tally.extra:
        out["mcmc"] = {
            "max_r_hat": max(e["max_r_hat"] for e in tally.extra),
            "min_ess_bulk": min(e["min_ess_bulk"] for e in tally.extra),
            "mean_divergence_fraction": sum(e["divergence_fraction"] for e in tally.extra) / len(tally.extra),
        }
    return out


def table(results: dict) -> str:
    columns = ["task", "method", "cover 50%", "cover 90%", "cover 95%", "Spearman std-err", "PSNR mean",
               "PSNR MAP", "std hole/obs", "s/image"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for task in ("superres", "inpaint"):
        for name, r in results.get(task, {}).items():
            c = r["coverage"]
            ratio = f"{r['std_ratio_hole_observed']:.2f}" if "std_ratio_hole_observed" in r else "-"
            lines.append(
                f"| {task} | {name} | {c['0.5']:.3f} | {c['0.9']:.3f} | {c['0.95']:.3f} | {r['spearman']:.3f} | "
                f"{r['psnr_mean']:.2f} | {r['psnr_map']:.2f} | {ratio} | {r['seconds_per_image']:.1f} |"
            )
            if "coverage_hole" in r:
                h = r["coverage_hole"]
                lines.append(
                    f"| inpaint (hole) | {name} | {h['0.5']:.3f} | {h['0.9']:.3f} | {h['0.95']:.3f} | "
                    f"{r['spearman_hole']:.3f} | - | - | - | - |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    results = run(args)
    results["seconds"] = time.perf_counter() - started
    print(table(results))
    print(
        f"\n{args.num_images} {args.data} images, generator {args.generator}, model {args.model}, sigma_reach {results['sigma_reach']}, "
        f"{args.num_samples} draws; MAP {results['map_seconds_per_image']:.1f} s/image; "
        f"total {results['seconds']:.0f} s"
    )
    for task in args.tasks:
        for name, r in results[task].items():
            if "sigma_pixel_mean" in r:
                values = r["sigma_pixel_per_image"]
                print(
                    f"{task} {name}: posterior mean of sigma_pixel {r['sigma_pixel_mean']:.4f} "
                    f"(per image {min(values):.4f}-{max(values):.4f}; noise added to y: {args.noise}, "
                    f"RMS after clamping to [0, 1]: {results['realised_noise_rms'][task]:.4f})"
                )
            if "mcmc" in r:
                m = r["mcmc"]
                print(
                    f"{task} {name}: max R-hat {m['max_r_hat']:.3f}, min bulk ESS {m['min_ess_bulk']:.0f}, "
                    f"divergences {100 * m['mean_divergence_fraction']:.1f}%"
                )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
