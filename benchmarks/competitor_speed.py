"""Seconds per image of BRGM and the deepinv competitors, measured in one process on the same images.

``brgm evaluate`` records each method's wall time per image, but its runs happen at different times
on shared cores, so their ratios carry the load of the moment. Here every method (with its
registered defaults) reconstructs the same validation images of each task in one process, one
thread, one batch per task, and the script prints the CPU time (``time.process_time``, which
other processes' load hardly changes) and the wall time per image, and the ratio of each method's
CPU time to BRGM's.

    python benchmarks/competitor_speed.py --images 4 --json runs/speed.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import brgm_pyro as bp
from brgm_pyro import baselines, evaluation, io

TASKS = {
    "superres-x8": lambda size: evaluation.superres_setting(8),
    "superres-x4": lambda size: evaluation.superres_setting(4),
    "inpaint": lambda size: evaluation.inpaint_setting(size=size),
}
# The cheapest call of each method: a warm-up that loads its package and weights before the clock runs.
WARM_UP = {"brgm": {"steps": 1}, "dps": {"steps": 2}, "diffpir": {"steps": 2}, "tv": {"iterations": 1},
           "dip": {"iterations": 1}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--methods", default="brgm,dps,diffpir,tv,dip")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--images", type=int, default=4, help="validation images (the first N), one batch")
    parser.add_argument("--options", default="{}", help="JSON {method: options} to replace a method's defaults")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    torch.set_num_threads(1)
    options = json.loads(args.options)
    G = bp.load_generator(args.generator).requires_grad_(False)
    truth, _, names = evaluation.split_images("val", range(args.images), G.resolution)
    methods = args.methods.split(",")
    f = evaluation.superres_setting(8).corruption(names[:1])
    for method in methods:
        baselines.get(method)(f(truth[:1]).clamp(0, 1), f, G, **{**options.get(method, {}), **WARM_UP.get(method, {})})
    rows = {}
    for task in args.tasks.split(","):
        setting = TASKS[task](G.resolution)
        f = setting.corruption(names)
        y = f(truth).clamp(0, 1)
        for method in methods:
            cpu, wall = time.process_time(), time.perf_counter()
            baselines.get(method)(y, f, G, **options.get(method, {}))
            rows[f"{task}/{method}"] = {"cpu": (time.process_time() - cpu) / args.images,
                                        "wall": (time.perf_counter() - wall) / args.images}
    print(f"{args.images} validation images per task, one process, {torch.get_num_threads()} thread\n")
    print("| task | method | CPU s / image | wall s / image | CPU time / BRGM's |\n|---|---|---|---|---|")
    for key, row in rows.items():
        task, method = key.split("/")
        reference = rows.get(f"{task}/brgm")
        ratio = f"{row['cpu'] / reference['cpu']:.1f}" if reference else "-"
        print(f"| {task} | {method} | {row['cpu']:.2f} | {row['wall']:.2f} | {ratio} |")
    if args.json is not None:
        io.write_json(args.json, {"images": args.images, "rows": rows})


if __name__ == "__main__":
    main()
