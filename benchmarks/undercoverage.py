"""Why the posterior under-covers the pixels the data cannot pin: the prior's reach, several modes, the noise model.

Reads the draws that ``benchmarks/calibration.py`` recorded in ``--calibration-out`` (same split,
images, tasks and settings) and measures three candidate causes on the same images:

* ``reach``: the best G(w) for the truth itself (MAP with f = identity, as
  ``benchmarks/prior_quality.py`` measures ``sigma_reach``) leaves a residual r = x - G(w_id). Its
  RMS over the unpinned pixels of each task against the card's ``sigma_reach`` (one i.i.d. level for
  every pixel), by intensity of the truth, its spatial correlation at lags 1-4, and the rank
  coverage of the G(w) draws against the reachable image G(w_id) and against x;
* ``modes``: MAPs from ``--starts`` starting points (w_avg, then the mapping of random z): their
  final -log p and the RMS difference of their images from w_avg's over the unpinned pixels,
  against the posterior's std there; the default posterior from the best other start, and the
  rank coverage of the recorded default posterior, of that one and of the mixture of both;
* ``noise``: the posterior's sigma_pixel against the MAP's residual on the observed pixels, the
  residual's spatial correlation, and the rank coverage on observed pixels.

One JSON line per (analysis, task, image) in ``OUT/results.jsonl`` (resumable); ``--figure`` saves
the reach figure (residual maps, RMS by intensity, correlation by lag), ``--modes-figure`` the
MAPs of each start next to the truth and the posterior's std.

    python benchmarks/undercoverage.py --data test --num-images 8 --tasks inpaint-box,inpaint-free,superres-x4 \\
        --calibration-out runs/calibration --out runs/undercoverage --figure runs/reach.png
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch
from calibration import (
    TASKS,
    corruption,
    map_schedule,
    method_options,
    observation,
    settings_key,
    truth_image,
)
from calibration import parse_args as calibration_args

import brgm_pyro as bp
from brgm_pyro.card import PriorCard
from brgm_pyro.inference.map import MAPSchedule, run_map
from brgm_pyro.io import atomic_path
from brgm_pyro.metrics import probability_integral_transform
from brgm_pyro.models.variants import choose
from brgm_pyro.problem import frozen, prepare_problem
from brgm_pyro.reconstruct import ReconstructionResult, data_consistency
from brgm_pyro.sampling import sample_posterior
from brgm_pyro.stylegan2 import to_unit

ANALYSES = ("reach", "modes", "noise")
LAGS = (1, 2, 3, 4)
INTENSITY_BINS = ((0.0, 0.0), (0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--analyses", default=",".join(ANALYSES))
    parser.add_argument("--calibration-out", type=Path, default=Path("runs/calibration"))
    parser.add_argument("--out", type=Path, default=Path("runs/undercoverage"))
    parser.add_argument("--starts", type=int, default=6, help="MAP starting points of the modes analysis")
    parser.add_argument("--figure", type=Path, default=None, help="the reach figure (PNG)")
    parser.add_argument("--modes-figure", type=Path, default=None, help="the modes figure (PNG)")
    parser.add_argument("--json", type=Path, default=None)
    own, rest = parser.parse_known_args(argv)
    own.analyses = own.analyses.split(",")
    # The images, tasks and posterior settings are those of benchmarks/calibration.py.
    calibration = calibration_args(rest + ["--out", str(own.calibration_out)])
    return own, calibration


def correlation_by_lag(residual: torch.Tensor) -> dict[str, float]:
    """Correlation of r at pixel (i, j) with r at (i + d, j) and at (i, j + d), pooled: lag d -> value."""
    out = {}
    for lag in LAGS:
        a = torch.cat([residual[..., :-lag, :].flatten(), residual[..., :, :-lag].flatten()])
        b = torch.cat([residual[..., lag:, :].flatten(), residual[..., :, lag:].flatten()])
        out[str(lag)] = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    return out


def rank_cover90(samples: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> float:
    u = probability_integral_transform(samples[:, None], truth[None], gen)[0]
    return float(((u - 0.5).abs() <= 0.45)[mask].float().mean())


def identity_fits(G: torch.nn.Module, truth: torch.Tensor) -> torch.Tensor:
    """G(w_id) for each image: the MAP with f = identity, with ``benchmarks/prior_quality.py``'s settings."""
    params = bp.BRGMParams(sigma_pixel=0.02, sigma_percept=1.0, kappa=0.0)
    rec = bp.reconstruct(truth, bp.forward.Identity(), G, params=params, perceptual=None, steps=200, lr=0.05,
                         progress=False)
    return rec.image


def calibration_draws(cal: argparse.Namespace, task: str, index: int) -> dict:
    name = f"{cal.data}-{task}-{cal.methods[0]}-{index:05d}-{settings_key(cal)}.pt"
    path = cal.out / "draws" / name
    if not path.exists():
        raise SystemExit(f"{path} is missing: run benchmarks/calibration.py with the same arguments first.")
    return torch.load(path)


def reach(G: torch.nn.Module, cal: argparse.Namespace, indices: list[int]) -> list[dict]:
    truth = torch.cat([truth_image(cal, G, i) for i in indices])
    fits = identity_fits(G, truth)
    residual = truth - fits
    gen = torch.Generator().manual_seed(0)
    records = []
    for k, index in enumerate(indices):
        r = residual[k]
        record = {"index": index, "rms_all": float(r.square().mean().sqrt()),
                  "correlation": correlation_by_lag(r), "residual": r.tolist(), "fit": fits[k].tolist(),
                  "by_intensity": {}}
        x = truth[k]
        for low, high in INTENSITY_BINS:
            inside = (x == 0) if high == 0 else (x > low) & (x <= high)
            if inside.any():
                record["by_intensity"][f"{low}-{high}"] = [float(r[inside].square().sum()), int(inside.sum())]
        for task in cal.tasks:
            draws = calibration_draws(cal, task, index)
            hole = draws["unpinned"].bool()
            record[task] = {
                "rms_unpinned": float(r[hole].square().mean().sqrt()),
                "error_rms_unpinned": float((draws["samples"].mean(0) - x)[hole].square().mean().sqrt()),
                "std_rms_unpinned": float(draws["samples"].std(0)[hole].square().mean().sqrt()),
                "generator_std_rms_unpinned": float(draws["generator_samples"].std(0)[hole].square().mean().sqrt()),
                "cover90_generator_vs_fit": rank_cover90(draws["generator_samples"], fits[k], hole, gen),
                "cover90_generator_vs_truth": rank_cover90(draws["generator_samples"], x, hole, gen),
                "cover90_predictive_vs_truth": rank_cover90(draws["samples"], x, hole, gen),
            }
        records.append(record)
    return records


def map_from(G: torch.nn.Module, y: torch.Tensor, f: torch.nn.Module, model, init_w: torch.Tensor,
             schedule: MAPSchedule, cal: argparse.Namespace, reach: float | None) -> ReconstructionResult:
    """The MAP of p(w | y) started at ``init_w`` (``bp.reconstruct`` always starts at w_avg)."""
    problem = prepare_problem(y, f, G, cal.preset, None if cal.perceptual == "none" else cal.perceptual)
    problem = replace(problem, params=replace(problem.params, sigma_reach=reach or 0.0))
    with frozen(G):
        latents, losses = run_map(model.inferred, (), problem.model_kwargs(), init_w, schedule, progress=False)
        w = latents["w"]
        with torch.no_grad():
            image = to_unit(G.synthesis(w), clamp=True)
            y_rec = problem.forward(image)
    return ReconstructionResult(image=image, w=w, y=problem.y, y_reconstructed=y_rec, observed=problem.observed,
                                losses=losses, data_consistency=data_consistency(y_rec, problem.y, problem.observed),
                                params=problem.params, schedule=schedule)


def modes(G: torch.nn.Module, cal: argparse.Namespace, task: str, index: int, starts: int) -> dict:
    """MAPs from ``starts`` points (w_avg, the default start, then the mapping of random z), and the
    default posterior from the best other start, against the recorded default posterior."""
    x, f, y = observation(cal, G, task, index)
    x = x[0]
    clean_shape = (1, G.channels, G.resolution, G.resolution)
    model, reach, _ = choose(cal.model, cal.sigma_reach, f, PriorCard.of(G).sigma_reach, clean_shape)
    schedule = map_schedule(cal, G)
    gen = torch.Generator().manual_seed(7 + index)
    z = torch.randn(starts - 1, G.z_dim, generator=gen)
    with torch.no_grad():
        inits = [G.w_avg.expand(1, G.num_ws, G.w_dim).clone()] + [w[None] for w in G.mapping(z)]
    default = calibration_draws(cal, task, index)
    hole = default["unpinned"].bool()
    maps = [map_from(G, y, f, model, init_w, schedule, cal, reach) for init_w in inits]
    objective = [float(rec.losses["total"][-1, 0]) for rec in maps]
    best = min(range(1, starts), key=lambda k: objective[k])
    method, options = method_options(cal, cal.methods[0])
    perceptual = None if cal.perceptual == "none" else cal.perceptual
    other = sample_posterior(y, f, G, method, cal.num_samples, model=cal.model, map_result=maps[best],
                             sigma_reach=cal.sigma_reach, params=cal.preset, perceptual=perceptual, seed=cal.seed,
                             progress=False, **options).samples[:, 0]

    def rms(t: torch.Tensor) -> float:
        return float(t[hole].square().mean().sqrt())

    return {
        "index": index, "task": task, "neg_log_joint": objective, "best_other": best,
        "truth": x.tolist(), "maps": [rec.image[0].tolist() for rec in maps],
        "std": default["samples"].std(0).tolist(),
        "map_error_rms_unpinned": [rms(rec.image[0] - x) for rec in maps],
        "map_difference_rms_unpinned": [rms(rec.image[0] - maps[0].image[0]) for rec in maps[1:]],
        "std_rms_unpinned": rms(default["samples"].std(0)),
        "other_std_rms_unpinned": rms(other.std(0)),
        "posterior_mean_difference_rms_unpinned": rms(other.mean(0) - default["samples"].mean(0)),
        "cover90_default": rank_cover90(default["samples"], x, hole, torch.Generator().manual_seed(1)),
        "cover90_other": rank_cover90(other, x, hole, torch.Generator().manual_seed(2)),
        "cover90_mixture": rank_cover90(torch.cat([default["samples"], other]), x, hole,
                                        torch.Generator().manual_seed(3)),
    }


def noise(G: torch.nn.Module, cal: argparse.Namespace, task: str, index: int) -> dict:
    draws = calibration_draws(cal, task, index)
    x, y = draws["truth"], draws["y"]
    f = corruption(task, cal, G.resolution, index)
    observed = f.observed(x[None].shape)[0].expand_as(y).bool()
    residual = (y - f(draws["map"][None])[0]) * observed
    pinned = ~draws["unpinned"].bool()
    out = {"index": index, "task": task,
           "map_residual_rms_observed": float(residual[observed].square().mean().sqrt()),
           "residual_correlation": correlation_by_lag(residual) if task.startswith("superres") else None}
    if "sigma_pixel" in draws["latents"]:
        out["sigma_pixel_mean"] = float(draws["latents"]["sigma_pixel"].mean())
    if pinned.any():
        out["cover90_pinned"] = rank_cover90(draws["samples"], x, pinned, torch.Generator().manual_seed(index))
    return out


def summarise(records: dict[str, list[dict]], card_sigma_reach: float | None) -> str:
    lines = []
    if records.get("reach"):
        rs = records["reach"]
        totals: dict[str, list[float]] = {}
        for r in rs:
            for name, (sum_sq, n) in r["by_intensity"].items():
                totals.setdefault(name, [0.0, 0])
                totals[name][0] += sum_sq
                totals[name][1] += n
        lines.append(f"reach: card sigma_reach {card_sigma_reach}; identity-fit residual RMS over all pixels "
                     f"{mean_rms([r['rms_all'] for r in rs]):.4f}; by truth intensity: "
                     + ", ".join(f"{k} {(s / n) ** 0.5:.4f} ({n} px)" for k, (s, n) in totals.items()))
        lines.append("reach: residual correlation by lag " + ", ".join(
            f"{lag}: {sum(r['correlation'][str(lag)] for r in rs) / len(rs):.2f}" for lag in LAGS))
        lines += ["", "| task | residual RMS, unpinned | error RMS of the mean | predictive std RMS | G(w) std RMS | "
                  "rank cover 90%: G(w) vs G(w_id) | G(w) vs x | G(w) + r vs x |", "|---|---|---|---|---|---|---|---|"]
        for task in [t for t in TASKS if t in rs[0]] + [t for t in rs[0] if t.startswith("superres") and t not in TASKS]:
            v = [r[task] for r in rs]
            lines.append(f"| {task} | {mean_rms([e['rms_unpinned'] for e in v]):.4f} | "
                         f"{mean_rms([e['error_rms_unpinned'] for e in v]):.4f} | "
                         f"{mean_rms([e['std_rms_unpinned'] for e in v]):.4f} | "
                         f"{mean_rms([e['generator_std_rms_unpinned'] for e in v]):.4f} | "
                         + " | ".join(f"{sum(e[k] for e in v) / len(v):.3f}" for k in
                                      ("cover90_generator_vs_fit", "cover90_generator_vs_truth",
                                       "cover90_predictive_vs_truth")) + " |")
    if records.get("modes"):
        lines += ["", "| task | images | starts better than w_avg | MAP difference from w_avg's, RMS unpinned "
                  "(median) | posterior std RMS, unpinned | mean difference, best other start | rank cover 90%: "
                  "default | best other start | mixture of both |", "|---|---|---|---|---|---|---|---|---|"]
        by_task: dict[str, list[dict]] = {}
        for r in records["modes"]:
            by_task.setdefault(r["task"], []).append(r)
        for task, rs in by_task.items():
            diffs = torch.tensor([d for r in rs for d in r["map_difference_rms_unpinned"]])
            better = sum(sum(v < r["neg_log_joint"][0] for v in r["neg_log_joint"][1:]) for r in rs)
            others = sum(len(r["neg_log_joint"]) - 1 for r in rs)
            lines.append(f"| {task} | {len(rs)} | {better} of {others} | {float(diffs.median()):.4f} | "
                         f"{mean_rms([r['std_rms_unpinned'] for r in rs]):.4f} | "
                         f"{mean_rms([r['posterior_mean_difference_rms_unpinned'] for r in rs]):.4f} | "
                         + " | ".join(f"{sum(r[k] for r in rs) / len(rs):.3f}"
                                      for k in ("cover90_default", "cover90_other", "cover90_mixture")) + " |")
    if records.get("noise"):
        lines += ["", "| task | images | posterior sigma_pixel | MAP residual RMS, observed | residual correlation, lag 1 | "
                  "rank cover 90%, pinned |", "|---|---|---|---|---|---|"]
        by_task = {}
        for r in records["noise"]:
            by_task.setdefault(r["task"], []).append(r)
        for task, rs in by_task.items():
            sigma = [r["sigma_pixel_mean"] for r in rs if "sigma_pixel_mean" in r]
            lag1 = [r["residual_correlation"]["1"] for r in rs if r["residual_correlation"]]
            pinned = [r["cover90_pinned"] for r in rs if "cover90_pinned" in r]
            lines.append(f"| {task} | {len(rs)} | {mean_or_dash(sigma)} | "
                         f"{mean_rms([r['map_residual_rms_observed'] for r in rs]):.4f} | {mean_or_dash(lag1)} | "
                         f"{mean_or_dash(pinned)} |")
    return "\n".join(lines)


def mean_rms(values: list[float]) -> float:
    return (sum(v * v for v in values) / len(values)) ** 0.5


def mean_or_dash(values: list[float]) -> str:
    return f"{sum(values) / len(values):.4f}" if values else "-"


def modes_figure(records: list[dict], path: Path) -> None:
    """Per image (rows): the truth, the MAP from each start with its -log p, and the default posterior's std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = records[:4]
    columns = 2 + len(shown[0]["maps"])
    figure, axes = plt.subplots(len(shown), columns, figsize=(1.6 * columns, 1.8 * len(shown)), squeeze=False)
    for row, r in zip(axes, shown):
        panels = [(r["truth"], f"truth {r['task']} {r['index']}", "gray", 1.0)]
        panels += [(m, f"start {k}: {r['neg_log_joint'][k]:.0f}", "gray", 1.0) for k, m in enumerate(r["maps"])]
        panels.append((r["std"], "posterior std", "magma", 0.2))
        for ax, (image, title, cmap, top) in zip(row, panels):
            ax.imshow(torch.tensor(image)[0], cmap=cmap, vmin=0, vmax=top)
            ax.set_title(title, fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120)
    plt.close(figure)


def reach_figure(records: list[dict], path: Path, card_sigma_reach: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = records[:4]
    figure, axes = plt.subplots(2, len(shown) + 1, figsize=(2.6 * (len(shown) + 1), 5.4), squeeze=False)
    for k, r in enumerate(shown):
        axes[0][k].imshow(torch.tensor(r["fit"])[0], cmap="gray", vmin=0, vmax=1)
        axes[0][k].set_title(f"G(w_id), image {r['index']}", fontsize=8)
        image = axes[1][k].imshow(torch.tensor(r["residual"])[0], cmap="RdBu", vmin=-0.3, vmax=0.3)
        axes[1][k].set_title(f"x - G(w_id), RMS {r['rms_all']:.3f}", fontsize=8)
        for ax in (axes[0][k], axes[1][k]):
            ax.set_xticks([])
            ax.set_yticks([])
    figure.colorbar(image, ax=axes[1][len(shown) - 1], fraction=0.046)
    totals: dict[str, list[float]] = {}
    for r in records:
        for name, (sum_sq, n) in r["by_intensity"].items():
            totals.setdefault(name, [0.0, 0])
            totals[name][0] += sum_sq
            totals[name][1] += n
    names = list(totals)
    axes[0][-1].bar(range(len(names)), [(s / n) ** 0.5 for s, n in totals.values()])
    if card_sigma_reach:
        axes[0][-1].axhline(card_sigma_reach, color="k", ls="--", lw=1, label="card sigma_reach")
        axes[0][-1].legend(fontsize=7)
    axes[0][-1].set_xticks(range(len(names)), names, rotation=45, fontsize=7)
    axes[0][-1].set_title("residual RMS by truth intensity", fontsize=8)
    axes[1][-1].plot(LAGS, [sum(r["correlation"][str(lag)] for r in records) / len(records) for lag in LAGS], "o-")
    axes[1][-1].axhline(0, color="0.6", lw=1)
    axes[1][-1].set(xlabel="lag (pixels)")
    axes[1][-1].set_title("residual correlation by lag", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    own, cal = parse_args(argv)
    torch.set_num_threads(cal.threads)
    G = bp.load_generator(cal.generator)
    own.out.mkdir(parents=True, exist_ok=True)
    results = own.out / "results.jsonl"
    key = settings_key(cal) + f"-{own.starts}"
    records: dict[str, list[dict]] = {name: [] for name in ANALYSES}
    for line in results.read_text().splitlines() if results.exists() else []:
        r = json.loads(line)
        if r.pop("key") == key and r.pop("data") == cal.data:
            records[r.pop("analysis")].append(r)
    indices = list(range(cal.first, cal.first + cal.num_images))
    done = {(name, r.get("task"), r["index"]) for name, rs in records.items() for r in rs}

    def keep(analysis: str, record: dict) -> None:
        records[analysis].append(record)
        with results.open("a") as handle:
            handle.write(json.dumps({"analysis": analysis, "key": key, "data": cal.data, **record}) + "\n")

    if "reach" in own.analyses and any(("reach", None, i) not in done for i in indices):
        records["reach"] = [r for r in records["reach"] if r["index"] not in indices]
        for record in reach(G, cal, indices):
            keep("reach", record)
    for task in cal.tasks:
        for index in indices:
            if "noise" in own.analyses and ("noise", task, index) not in done:
                keep("noise", noise(G, cal, task, index))
            if "modes" in own.analyses and ("modes", task, index) not in done:
                keep("modes", modes(G, cal, task, index, own.starts))
                print(f"modes {task} image {index} done", flush=True)
    card_sigma_reach = (getattr(G, "card", None) or {}).get("sigma_reach")
    wanted = {name: [r for r in rs if r["index"] in indices and r.get("task", cal.tasks[0]) in cal.tasks]
              for name, rs in records.items() if name in own.analyses}
    print(summarise(wanted, card_sigma_reach))
    if own.figure is not None and wanted.get("reach"):
        reach_figure(wanted["reach"], own.figure, card_sigma_reach)
    if own.modes_figure is not None and wanted.get("modes"):
        modes_figure(wanted["modes"], own.modes_figure)
    if own.json is not None:
        with atomic_path(own.json) as tmp:
            tmp.write_text(json.dumps({k: [{n: v for n, v in r.items() if n not in ("residual", "fit", "truth", "maps", "std")}
                                           for r in rs] for k, rs in wanted.items()}, indent=2) + "\n")
    return wanted


if __name__ == "__main__":
    main(sys.argv[1:])
