"""The settings of the deepinv competitors (dps, diffpir, tv, dip), chosen on validation images.

Each method runs over a small grid of its options (GRID) through ``brgm_pyro.evaluation`` on the same
validation images (never the test split) for each task, exactly as ``brgm evaluate`` would run it; the
script prints one table per task and, per method, the options of lowest mean fmnist-eval distance over
the tasks (the comparison's headline metric), with their PSNR and seconds per image.

    python benchmarks/tune_competitors.py --methods tv,dps,diffpir --images 14 --out runs/tune
    python benchmarks/tune_competitors.py --methods dip --images 7 --out runs/tune     (DIP is costly)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import brgm_pyro as bp
from brgm_pyro import evaluation, io
from brgm_pyro.fmnist import FMNISTEval

TASKS = {
    "superres-x8": lambda size: evaluation.superres_setting(8),
    "superres-x4": lambda size: evaluation.superres_setting(4),
    "inpaint": lambda size: evaluation.inpaint_setting(size=size),
}
# Method -> the option sets tried.
GRID: dict[str, list[dict[str, Any]]] = {
    "tv": [{"lambda_reg": value, "iterations": steps} for value in (0.003, 0.01, 0.03, 0.1) for steps in (200, 1000)],
    "dip": [{"iterations": value} for value in (250, 1000, 2500)],
    "dps": [{"steps": 100, "weight": value} for value in (30.0, 100.0, 300.0, 1000.0)],
    "diffpir": [{"steps": 100, "sigma": sigma, "zeta": zeta} for sigma in (0.005, 0.02, 0.05) for zeta in (0.3, 0.8)],
}


def label(method: str, options: dict[str, Any]) -> str:
    """The row's name: the method and its options, e.g. dps-steps=100-weight=1.0."""
    return "-".join([method, *(f"{key}={value}" for key, value in options.items())])


def parse_grid(text: str) -> list[dict[str, Any]]:
    """A grid given on the command line as JSON, e.g. '[{"steps": 50, "weight": 1.0}]'."""
    grid = json.loads(text)
    if not isinstance(grid, list) or not all(isinstance(options, dict) for options in grid):
        raise argparse.ArgumentTypeError(f"expected a JSON list of option objects, got {text!r}")
    return grid


def weights(method: str, denoiser: Path | None) -> dict[str, str]:
    """The ``weights`` option of the diffusion samplers when another denoiser is asked for."""
    return {"weights": str(denoiser)} if denoiser is not None and method in ("dps", "diffpir") else {}


def best(tables: dict[str, dict], method: str, grid: list[dict[str, Any]]) -> dict[str, Any]:
    """The options of ``method`` with the lowest fmnist-eval distance averaged over the tasks."""
    rows = []
    for options in grid:
        name = label(method, options)
        means = [table[name]["mean"] for table in tables.values()]
        rows.append({"options": options,
                     "distance": sum(m["fmnist_eval_distance"] for m in means) / len(means),
                     "psnr": sum(m["psnr"] for m in means) / len(means),
                     "seconds_per_image": sum(m["seconds_per_image"] for m in means) / len(means)})
    return min(rows, key=lambda row: row["distance"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32", help="fixes the image size")
    parser.add_argument("--methods", default="tv,dps,diffpir,dip")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--images", type=int, default=14, help="validation images (the first N)")
    parser.add_argument("--grid", type=parse_grid, default=None,
                        help="option sets instead of the script's grid (one method only), as JSON")
    parser.add_argument("--denoiser", type=Path, default=None,
                        help="the diffusion denoiser of dps and diffpir (default: the shipped one)")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("runs/tune"))
    parser.add_argument("--json", type=Path, default=None, help="write the chosen options and their figures here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    methods = args.methods.split(",")
    if args.grid is not None and len(methods) != 1:
        parser.error("--grid replaces the grid of one method; pass one name to --methods")
    grids = {method: args.grid if args.grid is not None else GRID[method] for method in methods}
    G = bp.load_generator(args.generator).requires_grad_(False)
    truth, labels, names = evaluation.split_images("val", range(args.images), G.resolution)
    evaluator = FMNISTEval()
    tables = {}
    for task in args.tasks.split(","):
        setting = TASKS[task](G.resolution)
        rows = [evaluation.Method(label(method, options), method, {**options, **weights(method, args.denoiser)})
                for method, grid in grids.items() for options in grid]
        result = evaluation.evaluate(setting, rows, args.out / task, G, truth=truth, names=names, labels=labels,
                                     evaluator=evaluator, batch_size=args.batch_size, progress=not args.quiet,
                                     report="tuning")
        tables[task] = result["table"]
        print(f"## {task}: {setting.description}, {args.images} validation images\n")
        print(evaluation.markdown_table(result["table"]))
    chosen = {method: best(tables, method, grid) for method, grid in grids.items()}
    print("| method | chosen options | mean distance | mean PSNR (dB) | s / image |\n|---|---|---|---|---|")
    for method, row in chosen.items():
        print(f"| {method} | {json.dumps(row['options'])} | {row['distance']:.4f} | {row['psnr']:.2f} | "
              f"{row['seconds_per_image']:.2f} |")
    if args.json is not None:
        io.write_json(args.json, {"images": args.images, "tasks": args.tasks.split(","), "chosen": chosen})


if __name__ == "__main__":
    main()
