"""Choose the default reconstruction settings of a prior on the validation split.

Coordinate search from a starting point over sigma_pixel, sigma_percept (None: no perceptual
term), kappa and the learning rate, on validation images for two tasks (super-resolution x4 from
8x8, inpainting with the centre 16x16 missing). Each setting is scored by the mean ``fmnist-eval``
distance to the truth over both tasks (lower is better); PSNR and class fidelity are reported
beside it. The test split is never used here.

    python benchmarks/tune_defaults.py --generator fashion-mnist-32 --images 16 --steps 150 --json tuning.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

import torch

import brgm_pyro as bp
from brgm_pyro import io
from brgm_pyro.demo import evaluate_outputs
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.fmnist.evaluator import FMNISTEval

GRID = {
    "sigma_pixel": [0.005, 0.01, 0.02, 0.05],
    "sigma_percept": [None, 0.02, 0.05, 0.2, 1.0],
    "kappa": [0.0, 0.5, 2.0],
    "lr": [0.03, 0.1],
}


def evaluate(setting: dict, G, truth, labels, evaluator, steps: int) -> dict:
    tasks = {
        "superres-x4": bp.forward.Downsample(4, "bicubic"),
        "inpaint-center": bp.forward.Mask.center_box(G.resolution, G.resolution // 2),
    }
    params = bp.BRGMParams(
        sigma_pixel=setting["sigma_pixel"], sigma_percept=setting["sigma_percept"] or 1.0, kappa=setting["kappa"]
    )
    perceptual = "fmnist" if setting["sigma_percept"] else None
    rows = {}
    for name, f in tasks.items():
        y = f(truth).clamp(0, 1)
        rec = bp.reconstruct(y, f, G, params=params, perceptual=perceptual, steps=steps, lr=setting["lr"],
                             progress=False)
        rows[name] = evaluate_outputs(rec.image, truth, labels, evaluator)
    score = sum(r["fmnist_eval_distance"] for r in rows.values()) / len(rows)
    return {"setting": dict(setting), "score": score, "tasks": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="fashion-mnist-32")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=1, help="passes of the coordinate search")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    G = bp.load_generator(args.generator)
    evaluator = FMNISTEval()
    val, labels = load_fashion_mnist("val")
    truth, labels = val[: args.images], labels[: args.images]
    current = {"sigma_pixel": 0.05, "sigma_percept": 0.3, "kappa": 0.5, "lr": 0.1}
    cache: dict[str, dict] = {}
    start = time.perf_counter()

    def run(setting: dict) -> dict:
        key = json.dumps(setting, sort_keys=True)
        if key not in cache:
            cache[key] = evaluate(setting, G, truth, labels, evaluator, args.steps)
            r = cache[key]
            print(f"{key}: score {r['score']:.4f}  " + "  ".join(
                f"{t}: psnr {v['psnr']:.2f} dist {v['fmnist_eval_distance']:.4f} class {v['class_fidelity']:.2f}"
                for t, v in r["tasks"].items()), flush=True)
        return cache[key]

    best = run(current)
    for _ in range(args.rounds):
        for name, values in GRID.items():
            for value in values:
                candidate = run({**current, name: value})
                if candidate["score"] < best["score"]:
                    best = candidate
            current = dict(best["setting"])
    s = best["setting"]
    result = {
        "images": args.images,
        "split": "val",
        "steps": args.steps,
        "criterion": "mean fmnist-eval distance over super-resolution x4 and centre inpainting",
        "seconds": round(time.perf_counter() - start, 1),
        "evaluated": list(cache.values()),
        "best": {
            "setting": s,
            "score": best["score"],
            "tasks": best["tasks"],
            "params": asdict(bp.BRGMParams(sigma_pixel=s["sigma_pixel"], sigma_percept=s["sigma_percept"] or 1.0,
                                           kappa=s["kappa"])),
            "perceptual": "fmnist" if s["sigma_percept"] else None,
            "schedule": {"steps": args.steps, "lr": s["lr"]},
        },
    }
    print("best:", json.dumps(result["best"], indent=2))
    if args.json:
        io.write_json(args.json, result)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
