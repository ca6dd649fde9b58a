"""The mode search and the mixture posterior against the single start, on Fashion-MNIST images (validation to tune).

    python benchmarks/mode_search.py --split val --images 0-19 --tasks superres-x8,superres-x4,inpaint \
        --variants map-single,map-search,mean-laplace,mean-svi,mean-svi-mapping --json out.json

Each image is corrupted as ``brgm evaluate`` corrupts it (``evaluation.superres_setting`` and
``inpaint_setting``: bicubic downsampling; the seven mask kinds in turn over the dataset index; ``box``
the centre box alone, ``blur`` a Gaussian blur of width 1 pixel, ``blur-down-x2`` that blur then
bicubic x2), y kept as 8-bit (as the PNG inputs are). Variants (every option as ``bp.reconstruct`` and
``bp.sample_posterior`` take it; the rest are their defaults):

    map-single        bp.reconstruct(search=None): today's single start from w_avg
    map-single-G      its G(w*) (the image before the reach's conditional mean)
    map-search        bp.reconstruct(): the mode of highest posterior density the search finds
    map-search-G      its G(w*)
    map-pruneN        bp.reconstruct(search=SearchSettings(prune_at=N / 150)): the search, each image's best
                      mode alone after N of the card's 150 refinement steps (map-search: prune_at=None,
                      every mode refined to the end, unless --search says otherwise)
    mean-laplace      bp.sample_posterior(method="laplace"): the mixture of Laplace approximations
    mean-svi          bp.sample_posterior(method="svi"): the mixture of SVI guides
    mean-laplace-mapping, mean-svi-mapping   the same with model="mapping" (G's own prior)
    modes-...         for a mean-... variant, the weighted mean of its modes' images (no spread within a mode)

For every variant and image: the fmnist-eval distance and class, PSNR, ||f(x) - y|| and seconds;
for the posteriors also the raw 90% coverage of the unpinned pixels (``metrics.interval_coverage``
of the posterior's own interval; every pixel where f pins them all, as a mild blur does) and the
Spearman correlation of the std with |error| there. The
table prints means per task and variant; ``--json`` keeps every per-image figure.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

import brgm_pyro as bp
from brgm_pyro import evaluation, metrics
from brgm_pyro.card import PriorCard
from brgm_pyro.fmnist.evaluator import FMNISTEval
from brgm_pyro.forward import Blur
from brgm_pyro.search import SearchSettings
from brgm_pyro.uncertainty.leverage import unpinned_pixels

TASKS = {
    "superres-x8": lambda: evaluation.superres_setting(8),
    "superres-x4": lambda: evaluation.superres_setting(4),
    "superres-x2": lambda: evaluation.superres_setting(2),
    "inpaint": lambda: evaluation.inpaint_setting(),
    "box": lambda: evaluation.inpaint_setting(("centre-box",)),
    "free-form": lambda: evaluation.inpaint_setting(("free-form",)),
    "blur": lambda: evaluation.Setting("superres", "Blur.gaussian(1.0)", lambda names: Blur.gaussian(1.0), 0.0),
    "blur-down-x2": lambda: evaluation.superres_setting(2, blur=1.0),
}
MEANS = {
    "mean-laplace": {"method": "laplace"},
    "mean-svi": {"method": "svi"},
    "mean-laplace-mapping": {"method": "laplace", "model": "mapping"},
    "mean-svi-mapping": {"method": "svi", "model": "mapping"},
}


def _indices(text: str) -> list[int]:
    if "-" in text:
        first, last = (int(part) for part in text.split("-"))
        return list(range(first, last + 1))
    return [int(part) for part in text.split(",")]


def _spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() < 3:
        return float("nan")
    rank_a, rank_b = a.argsort().argsort().double(), b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([rank_a, rank_b]))[0, 1])


def run(args: argparse.Namespace) -> dict:
    G = bp.load_generator(args.generator)
    evaluator = FMNISTEval()
    x_all, labels, names = evaluation.split_images(args.split, _indices(args.images), G.resolution)
    search = SearchSettings(**json.loads(args.search)) if args.search else SearchSettings(prune_at=None)
    records: list[dict] = []
    for task in args.tasks.split(","):
        setting = TASKS[task]()
        for i, name in enumerate(names):
            x = x_all[i : i + 1]
            f = setting.corruption([name])
            y = (f(x).clamp(0, 1) * 255).round() / 255
            observed = f.observed(x.shape)
            unpinned = unpinned_pixels(f, x.shape).expand_as(x)
            if not unpinned.any():  # f pins every pixel (a mild blur): score them all
                unpinned = torch.ones_like(unpinned)
            outputs: dict[str, torch.Tensor] = {}
            seconds: dict[str, float] = {}
            extra: dict[str, dict] = {}
            for variant in args.variants.split(","):
                began = time.perf_counter()
                if variant in ("map-single", "map-single-G"):
                    rec = bp.reconstruct(y, f, G, search=None, steps=args.steps, seed=args.seed, progress=False)
                    outputs["map-single"], outputs["map-single-G"] = rec.image, rec.generator_image
                elif variant in ("map-search", "map-search-G"):
                    rec = bp.reconstruct(y, f, G, search=search, steps=args.steps, seed=args.seed, progress=False)
                    outputs["map-search"], outputs["map-search-G"] = rec.image, rec.generator_image
                    extra["map-search"] = {"search_s": rec.modes.seconds}
                elif variant.startswith("map-prune"):  # map-pruneN: N steps of the card's 150
                    pruned = replace(search, prune_at=int(variant.removeprefix("map-prune")) / 150)
                    rec = bp.reconstruct(y, f, G, search=pruned, steps=args.steps, seed=args.seed, progress=False)
                    outputs[variant] = rec.image
                    extra[variant] = {"search_s": rec.modes.seconds, "best": int(rec.modes.best[0])}
                elif variant in MEANS:
                    post = bp.sample_posterior(y, f, G, num_samples=args.num_samples, search=search,
                                               map_schedule=replace(PriorCard.of(G).schedule, steps=args.steps)
                                               if args.steps else None, seed=args.seed, progress=False,
                                               calibration=None, **MEANS[variant])
                    outputs[variant] = post.mean
                    weights = post.modes.weights[:, 0]
                    outputs[f"modes-{variant[5:]}"] = (weights[:, None, None, None] * post.modes.images[:, 0]).sum(0)[None]
                    error = (post.mean - x).abs()
                    hole = unpinned.bool()
                    extra[variant] = {
                        "coverage90": metrics.interval_coverage(post.samples, x, (0.9,), mask=unpinned.float())[0.9],
                        "spearman_std_error": _spearman(post.std[hole], error[hole]),
                        "weights": weights.tolist(),
                        "diagnostics": {k: v for k, v in post.diagnostics.items() if isinstance(v, (int, float))},
                    }
                else:
                    raise SystemExit(f"unknown variant {variant!r}")
                seconds[variant] = time.perf_counter() - began
            for variant, image in outputs.items():
                if variant not in args.variants.split(",") and not variant.startswith("modes-"):
                    continue
                with torch.no_grad():
                    record = {
                        "task": task, "image": name, "variant": variant,
                        "distance": float(evaluator.distance(image, x)[0]),
                        "class": float(evaluator.predict(image)[0] == labels[i]),
                        "psnr": float(metrics.psnr(image, x)[0]),
                        "consistency": float((((f(image) - y) * observed).square().sum() / observed.expand_as(y).sum()).sqrt()),
                        "seconds": seconds.get(variant, float("nan")),
                        **extra.get(variant, {}),
                    }
                records.append(record)
            if args.json:  # after every image, so that a stopped run keeps what it measured
                args.json.write_text(json.dumps({"args": vars(args), "records": records}, indent=1, default=str))
            if not args.quiet:
                print(task, name, {r["variant"]: round(r["psnr"], 2) for r in records if r["image"] == name and r["task"] == task},
                      flush=True)
    return {"args": vars(args), "records": records}


def _mean(group: list[dict], name: str) -> str:
    values = [r[name] for r in group if name in r and r[name] == r[name]]
    return f"{sum(values) / len(values):.3f}" if values else "-"


def table(result: dict) -> str:
    rows = ["| task | variant | images | distance | class | PSNR (dB) | ||f(x) - y|| | coverage90 | Spearman | s / image |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["task"], r["variant"]) for r in result["records"]}, key=lambda k: (k[0], k[1]))
    for task, variant in keys:
        group = [r for r in result["records"] if r["task"] == task and r["variant"] == variant]
        cells = [_mean(group, name) for name in ("distance", "class", "psnr", "consistency", "coverage90",
                                                   "spearman_std_error", "seconds")]
        rows.append(f"| {task} | {variant} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    parser.add_argument("--images", default="0-7", help="dataset indices: FIRST-LAST or a comma list")
    parser.add_argument("--tasks", default="superres-x8,superres-x4,inpaint")
    parser.add_argument("--variants", default="map-single,map-search,mean-laplace,mean-svi-mapping")
    parser.add_argument("--search", default="", help="SearchSettings as JSON, e.g. '{\"modes\": 8}'")
    parser.add_argument("--steps", type=int, default=None, help="MAP steps (default: the card's)")
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = run(args)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
