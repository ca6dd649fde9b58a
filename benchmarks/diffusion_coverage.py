"""How often the diffusion samplers' draws cover the truth: DPS and DiffPIR's per-pixel intervals on the unpinned pixels.

For each task and sampler, ``--draws`` draws per image (``brgm_pyro.baselines.diffusion.posterior_draws``)
of the first ``--num-images`` images of a Fashion-MNIST split, on the inputs that ``brgm evaluate``
simulates for that task (``brgm_pyro.evaluation.simulate``: the same 8-bit y, written into
``OUT/TASK/inputs``). Per image, over its **unpinned** pixels (those the data cannot pin:
``brgm_pyro.uncertainty.leverage``; every pixel of a super-resolution, the hole of an inpainting):

* ``interval p``: the fraction of true pixels inside the central interval of probability p of the draws
  (``brgm_pyro.metrics.credible_interval``, ranks (1 -+ p) / 2 (S + 1): with S = 19 draws the 90%
  interval is [min, max] of the draws, which an exchangeable truth falls in with probability exactly 0.9);
* the median width of the 90% interval and the mean per-pixel std of the draws;

and, for the mean of the draws (the posterior mean), PSNR, the fmnist-eval distance and the class
fidelity. Figures are averaged over images. The draws are saved per image (``OUT/TASK/SAMPLER/NAME.pt``)
and skipped when the command runs again, so a stopped run resumes; the report is computed from them.

    python benchmarks/diffusion_coverage.py --num-images 20 --draws 19 --options runs/tune/chosen.json \
        --out runs/coverage --json runs/coverage.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from brgm_pyro import evaluation, io, metrics
from brgm_pyro.baselines.diffusion import SAMPLERS, posterior_draws
from brgm_pyro.fmnist import FMNISTEval
from brgm_pyro.io import atomic_path
from brgm_pyro.uncertainty.leverage import unpinned_pixels

TASKS = {
    "superres-x8": lambda size: evaluation.superres_setting(8),
    "superres-x4": lambda size: evaluation.superres_setting(4),
    "inpaint": lambda size: evaluation.inpaint_setting(size=size),
}
LEVELS = (0.5, 0.9)
SIZE = 32


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("test", "val"), default="test", help="Fashion-MNIST split (default test)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--num-images", type=int, default=20, help="the first N images of the split")
    parser.add_argument("--draws", type=int, default=19)
    parser.add_argument("--options", type=options_table, default={},
                        help="the samplers' options, JSON {sampler: {task: options}} or {sampler: options}, inline or "
                        "a file (default: the samplers' defaults)")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="the seed of the first draw (and of simulated noise)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def options_table(text: str) -> dict:
    """JSON given inline ('{"dps": {"steps": 50}}') or as the path of a file holding it."""
    return json.loads(text if text.lstrip().startswith("{") else Path(text).read_text())


def sampler_options(table: dict, sampler: str, task: str) -> dict[str, Any]:
    """The options of ``sampler`` for ``task`` from a table {sampler: {task: options}} or {sampler: options}."""
    entry = table.get(sampler, {})
    return dict(entry.get(task, {})) if any(key in TASKS for key in entry) else dict(entry)


def task_images(args: argparse.Namespace, task: str, setting: evaluation.Setting):
    """The names, inputs y, 8-bit truths and labels of the task's images, simulated as ``brgm evaluate`` does."""
    truth, labels, names = evaluation.split_images(args.split, range(args.num_images), SIZE)
    folder = args.out / task
    evaluation.simulate(setting, truth, names, folder, args.seed)
    y = io.read_images([folder / "inputs" / f"{name}.png" for name in names])
    truth = io.read_images([folder / "truth" / f"{name}.png" for name in names])
    return names, y, truth, labels


def draw_images(args: argparse.Namespace, task: str, sampler: str, options: dict, names: list[str], y: torch.Tensor,
                setting: evaluation.Setting) -> None:
    """Save the draws of every image that has none yet, in batches."""
    folder = args.out / task / sampler
    folder.mkdir(parents=True, exist_ok=True)
    record = {"draws": args.draws, "seed": args.seed, "options": options}
    previous = folder / "record.json"
    if previous.exists() and json.loads(previous.read_text()) != record:
        raise SystemExit(f"{folder} holds draws made with {previous.read_text()}, not {record}; choose another --out.")
    io.write_json(previous, record)
    todo = [i for i, name in enumerate(names) if not (folder / f"{name}.pt").exists()]
    for start in range(0, len(todo), args.batch_size):
        rows = todo[start : start + args.batch_size]
        f = setting.corruption([names[i] for i in rows])
        began = time.perf_counter()
        draws = posterior_draws(y[rows], f, None, sampler, args.draws, args.seed, **options)
        seconds = (time.perf_counter() - began) / len(rows)
        for column, i in enumerate(rows):
            with atomic_path(folder / f"{names[i]}.pt") as tmp:
                torch.save({"draws": draws[:, column].clone(), "seconds": seconds}, tmp)
        print(f"{task} {sampler}: {start + len(rows)}/{len(todo)} images, {seconds:.1f} s per image", flush=True)


def report(args: argparse.Namespace, task: str, sampler: str, names: list[str], truth: torch.Tensor,
           labels: torch.Tensor, setting: evaluation.Setting, evaluator: FMNISTEval) -> dict:
    """The figures of one task and sampler from its saved draws (module notes)."""
    folder = args.out / task / sampler
    saved = [torch.load(folder / f"{name}.pt", weights_only=True) for name in names]
    draws = torch.stack([record["draws"] for record in saved], dim=1)  # (S, N, C, H, W)
    f = setting.corruption(names)
    unpinned = unpinned_pixels(f, truth.shape).expand_as(truth)
    lower, upper = metrics.credible_interval(draws, 0.9)
    covered = {level: [] for level in LEVELS}
    widths = []
    for i in range(len(names)):
        coverage = metrics.interval_coverage(draws[:, i : i + 1], truth[i : i + 1], LEVELS, mask=unpinned[i : i + 1])
        for level in LEVELS:
            covered[level].append(coverage[level])
        widths.append((upper - lower)[i][unpinned[i]])
    mean = draws.mean(0)
    with torch.no_grad():
        distance = evaluator.distance(mean, truth)
        fidelity = (evaluator.predict(mean) == labels).float()
    return {
        "images": len(names),
        "draws": draws.shape[0],
        "interval": {str(level): sum(values) / len(values) for level, values in covered.items()},
        "median_width90": float(torch.cat(widths).median()),
        "mean_std": float(draws.std(0)[unpinned].mean()),
        "psnr_mean": float(metrics.psnr(mean, truth).mean()),
        "distance_mean": float(distance.mean()),
        "class_fidelity_mean": float(fidelity.mean()),
        "seconds_per_image": sum(record["seconds"] for record in saved) / len(saved),
    }


def markdown(results: dict) -> str:
    lines = ["| task | sampler | images | draws | interval 0.5 | interval 0.9 | median width 90% | mean std | "
             "PSNR of the mean (dB) | distance of the mean | class fidelity of the mean | s / image (all draws) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        task, sampler = key.split("/")
        lines.append(f"| {task} | {sampler} | {r['images']} | {r['draws']} | {r['interval']['0.5']:.3f} | "
                     f"{r['interval']['0.9']:.3f} | {r['median_width90']:.3f} | {r['mean_std']:.3f} | "
                     f"{r['psnr_mean']:.2f} | {r['distance_mean']:.4f} | {r['class_fidelity_mean']:.2f} | "
                     f"{r['seconds_per_image']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    evaluator = FMNISTEval()
    results = {}
    for task in args.tasks.split(","):
        setting = TASKS[task](SIZE)
        names, y, truth, labels = task_images(args, task, setting)
        for sampler in args.samplers.split(","):
            options = sampler_options(args.options, sampler, task)
            draw_images(args, task, sampler, options, names, y, setting)
            results[f"{task}/{sampler}"] = report(args, task, sampler, names, truth, labels, setting, evaluator)
    print(markdown(results))
    if args.json is not None:
        io.write_json(args.json, results)


if __name__ == "__main__":
    main()
