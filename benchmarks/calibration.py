"""Calibration of the posterior on held-out images, per task and method, where the data cannot pin the pixels.

For each image x and task f, y = f(x); the MAP runs once and every method samples the posterior
from it. Each image's result is one JSON line in ``OUT/results.jsonl`` and its draws a file in
``OUT/draws/``, so a long run can be stopped and resumed (images already done with the same settings
are skipped). The report pools every recorded image of the requested split, tasks, methods and
settings. Per task and method it gives:

* pixel coverage at 50/80/90/95% in three regions: all pixels, the **unpinned** pixels (those the
  data cannot pin: leverage of f below 1/2, ``brgm_pyro.uncertainty.leverage``; the hole of an inpainting and
  every pixel of a super-resolution) and the pinned ones (the observed pixels of an inpainting).
  Two readings of coverage: ``interval`` is the fraction of true pixels inside ``post.interval(p)``
  as the product computes it from the S draws; ``rank`` is the fraction whose randomised rank among
  the draws (``metrics.probability_integral_transform``) falls in the central p, which is p for a
  calibrated posterior whatever S. Fractions are per image, then averaged over images;
* the median width of the 90% interval, unpinned and all;
* coverage of the 90% interval by quartile of the posterior std over the unpinned pixels, with the
  mean std and mean |error| of each quartile (does a wider interval mean a larger error?);
* image-level coverage: the fraction of images whose MSE(x, mean) lies within the posterior's
  ball of probability p (``metrics.image_level_coverage``), p = 0.1 ... 0.9;
* Spearman between std and |mean - x| over the unpinned pixels, PSNR of the mean and of the MAP;
* with ``--figure``, a reliability diagram (nominal against rank coverage, unpinned and pinned).

Tasks: ``superres-x4``, ``superres-x8`` (bicubic), ``inpaint-box`` (a centred ``--box`` square) and
``inpaint-free`` (a seeded free-form mask per image, ``brgm_pyro.forward.free_form``; ``superres`` and
``inpaint`` mean ``superres-x{--factor}`` and ``inpaint-box``). ``--data val`` / ``test`` take
Fashion-MNIST validation / test images; ``--data prior`` takes G(w) of prior draws, for which the
model is exactly right, so any miscalibration there is the inference's.

    python benchmarks/calibration.py --data test --num-images 50 --out runs/calibration \\
        --tasks superres-x4,superres-x8,inpaint-box,inpaint-free --methods svi-laplace --figure runs/reliability.png
    python benchmarks/calibration.py --data test --num-images 50 --out runs/calibration --report-only ...

With ``--calibrate-on FIRST:COUNT`` the report adds the intervals calibrated (``brgm_pyro.uncertainty.conformal``)
per task family on the validation images FIRST.. recorded in OUT with the same settings, against
constant-width intervals calibrated alike; ``--save-calibration CARD.json`` also stores each family's
calibration in a prior's card (or a new file), as ``brgm calibrate`` would from the same posteriors.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

import brgm_pyro as bp
from brgm_pyro.forward.free_form import free_form_mask
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.io import atomic_path
from brgm_pyro.metrics import (
    credible_interval,
    image_level_coverage,
    interval_coverage,
    probability_integral_transform,
    psnr,
    spearman_std_error,
)
from brgm_pyro.models.variants import available_models
from brgm_pyro.sampling import DEFAULT_MODEL, sample_posterior
from brgm_pyro.stylegan2 import to_unit
from brgm_pyro.uncertainty import conformal
from brgm_pyro.uncertainty.leverage import unpinned_pixels

LEVELS = (0.5, 0.8, 0.9, 0.95)
CURVE_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))
IMAGE_LEVELS = tuple(round(0.1 * k, 1) for k in range(1, 10))
TASKS = ("superres-x4", "superres-x8", "inpaint-box", "inpaint-free")
REGIONS = ("all", "unpinned", "pinned")
# Method name of this script -> (sample_posterior method, its options).
METHODS = {
    "laplace": ("laplace", {}),  # the default: the mode search's mixture of Laplace approximations
    "svi-lowrank": ("svi", {"guide": "lowrank"}),
    "svi-normal": ("svi", {"guide": "normal"}),
    "svi-laplace": ("svi", {"guide": "laplace"}),
    "nuts": ("nuts", {}),
    "hmc": ("hmc", {}),
}
# Each split's free-form masks come from their own seeds: the same distribution, different masks.
MASK_SEED = {"val": 1_000_000, "test": 2_000_000, "prior": 3_000_000}
# The settings that define a posterior: an image is redone when any of them changes.
POSTERIOR_SETTINGS = ("generator", "data", "box", "noise", "model", "preset", "perceptual", "sigma_reach",
                      "num_samples", "map_steps", "svi_steps", "svi_lr", "rank", "init_scale", "num_chains",
                      "warmup", "max_tree_depth", "seed")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32", help="prior name or checkpoint path")
    parser.add_argument("--data", choices=("val", "test", "prior"), default="val")
    parser.add_argument("--num-images", type=int, default=20)
    parser.add_argument("--first", type=int, default=0, help="index of the first image of the split")
    parser.add_argument("--tasks", default="superres,inpaint", help=f"comma-separated: {', '.join(TASKS)}")
    parser.add_argument("--factor", type=int, default=4, help="factor of the task 'superres'")
    parser.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise added to y (pixels in [0, 1])")
    parser.add_argument("--box", type=int, default=12, help="side of the inpainting hole, centred, in pixels")
    parser.add_argument("--methods", default="svi-laplace", help=f"comma-separated: {', '.join(METHODS)}")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=["auto", *available_models()])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--perceptual", default="auto", help="auto, none or a registered name")
    parser.add_argument("--sigma-reach", default="auto",
                        help="prior reach residual (brgm_pyro.uncertainty.discrepancy): auto (the card's), none, or a number")
    parser.add_argument("--num-samples", type=int, default=32, help="SVI draws, or kept draws per MCMC chain")
    parser.add_argument("--map-steps", type=int, default=None, help="default: the prior card's")
    parser.add_argument("--svi-steps", type=int, default=None)
    parser.add_argument("--svi-lr", type=float, default=None)
    parser.add_argument("--rank", type=int, default=None)
    parser.add_argument("--init-scale", type=float, default=None)
    parser.add_argument("--num-chains", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--max-tree-depth", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("runs/calibration"), help="folder of results.jsonl and draws/")
    parser.add_argument("--report-only", action="store_true", help="report what OUT holds, sample nothing")
    parser.add_argument("--cells", type=int, default=conformal.CELLS,
                        help="cells of the posterior mean per region kind in the calibration (1: one multiplier per region)")
    parser.add_argument("--calibrate-on", default=None, metavar="FIRST:COUNT",
                        help="also report intervals calibrated on the validation images FIRST.. recorded in OUT")
    parser.add_argument("--save-calibration", type=Path, default=None, metavar="FILE.json",
                        help="with --calibrate-on: add each task family's calibration to this file (a prior's card, "
                             "or a new file), as brgm calibrate does")
    parser.add_argument("--figure", type=Path, default=None, help="save the reliability diagram here (PNG)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    args = parser.parse_args(argv)
    if args.sigma_reach not in ("auto", "none"):
        args.sigma_reach = float(args.sigma_reach)
    elif args.sigma_reach == "none":
        args.sigma_reach = None
    args.methods = args.methods.split(",")
    aliases = {"superres": f"superres-x{args.factor}", "inpaint": "inpaint-box"}
    args.tasks = [aliases.get(t, t) for t in args.tasks.split(",")]
    unknown = [m for m in args.methods if m not in METHODS] + [
        t for t in args.tasks if t not in TASKS and not t.startswith("superres-x")
    ]
    if unknown:
        parser.error(f"unknown method or task: {', '.join(unknown)}")
    if args.save_calibration is not None and (args.calibrate_on is None or len(args.methods) != 1):
        parser.error("--save-calibration needs --calibrate-on and one method (a card holds one calibration per task)")
    return args


def settings_key(args: argparse.Namespace) -> str:
    chosen = {name: getattr(args, name) for name in POSTERIOR_SETTINGS}
    return hashlib.sha1(json.dumps(chosen, sort_keys=True, default=str).encode()).hexdigest()[:12]


def method_options(args: argparse.Namespace, name: str) -> tuple[str, dict]:
    method, options = METHODS[name]
    options = dict(options)
    if method == "laplace":  # the mixture has no settings of its own
        return method, options
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


def truth_image(args: argparse.Namespace, G: torch.nn.Module, index: int) -> torch.Tensor:
    """Image ``index`` of the split, (1, C, H, W) in [0, 1]."""
    if args.data == "prior":
        gen = torch.Generator().manual_seed(1000 + 7919 * args.seed + index)
        w = G.w_avg.cpu() + G.w_std.cpu() * torch.randn(1, G.num_ws, G.w_dim, generator=gen)
        with torch.no_grad():
            return to_unit(G.synthesis(w.to(G.w_avg.device)), clamp=True).cpu()
    from brgm_pyro.fmnist.data import load_fashion_mnist

    images, _ = load_fashion_mnist(args.data, pad_to=G.resolution)
    return images[index : index + 1]


def corruption(task: str, args: argparse.Namespace, resolution: int, index: int) -> bp.forward.Operator:
    if task.startswith("superres-x"):
        return bp.forward.Downsample(int(task.removeprefix("superres-x")), "bicubic")
    if task == "inpaint-free":
        return free_form_mask(resolution, seed=MASK_SEED[args.data] + index)
    return bp.forward.Mask.center_box(resolution, args.box)


def observation(args: argparse.Namespace, G: torch.nn.Module, task: str, index: int):
    """(x, f, y) of image ``index`` in ``task``: y = f(x) + noise, clamped to [0, 1] (bicubic overshoots)."""
    x = truth_image(args, G, index)
    f = corruption(task, args, G.resolution, index)
    clean = f(x)
    gen = torch.Generator().manual_seed(args.seed * 100_003 + index)
    return x, f, (clean + args.noise * torch.randn(clean.shape, generator=gen)).clamp(0, 1)


def map_schedule(args: argparse.Namespace, G: torch.nn.Module) -> MAPSchedule:
    card = (getattr(G, "card", None) or {}).get("schedule", {})
    return MAPSchedule(**{**card, **({"steps": args.map_steps} if args.map_steps else {})})


def done_images(results: Path, key: str) -> set[tuple[str, str, str, int]]:
    if not results.exists():
        return set()
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(r["data"], r["task"], r["method"], r["index"]) for r in records if r["key"] == key}


def sample_images(args: argparse.Namespace) -> None:
    """Stage 1: the posterior of every (task, image, method) not yet in OUT, one JSON line and draws file each."""
    torch.set_num_threads(args.threads)
    G = bp.load_generator(args.generator)
    key = settings_key(args)
    (args.out / "draws").mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = done_images(results, key)
    perceptual = None if args.perceptual == "none" else args.perceptual
    schedule = map_schedule(args, G)
    # Image by image, every task of an image in turn, so that a run stopped early covers all tasks.
    for index in range(args.first, args.first + args.num_images):
        for task in args.tasks:
            todo = [m for m in args.methods if (args.data, task, m, index) not in done]
            if not todo:
                continue
            x, f, y = observation(args, G, task, index)
            common = dict(params=args.preset, perceptual=perceptual, seed=args.seed, progress=args.progress)
            unpinned = unpinned_pixels(f, x.shape).expand_as(x)
            for name in todo:
                method, options = method_options(args, name)
                # Exactly what a user's call gives: the MAP (with the model resolved) inside sample_posterior.
                post = sample_posterior(y, f, G, method, args.num_samples, model=args.model, map_schedule=schedule,
                                        sigma_reach=args.sigma_reach, calibration=None, **common, **options)
                rec = post.map
                map_seconds = post.diagnostics["map_s"]
                seconds = sum(post.diagnostics[k] for k in ("inference_s", "images_s", "reach_s")
                              if k in post.diagnostics)
                draws = args.out / "draws" / f"{args.data}-{task}-{name}-{index:05d}-{key}.pt"
                with atomic_path(draws) as tmp:
                    torch.save({
                        "truth": x[0], "samples": post.samples[:, 0], "generator_samples": post.generator_samples[:, 0],
                        "map": rec.image[0], "y": y[0], "unpinned": unpinned[0],
                        "latents": {name: value[:, 0] for name, value in post.latents.items() if name != "w"},
                    }, tmp)
                record = {
                    "data": args.data, "task": task, "method": name, "index": index, "key": key,
                    "draws": draws.name, "seconds": seconds, "map_seconds": map_seconds,
                    "sigma_reach": post.sigma_reach, "unpinned_fraction": float(unpinned.float().mean()),
                    "settings": post.settings,
                }
                if "sigma_pixel" in post.latents:
                    record["sigma_pixel"] = float(post.latents["sigma_pixel"].mean())
                if method in ("nuts", "hmc"):
                    d = post.diagnostics
                    record["mcmc"] = {k: d[k] for k in ("max_r_hat", "min_ess_bulk", "divergence_fraction")}
                with results.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
                print(f"{args.data} {task} {name} image {index}: {seconds:.1f} s (MAP {map_seconds:.1f} s)", flush=True)


def load_group(args: argparse.Namespace, key: str, data: str | None = None,
               wanted: range | None = None) -> dict[tuple[str, str], list[dict]]:
    """The recorded images of this split (``data``, default ``args.data``) and settings, with their
    draws: (task, method) -> records."""
    results = args.out / "results.jsonl"
    data = data or args.data
    wanted = wanted if wanted is not None else range(args.first, args.first + args.num_images)
    groups: dict[tuple[str, str], list[dict]] = {}
    for line in results.read_text().splitlines() if results.exists() else []:
        record = json.loads(line)
        if (record["key"] != key or record["data"] != data or record["task"] not in args.tasks
                or record["method"] not in args.methods or record["index"] not in wanted):
            continue
        record.update(torch.load(args.out / "draws" / record["draws"]))
        groups.setdefault((record["task"], record["method"]), []).append(record)
    return groups


def region_masks(record: dict) -> dict[str, torch.Tensor | None]:
    unpinned = record["unpinned"].bool()
    return {"all": torch.ones_like(unpinned), "unpinned": unpinned if unpinned.any() else None,
            "pinned": ~unpinned if (~unpinned).any() else None}


def average(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def evaluate(records: list[dict], seed: int = 0) -> dict:
    """The report of one (task, method) from its images' draws (module notes)."""
    gen = torch.Generator().manual_seed(seed)
    per_region: dict[str, dict] = {r: {"interval": {p: [] for p in LEVELS}, "rank": {p: [] for p in CURVE_LEVELS},
                                       "width90": []} for r in REGIONS}
    pooled_std, pooled_error, pooled_inside = [], [], []
    image_covered = []
    for record in records:
        samples, truth = record["samples"][:, None], record["truth"][None]
        u = probability_integral_transform(samples, truth, gen)[0]
        lower, upper = credible_interval(samples, 0.9)
        std = samples.std(0)[0]
        error = (samples.mean(0)[0] - truth[0]).abs()
        for region, mask in region_masks(record).items():
            if mask is None:
                continue
            store = per_region[region]
            for level, value in interval_coverage(samples, truth, LEVELS, mask=mask[None]).items():
                store["interval"][level].append(value)
            for level in CURVE_LEVELS:
                store["rank"][level].append(float(((u - 0.5).abs() <= level / 2)[mask].float().mean()))
            store["width90"].append((upper - lower)[0][mask])
        hole = region_masks(record)["unpinned"]
        if hole is not None:
            pooled_std.append(std[hole])
            pooled_error.append(error[hole])
            pooled_inside.append(((lower[0] <= truth[0]) & (truth[0] <= upper[0]))[hole])
        image_covered.append(image_level_coverage(samples, truth, IMAGE_LEVELS)[0])
    out: dict = {"images": len(records), "regions": {}}
    for region, store in per_region.items():
        if not store["width90"]:
            continue
        out["regions"][region] = {
            "interval": {str(p): average(v) for p, v in store["interval"].items()},
            "rank": {str(p): average(v) for p, v in store["rank"].items()},
            "median_width90": float(torch.cat(store["width90"]).median()),
        }
    if pooled_std:
        std, error, inside = torch.cat(pooled_std), torch.cat(pooled_error), torch.cat(pooled_inside)
        out["spearman_unpinned"] = spearman_std_error(std, error)
        edges = torch.quantile(std.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).float()
        quartile = torch.bucketize(std, edges)
        out["quartiles"] = [
            {"mean_std": float(std[quartile == q].mean()), "mean_error": float(error[quartile == q].mean()),
             "cover90": float(inside[quartile == q].float().mean())}
            for q in range(4) if (quartile == q).any()
        ]
    out["image_level"] = {str(p): float(v) for p, v in zip(IMAGE_LEVELS, torch.stack(image_covered).float().mean(0))}
    out["psnr_mean"] = average([float(psnr(r["samples"].mean(0)[None], r["truth"][None])[0]) for r in records])
    out["psnr_map"] = average([float(psnr(r["map"][None], r["truth"][None])[0]) for r in records])
    out["seconds_per_image"] = average([r["seconds"] for r in records])
    if "sigma_pixel" in records[0]:
        out["sigma_pixel_mean"] = average([r["sigma_pixel"] for r in records])
    return out


def family(task: str) -> str:
    """The task family a calibration is made for (``conformal.task_family``): every mask is "inpaint"."""
    return "inpaint" if task.startswith("inpaint") else task


def fit_calibrations(records: list[dict], prior: str, cells: int = conformal.CELLS
                     ) -> tuple[conformal.Calibration, conformal.Calibration]:
    """The calibration of the std-scaled intervals, as ``brgm calibrate`` fits it on these posteriors (for
    the prior's fingerprint and the settings the posteriors recorded), and that of constant-width ones."""
    tasks = sorted({r["task"] for r in records}, key=lambda t: TASKS.index(t) if t in TASKS else len(TASKS))
    indices = sorted({r["index"] for r in records})
    data = (f"{len(records)} Fashion-MNIST {records[0]['data']} images {indices[0]}-{indices[-1]} "
            f"({', '.join(tasks)}; benchmarks/calibration.py)")
    fitted = []
    for scale in (None, torch.ones(())):
        scores = [conformal.image_scores(r["samples"], r["truth"], r["unpinned"], scale) for r in records]
        fitted.append(conformal.fit(scores, family(records[0]["task"]), prior, records[0]["settings"],
                                    records[0]["samples"].shape[0], data=data, cells=cells))
    return fitted[0], fitted[1]


def evaluate_calibrated(records: list[dict], calibration: conformal.Calibration,
                        constant: conformal.Calibration) -> dict:
    """Coverage, widths and the image-level curve of the calibrated intervals on (test) records, and the
    median width of constant-width intervals calibrated on the same images (module notes)."""
    per_region = {r: {"cover": {p: [] for p in CURVE_LEVELS}, "width90": [], "constant90": [], "constant_cover90": []}
                  for r in REGIONS}
    image_covered, pooled_half, pooled_error = [], [], []
    cells = len(calibration.edges.get("unpinned", ())) + 1
    by_cell = {"scores": [[] for _ in range(cells)], "inside": [[] for _ in range(cells)]}
    for record in records:
        samples, truth, unpinned = record["samples"], record["truth"], record["unpinned"].bool()
        centre, std = samples.mean(0), samples.std(0)
        bounds = {p: calibration.interval(centre, std, unpinned, p) for p in CURVE_LEVELS}
        scores = conformal.image_scores(samples, truth, unpinned)
        hole = region_masks(record)["unpinned"]
        if hole is not None:  # the calibrated 90% interval's width (lambda(cell) s, clipped): the map a user is shown
            pooled_half.append((bounds[0.9][1] - bounds[0.9][0])[hole])
            pooled_error.append((centre - truth).abs()[hole])
            # Per cell of the mean (unpinned): |x - m| / s and whether the calibrated 90% interval holds x.
            cell = calibration.cell(scores.means["unpinned"], "unpinned")
            inside = ((bounds[0.9][0] <= truth) & (truth <= bounds[0.9][1]))[hole]
            for k in range(cells):
                by_cell["scores"][k].append(scores.pixels["unpinned"][cell == k])
                by_cell["inside"][k].append(inside[cell == k])
        flat = constant.interval(centre, torch.ones_like(std), unpinned, 0.9)
        for region, mask in region_masks(record).items():
            if mask is None:
                continue
            store = per_region[region]
            for p, (lower, upper) in bounds.items():
                store["cover"][p].append(float(((lower <= truth) & (truth <= upper))[mask].float().mean()))
            store["width90"].append((bounds[0.9][1] - bounds[0.9][0])[mask])
            store["constant90"].append((flat[1] - flat[0])[mask])
            store["constant_cover90"].append(float(((flat[0] <= truth) & (truth <= flat[1]))[mask].float().mean()))
        image_covered.append([scores.image <= calibration.image_scales[p] for p in IMAGE_LEVELS])
    out: dict = {"calibration_images": calibration.images, "regions": {}}
    for region, store in per_region.items():
        if store["width90"]:
            out["regions"][region] = {
                "cover": {str(p): average(v) for p, v in store["cover"].items()},  # LEVELS in the tables
                "median_width90": float(torch.cat(store["width90"]).median()),
                "mean_width90": float(torch.cat(store["width90"]).mean()),
                "constant_median_width90": float(torch.cat(store["constant90"]).median()),
                "constant_mean_width90": float(torch.cat(store["constant90"]).mean()),
                "constant_cover90": average(store["constant_cover90"]),
            }
    out["image_level"] = {str(p): average([float(c[k]) for c in image_covered]) for k, p in enumerate(IMAGE_LEVELS)}
    out["scales90"] = {region: calibration.scales[region][0.9] for region in conformal.REGIONS}
    total = sum(torch.cat(v).numel() for v in by_cell["scores"]) if pooled_half else 0
    out["cells"] = [
        {"share": torch.cat(scores).numel() / total, "q90_score": float(torch.cat(scores).quantile(0.9)),
         "cover90": float(torch.cat(inside).float().mean())}
        for scores, inside in zip(by_cell["scores"], by_cell["inside"], strict=True) if torch.cat(scores).numel()
    ] if total else []
    widths = torch.cat(pooled_half) if pooled_half else torch.zeros(0)
    if widths.unique().numel() > 1:  # not when every interval is [0, 1] (a level out of the calibration's reach)
        out["spearman_unpinned"] = spearman_std_error(widths, torch.cat(pooled_error))
    return out


def calibrated_tables(report: dict) -> str:
    lines = ["| task | method | region | calibration images | " + " | ".join(f"cover {p}" for p in LEVELS)
             + " | median / mean width 90% | constant width: cover 90%, median / mean width |",
             "|" + "---|" * (6 + len(LEVELS))]
    for (task, method), r in report.items():
        for region, v in r["regions"].items():
            lines.append(f"| {task} | {method} | {region} | {r['calibration_images']} | "
                         + " | ".join(f"{v['cover'][str(p)]:.3f}" for p in LEVELS)
                         + f" | {v['median_width90']:.3f} / {v['mean_width90']:.3f} | {v['constant_cover90']:.3f}, "
                         f"{v['constant_median_width90']:.3f} / {v['constant_mean_width90']:.3f} |")
    lines += ["", "| task | method | Spearman calibrated width vs error (unpinned) | lambda 90% per cell of the mean, unpinned ; pinned | " + " | ".join(f"image {p}" for p in IMAGE_LEVELS)
              + " |", "|" + "---|" * (4 + len(IMAGE_LEVELS))]
    for (task, method), r in report.items():
        scales = " ; ".join(", ".join(f"{v:.2f}" for v in cells) for cells in r["scales90"].values())
        lines.append(f"| {task} | {method} | {r.get('spearman_unpinned', float('nan')):.3f} | {scales} | "
                     + " | ".join(f"{r['image_level'][str(p)]:.2f}" for p in IMAGE_LEVELS) + " |")
    lines += ["", "| task | method | unpinned pixels per cell of the mean (lowest first): share, 90% quantile of "
              "abs(x - m) / s, calibrated 90% coverage |", "|---|---|---|"]
    for (task, method), r in report.items():
        cells = "; ".join(f"{c['share']:.2f}, {c['q90_score']:.2f}, {c['cover90']:.3f}" for c in r.get("cells", []))
        lines.append(f"| {task} | {method} | {cells} |")
    return "\n".join(lines)


def tables(report: dict) -> str:
    """Markdown tables of the report: coverage per region, widths and Spearman, quartiles, image level."""
    lines = ["| task | method | region | images | " + " | ".join(f"interval {p}" for p in LEVELS) + " | "
             + " | ".join(f"rank {p}" for p in LEVELS) + " | median width 90% |"]
    lines.append("|" + "---|" * (5 + 2 * len(LEVELS)))
    for (task, method), r in report.items():
        for region, values in r["regions"].items():
            lines.append(f"| {task} | {method} | {region} | {r['images']} | "
                         + " | ".join(f"{values['interval'][str(p)]:.3f}" for p in LEVELS) + " | "
                         + " | ".join(f"{values['rank'][str(p)]:.3f}" for p in LEVELS)
                         + f" | {values['median_width90']:.3f} |")
    lines += ["", "| task | method | Spearman std vs error (unpinned) | PSNR mean / MAP | sigma_pixel | s/image | "
              "90% coverage by std quartile (mean std, mean error) |", "|---|---|---|---|---|---|---|"]
    for (task, method), r in report.items():
        quartiles = "; ".join(f"{q['cover90']:.2f} ({q['mean_std']:.3f}, {q['mean_error']:.3f})"
                              for q in r.get("quartiles", []))
        sigma = f"{r['sigma_pixel_mean']:.4f}" if "sigma_pixel_mean" in r else "-"
        lines.append(f"| {task} | {method} | {r.get('spearman_unpinned', float('nan')):.3f} | "
                     f"{r['psnr_mean']:.2f} / {r['psnr_map']:.2f} | {sigma} | {r['seconds_per_image']:.1f} | "
                     f"{quartiles} |")
    lines += ["", "| task | method | " + " | ".join(f"image {p}" for p in IMAGE_LEVELS) + " |",
              "|" + "---|" * (2 + len(IMAGE_LEVELS))]
    for (task, method), r in report.items():
        lines.append(f"| {task} | {method} | " + " | ".join(f"{r['image_level'][str(p)]:.2f}" for p in IMAGE_LEVELS)
                     + " |")
    return "\n".join(lines)


def reliability_figure(report: dict, path: Path, calibrated: dict | None = None) -> None:
    """Nominal against rank coverage, unpinned and pinned pixels, one panel per task; with ``calibrated``
    (``evaluate_calibrated``'s reports), also the coverage of the calibrated intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({task for task, _ in report}, key=lambda t: TASKS.index(t) if t in TASKS else len(TASKS))
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        ax.plot([0, 1], [0, 1], color="0.7", lw=1)
        for (t, method), r in report.items():
            if t != task:
                continue
            for region, style in (("unpinned", "-"), ("pinned", "--")):
                if region in r["regions"]:
                    values = [r["regions"][region]["rank"][str(p)] for p in CURVE_LEVELS]
                    ax.plot(CURVE_LEVELS, values, style, marker=".", label=f"{method}, {region}")
                if region in (calibrated or {}).get((t, method), {}).get("regions", {}):
                    values = [calibrated[(t, method)]["regions"][region]["cover"][str(p)] for p in CURVE_LEVELS]
                    ax.plot(CURVE_LEVELS, values, style, marker="x", label=f"{method} calibrated, {region}")
        ax.set(title=task, xlabel="nominal level", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("fraction of true pixels inside")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not args.report_only:
        sample_images(args)
    groups = load_group(args, settings_key(args))
    order = {name: i for i, name in enumerate(args.tasks)}
    report = {k: evaluate(v, args.seed) for k, v in sorted(groups.items(), key=lambda kv: order[kv[0][0]])}
    print(tables(report))
    print(f"\n{args.data} images {args.first}-{args.first + args.num_images - 1}, generator {args.generator}, "
          f"model {args.model}, {args.num_samples} draws, settings {settings_key(args)}")
    keyed = {f"{task}/{method}": r for (task, method), r in report.items()}
    calibrated: dict = {}
    if args.calibrate_on:
        first, count = (int(v) for v in args.calibrate_on.split(":"))
        val_args = argparse.Namespace(**{**vars(args), "data": "val"})
        val = load_group(args, settings_key(val_args), "val", range(first, first + count))
        prior = conformal.fingerprint(bp.load_generator(args.generator))
        fitted = {}
        for (task, method), records in val.items():
            fitted.setdefault((family(task), method), []).extend(records)
        fitted = {key: fit_calibrations(pool, prior, args.cells) for key, pool in fitted.items()}
        calibrated = {(task, method): evaluate_calibrated(groups[(task, method)], *fitted[(family(task), method)])
                      for task, method in report if (family(task), method) in fitted}
        print("\nCalibrated on validation images " + args.calibrate_on + " (per task family):\n"
              + calibrated_tables(calibrated))
        for (task, method), r in calibrated.items():
            keyed[f"{task}/{method}"]["calibrated"] = r
        if args.save_calibration is not None:
            for calibration, _ in fitted.values():
                conformal.save_calibration(args.save_calibration, calibration)
                print(f"Saved the {calibration.task} calibration ({calibration.images} images) to {args.save_calibration}")
    if args.figure is not None and report:
        reliability_figure(report, args.figure, calibrated)
    if args.json is not None:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(keyed, indent=2) + "\n")
    return keyed


if __name__ == "__main__":
    main(sys.argv[1:])
