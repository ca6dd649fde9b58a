"""``brgm sample``: posterior samples (SVI, NUTS, HMC) and uncertainty maps, one image at a time."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brgm_pyro.cli.choices import (
    DEFAULT_MODEL,
    GUIDES,
    MAX_LAPLACE_DIM,
    MCMC_DEFAULTS,
    METHODS,
    MODELS,
    SVI_DEFAULTS,
)
from brgm_pyro.cli.common import (
    SUMMARY_NAME,
    add_job_options,
    nonnegative_float,
    nonnegative_int,
    note,
    positive_float,
    positive_int,
)
from brgm_pyro.errors import InputError
from brgm_pyro.output_lock import claim_output

if TYPE_CHECKING:
    import torch

    import brgm_pyro as bp
    from brgm_pyro.cli.plan import Job
    from brgm_pyro.uncertainty.conformal import Calibration

# Per input NAME, besides the MAP's files: the maps NAME_<kind>.png and NAME_posterior.nc.
MAP_KINDS = ("mean", "std", "samples", "overview")
# Field of SVISettings / MCMCSettings -> the argparse dest of its ``brgm sample`` option.
SVI_OPTIONS = {
    "guide": "guide",
    "rank": "rank",
    "steps": "svi_steps",
    "lr": "svi_lr",
    "num_particles": "num_particles",
}
MCMC_OPTIONS = {
    "num_chains": "num_chains",
    "warmup_steps": "warmup",
    "max_tree_depth": "max_tree_depth",
    "trajectory_length": "trajectory_length",
    "precondition": "precondition",
}


def _sigma_reach(text: str) -> str | float:
    if text == "auto":
        return text
    try:
        return nonnegative_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a non-negative finite number, got {text!r}"
        ) from None


_sigma_reach.__name__ = "'auto' or a non-negative finite number"


def _calibration(text: str) -> str | Path | None:
    return None if text == "none" else text if text == "auto" else Path(text)


_calibration.__name__ = "'auto', 'none' or a calibration file"


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a level strictly between 0 and 1, got {text!r}")
    return value


_level.__name__ = "a level strictly between 0 and 1"


def add_sampling_options(model: argparse._ArgumentGroup, sampling: argparse._ArgumentGroup) -> None:
    """The posterior's options, which :func:`inference_options` reads: --model and --sigma-reach in the model
    group, the draws and the SVI and MCMC settings in the sampling group. The method (dest ``method``) is the
    command's own option."""
    model.add_argument(
        "--model",
        choices=["auto", *MODELS],
        default=DEFAULT_MODEL,
        help="model variant (default: auto, which is reach for a prior with a reach, else learned-noise; "
        "reach: the prior's reach in the likelihood and the noise level inferred per image; learned-noise: "
        "the reach in the predictive only; brgm: the paper's fixed sigma_pixel)",
    )
    model.add_argument(
        "--sigma-reach",
        type=_sigma_reach,
        default="auto",
        help="std of the prior's reach residual per clean pixel (brgm_pyro.uncertainty.discrepancy): auto (the prior "
        "card's value; off if it has none), 0 to turn it off, or a positive number (default: auto)",
    )
    sampling.add_argument(
        "--num-samples",
        type=positive_int,
        default=16,
        help="draws from the SVI guide, or kept draws per MCMC chain (default 16)",
    )
    sampling.add_argument("--guide", choices=GUIDES, help=f"SVI guide (default {SVI_DEFAULTS['guide']})")
    sampling.add_argument(
        "--rank", type=positive_int, help=f"rank of the lowrank guide (default {SVI_DEFAULTS['rank']})"
    )
    sampling.add_argument("--svi-steps", type=positive_int, help=f"SVI steps (default {SVI_DEFAULTS['steps']})")
    sampling.add_argument(
        "--svi-lr", type=positive_float, help=f"SVI learning rate (default {SVI_DEFAULTS['lr']})"
    )
    sampling.add_argument(
        "--num-particles", type=positive_int, help=f"ELBO particles (default {SVI_DEFAULTS['num_particles']})"
    )
    sampling.add_argument(
        "--num-chains", type=positive_int, help=f"MCMC chains (default {MCMC_DEFAULTS['num_chains']})"
    )
    sampling.add_argument(
        "--warmup",
        type=nonnegative_int,
        help=f"MCMC warm-up draws per chain (default {MCMC_DEFAULTS['warmup_steps']})",
    )
    sampling.add_argument(
        "--max-tree-depth",
        type=positive_int,
        help=f"NUTS tree depth cap (default {MCMC_DEFAULTS['max_tree_depth']})",
    )
    sampling.add_argument(
        "--trajectory-length",
        type=positive_float,
        help=f"HMC trajectory length (default {MCMC_DEFAULTS['trajectory_length']})",
    )
    sampling.add_argument(
        "--precondition",
        choices=("auto", "laplace", "none"),
        help="MCMC in the whitened coordinates of the Hessian at the MAP (laplace), on the raw latents "
        f"(none), or laplace up to {MAX_LAPLACE_DIM} latent coordinates (auto, the default)",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="posterior samples and uncertainty maps (Laplace mixture, SVI, NUTS, HMC)",
        description=(
            "Posterior sampling under a BRGM model, one image at a time: the MAP and its modes (as brgm "
            "reconstruct), then a Laplace mixture over the modes, SVI at each mode, or MCMC from the best one. "
            "Writes, per input NAME, the MAP's files (NAME_reconstruction.png, "
            "NAME_input.png, NAME_reconstruction_corrupted.png), NAME_mean.png (posterior mean), "
            "NAME_std.png (per-pixel standard deviation, colour scale in brgm.json), NAME_samples.png "
            "(grid of draws), "
            "NAME_overview.png, NAME_error.png (|mean - truth|, with --truth), NAME_interval.npz (the "
            "per-pixel intervals of --level, the posterior's own and, where the prior's calibration holds, "
            "the calibrated ones), NAME_posterior.nc (ArviZ InferenceData, NetCDF), and one brgm.json "
            "with settings, diagnostics, which intervals were used and per-image results."
        ),
    )
    corruption, model, _ = add_job_options(parser, "MAP (the starting point)")
    corruption.add_argument(
        "--truth",
        nargs="+",
        type=Path,
        metavar="CLEAN.png",
        help="the clean images, one per input in the same order: adds NAME_error.png and calibration figures",
    )
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument(
        "--method", choices=METHODS, default="laplace",
        help="laplace: a Gaussian at each mode the search found, weighted by its evidence (default); svi: the SVI "
        "guide at each mode; nuts, hmc: MCMC from the best mode",
    )
    add_sampling_options(model, sampling)
    intervals = parser.add_argument_group("intervals")
    intervals.add_argument(
        "--calibration",
        type=_calibration,
        default="auto",
        metavar="auto|none|FILE",
        help="calibration of the intervals (brgm_pyro.uncertainty.conformal): auto (the prior card's for the task, where "
        "it holds for these settings), none, or a file written by brgm calibrate (default: auto)",
    )
    intervals.add_argument(
        "--level", type=_level, default=0.9, help="probability of the intervals written (default 0.9)"
    )
    parser.set_defaults(run=run, batch_size=1)


def inference_options(args: argparse.Namespace) -> dict[str, Any]:
    """The SVI or MCMC settings given on the command line; options of another method are refused."""
    if args.method == "laplace":
        mine, other = {}, {**SVI_OPTIONS, **MCMC_OPTIONS}
    else:
        mine, other = (SVI_OPTIONS, MCMC_OPTIONS) if args.method == "svi" else (MCMC_OPTIONS, SVI_OPTIONS)
    only = {"max_tree_depth": "nuts", "trajectory_length": "hmc"}
    for dest in other.values():
        if getattr(args, dest) is not None:
            raise InputError(
                f"--{dest.replace('_', '-')} does not apply to --method {args.method}; drop it or change "
                "--method."
            )
    for dest, method in only.items():
        if getattr(args, dest) is not None and args.method != method:
            raise InputError(
                f"--{dest.replace('_', '-')} only applies to --method {method}; drop it or change --method."
            )
    options = {field: getattr(args, dest) for field, dest in mine.items() if getattr(args, dest) is not None}
    if options.get("precondition") == "none":
        options["precondition"] = None
    return options


@dataclass
class SampleJob:
    """Everything ``brgm sample`` checked, ready to run; nothing written yet."""

    job: Job
    truth: torch.Tensor | None
    options: dict[str, Any]
    calibration: Calibration | str | None


def plan(args: argparse.Namespace) -> SampleJob:
    """Check every input and option of ``brgm sample``; raise on the first problem, write nothing."""
    from brgm_pyro import io
    from brgm_pyro.cli.plan import MAP_OUTPUTS, plan_job
    from brgm_pyro.uncertainty.conformal import load_calibrations

    options = inference_options(args)
    if args.truth is not None and len(args.truth) != len(args.images):
        raise InputError(
            f"--truth names {len(args.truth)} image(s) for {len(args.images)} input(s); give one clean "
            "image per input, in the same order."
        )
    kinds = dict.fromkeys(MAP_OUTPUTS + MAP_KINDS + (("error",) if args.truth is not None else ()), ".png")
    calibration_file = [args.calibration] if isinstance(args.calibration, Path) else []
    job = plan_job(args, {**kinds, "posterior": ".nc", "interval": ".npz"},
                   other_inputs=[*(args.truth or ()), *calibration_file])
    calibration = args.calibration
    if isinstance(calibration, Path):
        found = load_calibrations(calibration)  # read now: a bad file fails before anything is written
        task = getattr(job.forward, "task", None)
        if task not in found:
            raise InputError(
                f"{calibration} holds calibrations for {', '.join(sorted(found)) or 'no task'}, not for "
                f"{task or 'this corruption'}; calibrate this task with brgm calibrate."
            )
        calibration = found[task]
    truth = None
    if args.truth is not None:
        G = job.generator
        truth = io.read_images(args.truth, channels=G.channels)
        if tuple(truth.shape[-2:]) != (G.resolution, G.resolution):
            raise InputError(
                f"The --truth images are {truth.shape[-1]}x{truth.shape[-2]} pixels, but the generator makes "
                f"{G.resolution}x{G.resolution} images; give the clean images at that size."
            )
    job.settings["model"] = args.model
    job.settings["sigma_reach"] = args.sigma_reach
    job.settings["sampling"] = {"method": args.method, "num_samples": args.num_samples, "options": options}
    job.settings["truth"] = [str(p) for p in args.truth] if args.truth is not None else None
    job.settings["intervals"] = {"level": args.level, "calibration": str(args.calibration)}
    return SampleJob(job=job, truth=truth, options=options, calibration=calibration)


def _scores(post: bp.Posterior, truth: torch.Tensor, hole: torch.Tensor | None, level: float) -> dict[str, Any]:
    """Scores of one image's posterior against its clean image (1, C, H, W)."""
    from brgm_pyro.metrics import interval_coverage, psnr, spearman_std_error

    error = (post.mean - truth).abs()
    scores: dict[str, Any] = {
        "psnr_mean": float(psnr(post.mean, truth)[0]),
        "psnr_map": float(psnr(post.map.image, truth)[0]),
    }
    if post.num_samples >= 2:
        scores["coverage"] = {str(k): v for k, v in interval_coverage(post.samples, truth).items()}
        scores["interval_coverage"] = {
            kind: float(((lower <= truth) & (truth <= upper)).float().mean())
            for kind, (lower, upper) in _intervals(post, level).items()
        }
        try:
            scores["spearman_std_error"] = spearman_std_error(post.std, error)
        except InputError:  # undefined where the std or the error map is constant
            scores["spearman_std_error"] = None
    if hole is not None:
        scores["std_ratio_hole_observed"] = float(
            post.std[hole].mean() / post.std[~hole].mean().clamp_min(1e-12)
        )
    return scores


def _intervals(post: bp.Posterior, level: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The intervals of ``level`` written: the posterior's own ("raw") and, if it has one, the calibrated."""
    intervals = {"raw": post.interval(level, calibrated=False)}
    if post.calibration is not None:
        intervals["calibrated"] = post.interval(level, calibrated=True)
    return intervals


def _write_intervals(path: Path, intervals: dict[str, tuple[torch.Tensor, torch.Tensor]], level: float) -> None:
    import numpy as np

    from brgm_pyro import io

    arrays = {f"{kind}_{end}": bounds[k][0].numpy() for kind, bounds in intervals.items()
              for k, end in enumerate(("lower", "upper"))}
    with io.atomic_path(path) as tmp:
        np.savez(tmp, level=np.float64(level), **arrays)


def run_job(sample: SampleJob, quiet: bool) -> dict[str, Any]:
    """Sample each image's posterior, writing its files and the updated brgm.json as it finishes."""
    from tqdm.auto import tqdm

    import brgm_pyro as bp
    from brgm_pyro.cli.plan import MAP_OUTPUTS, SummaryFile, write_map_files
    from brgm_pyro.fit import check_fit
    from brgm_pyro.forward import Mask
    from brgm_pyro.plotting import save_uncertainty_maps

    job = sample.job
    summary = SummaryFile(job.out, "sample", job.settings)
    settings = job.settings
    G = job.generator
    clean_shape = (1, G.channels, G.resolution, G.resolution)
    hole = None
    if isinstance(job.forward, Mask):
        hole = job.forward.observed(clean_shape, device="cpu").expand(clean_shape) == 0
    progress = tqdm(total=len(job.paths), desc="images", unit="img", disable=quiet or len(job.paths) == 1)
    shown = None
    for index, name in enumerate(job.names):
        image_started = time.perf_counter()
        y = job.y[index : index + 1]
        common = dict(params=job.params, perceptual=job.perceptual, seed=settings["seed"], progress=not quiet)
        post = bp.sample_posterior(
            y,
            job.forward,
            G,
            method=settings["sampling"]["method"],
            num_samples=settings["sampling"]["num_samples"],
            model=settings["model"],
            map_schedule=job.schedule,
            search=job.search,
            sigma_reach=settings["sigma_reach"],
            calibration=sample.calibration,
            **common,
            **sample.options,
        )
        rec = post.map
        if post.calibration_note != shown:
            shown = post.calibration_note
            note(f"{name}: {shown}", quiet)
        truth = sample.truth[index : index + 1] if sample.truth is not None else None
        files = job.outputs[index]
        write_map_files(files, rec, 0)
        fit = check_fit(rec, job.forward)
        if misfit := fit.note(0, name):
            note(misfit, quiet)
        maps = save_uncertainty_maps(post, job.out, [name], truth=truth, fit=fit)[0]
        post.save_netcdf(files["posterior"])
        level = settings["intervals"]["level"]
        intervals = _intervals(post, level)
        _write_intervals(files["interval"], intervals, level)
        written = {**{kind: files[kind] for kind in MAP_OUTPUTS}, **maps, "posterior": files["posterior"],
                   "interval": files["interval"]}
        entry = {
            **job.input_record(index),
            "outputs": {kind: path.name for kind, path in written.items()},
            "wall_time_s": time.perf_counter() - image_started,
            "std_png_vmax": float(post.std.max()),
            "map": {
                "final_losses": {term: float(values[-1, 0]) for term, values in rec.losses.items()},
                "data_consistency": {k: float(v[0]) for k, v in rec.data_consistency.items()},
                "fit": {**fit.record(0), **({"note": misfit} if misfit else {})},
            },
            "posterior": post.summary()["images"][0],
            "diagnostics": post.diagnostics,
            "intervals": {
                **post.summary()["intervals"],
                "level": level,
                "used": "calibrated" if post.calibration is not None else "raw",
                "mean_width": {kind: float((upper - lower).mean()) for kind, (lower, upper) in intervals.items()},
            },
        }
        if truth is not None:
            entry["truth"] = settings["truth"][index]
            entry["calibration"] = _scores(post, truth, hole, level)
        summary.add([entry])
        progress.update(1)
    progress.close()
    return summary.finish()


def run(args: argparse.Namespace) -> int:
    sample = plan(args)
    sample.job.show_notes(args.quiet)
    with claim_output(sample.job.out, "sample"):
        run_job(sample, args.quiet)
    print(
        f"brgm: wrote posterior samples and uncertainty maps of {len(sample.job.paths)} image(s) and "
        f"{SUMMARY_NAME} to {sample.job.out}"
    )
    return 0
