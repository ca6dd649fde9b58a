"""The ``brgm`` command line.

    brgm reconstruct low/*.png --generator fashion-mnist-32 --task superres --factor 4 --out rec/
    brgm reconstruct holes/*.png --generator G.safetensors --task inpaint --mask mask.png --out rec/

Each subcommand is an ``add_<name>_parser`` function (its options, registered in
:func:`build_parser`) and a ``cmd_<name>(args) -> exit code`` function. A command checks everything
before it writes anything. Bad input ends with one line ``brgm: error: <sentence>`` on stderr and
exit code 2, never a traceback; ``brgm --traceback ...`` shows the traceback, for bug reports.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyro
import torch
from torch import nn
from tqdm.auto import tqdm

import brgm_pyro
from brgm_pyro import io
from brgm_pyro.checkpoints import CheckpointError, load_generator
from brgm_pyro.data import DatasetError
from brgm_pyro.errors import InputError
from brgm_pyro.forward import _KERNEL_NAMES, Downsample, Mask, Operator
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.inference.mcmc import MAX_LAPLACE_DIM, MCMCSettings
from brgm_pyro.inference.svi import GUIDES, SVISettings
from brgm_pyro.metrics import interval_coverage, psnr, spearman_std_error
from brgm_pyro.models.brgm import PRESETS, BRGMParams, colinearity
from brgm_pyro.models.variants import available_models, get_model
from brgm_pyro.perceptual import MissingWeightsError
from brgm_pyro.plotting import save_uncertainty_maps
from brgm_pyro.posterior import Posterior
from brgm_pyro.problem import prepare_problem
from brgm_pyro.reconstruct import reconstruct
from brgm_pyro.sampling import DEFAULT_MODEL, METHODS, sample_posterior
from brgm_pyro.stylegan2 import StyleGAN2Generator, describe

__all__ = ["build_parser", "cmd_reconstruct", "cmd_sample", "main"]

EXIT_BAD_INPUT = 2
SUMMARY_NAME = "brgm.json"
# Output kind -> file name suffix; per input NAME the files are NAME_<kind>.png.
RECONSTRUCT_OUTPUTS = ("reconstruction", "input", "reconstruction_corrupted")

# Exceptions that mean "bad input" (CheckpointError is a ValueError, FileNotFoundError and
# NotADirectoryError are OSErrors; listed for the reader).
INPUT_ERRORS = (
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    OSError,
    CheckpointError,
    DatasetError,
    MissingWeightsError,
)


# ----------------------------------------------------------------------------- shared helpers


class UsageError(Exception):
    """A command line that argparse cannot parse."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` (reported as one line by :func:`main`) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see `{self.prog} --help`.")


def _number_type(
    convert: Callable[[str], Any], minimum: float, strict: bool, what: str
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


positive_int = _number_type(int, 0, True, "a positive integer")
nonnegative_int = _number_type(int, 0, False, "a non-negative integer")
positive_float = _number_type(float, 0.0, True, "a positive finite number")
nonnegative_float = _number_type(float, 0.0, False, "a non-negative finite number")


def resolve_device(name: str | None) -> str:
    """--device: "cpu", "cuda", or None for CUDA when available, else the CPU."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was given but no CUDA GPU is available; use --device cpu.")
    return name


def load_generator_arg(args: argparse.Namespace) -> StyleGAN2Generator:
    """The generator of --generator (a registered name or a checkpoint path) on the device of --device."""
    return load_generator(args.generator, device=resolve_device(args.device))


def check_output_dir(path: Path) -> None:
    """Raise NotADirectoryError if ``path`` cannot be a folder (it, or a parent, is a file); creates nothing."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and not path.is_dir():
        raise NotADirectoryError(f"The output folder {path} exists as a file; choose another --out.")
    if not existing.is_dir():
        raise NotADirectoryError(
            f"The output folder {path} cannot be created because {existing} is a file; choose another --out."
        )


def check_outputs(outputs: Sequence[Path], protected: Sequence[Path], force: bool) -> None:
    """Refuse outputs that would overwrite an input (always) or an earlier run's file (unless --force)."""
    for path in outputs:
        io.check_not_input(path, protected)
    if not force:
        for path in outputs:
            if path.exists():
                raise FileExistsError(
                    f"{path} already exists (from an earlier run?); pass --force to overwrite it, "
                    "or choose another --out."
                )


def versions() -> dict[str, str]:
    return {
        "brgm_pyro": brgm_pyro.__version__,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _add_generator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--generator",
        required=True,
        metavar="PATH_OR_NAME",
        help="registered prior name, or a checkpoint (.safetensors, NVIDIA .pkl, rosinality .pt)",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="where to run (default: cuda if available)"
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder (created if needed)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite outputs of an earlier run in DIR")
    parser.add_argument("--quiet", action="store_true", help="hide progress bars and notes")


def _add_corruption_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    corruption = parser.add_argument_group("corruption")
    corruption.add_argument("--factor", type=positive_int, help="superres factor (default: R / input size)")
    corruption.add_argument("--kernel", choices=_KERNEL_NAMES, help="superres kernel (default: bicubic)")
    corruption.add_argument(
        "--sigma", type=positive_float, help="width of the gaussian kernel in pixels (default: factor / 2)"
    )
    corruption.add_argument("--mask", type=Path, metavar="MASK.png", help="inpaint mask: white = observed")
    return corruption


def _add_model_options(model: argparse._ArgumentGroup) -> None:
    model.add_argument(
        "--preset", choices=PRESETS, default="default", help="parameter preset (default: default)"
    )
    model.add_argument("--sigma-pixel", type=positive_float, help="override the preset's pixel noise sigma")
    model.add_argument("--sigma-percept", type=positive_float, help="override the preset's perceptual sigma")
    model.add_argument("--kappa", type=nonnegative_float, help="override the preset's colinearity kappa")
    model.add_argument(
        "--perceptual",
        default="auto",
        metavar="auto|none|NAME",
        help="perceptual network (default auto: the prior's choice, none for a bare generator)",
    )


def _add_map_options(optimiser: argparse._ArgumentGroup) -> argparse._ArgumentGroup:
    optimiser.add_argument("--steps", type=positive_int, help=f"Adam steps (default {MAPSchedule.steps})")
    optimiser.add_argument("--lr", type=positive_float, help=f"Adam learning rate (default {MAPSchedule.lr})")
    optimiser.add_argument("--seed", type=nonnegative_int, default=0)
    return optimiser


def _note(message: str, quiet: bool) -> None:
    if not quiet:
        print(f"brgm: note: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- brgm reconstruct


def add_reconstruct_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reconstruct",
        help="MAP reconstruction of corrupted images (super-resolution, inpainting)",
        description=(
            "MAP reconstruction under the BRGM model. The inputs are the corrupted images: low-resolution "
            "images of size R/factor for superres, R x R images with a hole for inpaint (R: the generator's "
            "resolution). Inputs are converted to the generator's channel count (colour to grayscale by "
            "BT.601 luma, grayscale repeated to RGB); brgm.json records it. Writes, per input NAME, "
            "NAME_reconstruction.png, NAME_input.png (the input as the model saw it, as 8-bit PNG: a "
            "lossless copy of an 8-bit input, the hole shown as 0 for inpaint) and "
            "NAME_reconstruction_corrupted.png, and one brgm.json with settings and per-image results."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="corrupted input images (PNG)")
    _add_generator_options(parser)
    parser.add_argument("--task", required=True, choices=("superres", "inpaint"))
    _add_corruption_options(parser)
    _add_model_options(parser.add_argument_group("model"))
    optimiser = _add_map_options(parser.add_argument_group("optimisation"))
    optimiser.add_argument("--batch-size", type=positive_int, default=8, help="images per batch (default 8)")
    _add_output_options(parser)
    parser.set_defaults(run=cmd_reconstruct)


@dataclass
class ReconstructJob:
    """Everything ``brgm reconstruct`` checked, ready to run; nothing written yet."""

    paths: list[Path]
    names: list[str]
    y: torch.Tensor
    input_channels: list[int]
    forward: Operator
    generator: StyleGAN2Generator
    params: BRGMParams
    perceptual: nn.Module | None
    schedule: MAPSchedule
    out: Path
    outputs: list[dict[str, Path]]
    settings: dict[str, Any]


def _output_names(paths: Sequence[Path]) -> list[str]:
    seen: dict[str, Path] = {}
    for path in paths:
        other = seen.setdefault(path.stem, path)
        if other is not path:
            if other.resolve() == path.resolve():
                raise InputError(f"The input {path} is given twice; pass each image once.")
            raise InputError(
                f"The inputs {other} and {path} share the name {path.stem!r}, so their outputs would collide; "
                "rename one of them."
            )
    return [path.stem for path in paths]


def _superres_factor(args: argparse.Namespace, size: int, resolution: int) -> tuple[int, bool]:
    """The superres factor: --factor, checked against the sizes, or R / input size."""
    if args.factor is None:
        if size > resolution or resolution % size:
            raise InputError(
                f"Cannot infer --factor: the inputs are {size}x{size} pixels, which does not divide the "
                f"generator's resolution {resolution}; resize them to {resolution} / 2^k pixels "
                f"(e.g. {resolution // 4}x{resolution // 4}) or check --generator."
            )
        return resolution // size, True
    if resolution % args.factor:
        raise InputError(
            f"--factor {args.factor} does not divide the generator's resolution {resolution}; "
            "choose a power of two such as 2, 4 or 8."
        )
    if size * args.factor != resolution:
        raise InputError(
            f"The inputs are {size}x{size} pixels, but --factor {args.factor} with the generator's "
            f"{resolution}x{resolution} images needs {resolution // args.factor}x{resolution // args.factor} "
            "inputs; fix --factor (or omit it to infer it) or resize the inputs."
        )
    return args.factor, False


def _check_task_options(args: argparse.Namespace) -> None:
    if args.task == "superres":
        if args.mask is not None:
            raise InputError("--mask is only used by --task inpaint; drop it or use --task inpaint.")
        if args.sigma is not None and args.kernel != "gaussian":
            raise InputError("--sigma is only used by --kernel gaussian; drop it or add --kernel gaussian.")
    else:
        given = [
            flag
            for flag, value in (("--factor", args.factor), ("--kernel", args.kernel), ("--sigma", args.sigma))
            if value is not None
        ]
        if given:
            raise InputError(f"{given[0]} is only used by --task superres; drop it for --task inpaint.")
        if args.mask is None:
            raise InputError("--task inpaint needs --mask MASK.png (white = observed, black = missing).")


def plan_reconstruct(args: argparse.Namespace) -> ReconstructJob:
    """Check every input and option of ``brgm reconstruct``; raise on the first problem, write nothing."""
    _check_task_options(args)
    paths = list(args.images)
    names = _output_names(paths)
    raw = [io.read_image(path) for path in paths]
    mask = io.read_mask(args.mask) if args.task == "inpaint" else None
    out = args.out
    check_output_dir(out)
    outputs = [{kind: out / f"{name}_{kind}.png" for kind in RECONSTRUCT_OUTPUTS} for name in names]
    protected = paths + [p for p in (args.mask, Path(args.generator)) if p is not None and p.is_file()]
    check_outputs(
        [p for files in outputs for p in files.values()] + [out / SUMMARY_NAME], protected, args.force
    )

    G = load_generator_arg(args)
    resolution = G.resolution
    y = io.read_images(paths, channels=G.channels)
    height, width = y.shape[-2:]
    corruption: dict[str, Any] = {"task": args.task}
    if args.task == "superres":
        if height != width:
            raise InputError(
                f"The inputs are {width}x{height} pixels (width x height), but the generator makes square "
                f"images; crop them to a square of {resolution} / factor pixels."
            )
        factor, inferred = _superres_factor(args, height, resolution)
        kernel = args.kernel or "bicubic"
        forward: Operator = Downsample(factor, kernel, sigma=args.sigma)
        corruption.update(
            operator="Downsample",
            factor=factor,
            factor_inferred=inferred,
            kernel=kernel,
            sigma=forward.sigma,
            mask=None,
        )
    else:
        if (height, width) != (resolution, resolution):
            raise InputError(
                f"The inputs are {width}x{height} pixels, but inpainting with this generator needs "
                f"{resolution}x{resolution} images; resize them or check --generator."
            )
        if tuple(mask.shape) != (resolution, resolution):
            raise InputError(
                f"The mask {args.mask} is {mask.shape[1]}x{mask.shape[0]} pixels, but the images are "
                f"{resolution}x{resolution}; give a mask of the images' size."
            )
        if not mask.any():
            raise InputError(
                f"The mask {args.mask} marks no pixel as observed (white = observed, black = missing); "
                "invert it or give another mask."
            )
        forward = Mask(mask)
        y = forward(y)  # the hole is shown as 0, and phi(y) sees what phi(f(x)) sees
        corruption.update(operator="Mask", mask=str(args.mask), observed_fraction=float(mask.mean()))

    # Resolve the preset and the perceptual network once, on the first batch; this also checks
    # y, f and G against each other before anything is written.
    problem = prepare_problem(y[: args.batch_size], forward, G, args.preset, args.perceptual)
    overrides = {
        name: value
        for name, value in (
            ("sigma_pixel", args.sigma_pixel),
            ("sigma_percept", args.sigma_percept),
            ("kappa", args.kappa),
        )
        if value is not None
    }
    params = replace(problem.params, **overrides)
    schedule = MAPSchedule(**{k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None})
    generator_path = Path(args.generator)
    settings = {
        "generator": {
            "source": args.generator,
            "path": str(generator_path.resolve()) if generator_path.is_file() else None,
            "name": getattr(G, "name", None),
            **describe(G),
        },
        "corruption": corruption,
        "preset": args.preset,
        "params": asdict(params),
        "params_overridden": sorted(overrides),
        "schedule": asdict(schedule),
        "perceptual": {
            "requested": args.perceptual,
            "network": type(problem.perceptual).__name__ if problem.perceptual is not None else None,
        },
        "seed": args.seed,
        "device": str(G.w_avg.device),
        "batch_size": args.batch_size,
    }
    return ReconstructJob(
        paths=paths,
        names=names,
        y=y,
        input_channels=[img.shape[0] for img in raw],
        forward=forward,
        generator=G,
        params=params,
        perceptual=problem.perceptual,
        schedule=schedule,
        out=out,
        outputs=outputs,
        settings=settings,
    )


def _conversion(from_channels: int, to_channels: int) -> str | None:
    if from_channels == to_channels:
        return None
    if to_channels == 1:
        return "colour converted to grayscale (BT.601 luma: 0.299 R + 0.587 G + 0.114 B)"
    return "grayscale repeated to RGB"


def w_statistics(w: torch.Tensor, G: StyleGAN2Generator) -> dict[str, float]:
    """Summary of one image's MAP latents w (L, D) against the prior N(w_avg, w_std^2).

    ``rms_z`` is the RMS of (w - w_avg) / w_std (about 1 for a draw of the prior); ``mean_cosine``
    the mean cosine between the L vectors w_i (1 when they are colinear, as for a mapping output).
    """
    z = (w - G.w_avg.cpu()) / G.w_std.cpu()
    num_ws = w.shape[0]
    pairs = num_ws * (num_ws - 1) / 2
    return {
        "mean": float(w.mean()),
        "std": float(w.std()),
        "rms_z": float(z.square().mean().sqrt()),
        "mean_cosine": float(colinearity(w) / pairs) if pairs else 1.0,
    }


def run_reconstruct(job: ReconstructJob, quiet: bool) -> dict[str, Any]:
    """Reconstruct in batches, writing each batch's images and the updated brgm.json as it finishes."""
    io.ensure_output_dir(job.out)
    batch_size = job.settings["batch_size"]
    started = time.perf_counter()
    images: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "command": "reconstruct",
        "complete": False,
        "settings": job.settings,
        "versions": versions(),
        "images": images,
    }
    progress = tqdm(
        total=len(job.paths), desc="images", unit="img", disable=quiet or len(job.paths) <= batch_size
    )
    for batch, start in enumerate(range(0, len(job.paths), batch_size)):
        stop = min(start + batch_size, len(job.paths))
        batch_started = time.perf_counter()
        rec = reconstruct(
            job.y[start:stop],
            job.forward,
            job.generator,
            params=job.params,
            perceptual=job.perceptual,
            schedule=job.schedule,
            seed=job.settings["seed"],
            progress=not quiet,
        )
        batch_time = time.perf_counter() - batch_started
        for i, index in enumerate(range(start, stop)):
            files = job.outputs[index]
            io.write_image(files["reconstruction"], rec.image[i])
            io.write_image(files["input"], rec.y[i])
            io.write_image(files["reconstruction_corrupted"], rec.y_reconstructed[i])
            images.append(
                {
                    "name": job.names[index],
                    "input": str(job.paths[index]),
                    "input_channels": job.input_channels[index],
                    "conversion": _conversion(job.input_channels[index], job.generator.channels),
                    "outputs": {kind: path.name for kind, path in files.items()},
                    "batch": batch,
                    "batch_wall_time_s": batch_time,
                    "final_losses": {term: float(values[-1, i]) for term, values in rec.losses.items()},
                    "data_consistency": {k: float(v[i]) for k, v in rec.data_consistency.items()},
                    "w": w_statistics(rec.w[i], job.generator),
                }
            )
        summary["wall_time_s"] = time.perf_counter() - started
        io.write_json(job.out / SUMMARY_NAME, summary)
        progress.update(stop - start)
    progress.close()
    summary["complete"] = True
    io.write_json(job.out / SUMMARY_NAME, summary)
    return summary


def cmd_reconstruct(args: argparse.Namespace) -> int:
    job = plan_reconstruct(args)
    converted = sum(c != job.generator.channels for c in job.input_channels)
    if converted:
        kind = "grayscale" if job.generator.channels == 1 else "RGB"
        _note(
            f"{converted} input(s) converted to {kind} for the generator (recorded in {SUMMARY_NAME}).",
            args.quiet,
        )
    run_reconstruct(job, args.quiet)
    print(f"brgm: wrote {len(job.paths)} reconstruction(s) and {SUMMARY_NAME} to {job.out}")
    return 0


# ----------------------------------------------------------------------------- brgm sample

# Per input NAME, besides the MAP's RECONSTRUCT_OUTPUTS: NAME_<kind>.png and NAME_posterior.nc.
SAMPLE_OUTPUTS = ("mean", "std", "samples", "overview")
# Field of SVISettings / MCMCSettings -> the argparse dest of its ``brgm sample`` option.
SVI_OPTIONS = {"guide": "guide", "rank": "rank", "steps": "svi_steps", "lr": "svi_lr", "num_particles": "num_particles"}
MCMC_OPTIONS = {
    "num_chains": "num_chains",
    "warmup_steps": "warmup",
    "max_tree_depth": "max_tree_depth",
    "trajectory_length": "trajectory_length",
    "precondition": "precondition",
}


def add_sample_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample",
        help="posterior samples and uncertainty maps (SVI, NUTS, HMC)",
        description=(
            "Posterior sampling under a BRGM model, one image at a time: the MAP (as brgm reconstruct), then "
            "SVI or MCMC started from it. Writes, per input NAME, the MAP's files (NAME_reconstruction.png, "
            "NAME_input.png, NAME_reconstruction_corrupted.png), NAME_mean.png (posterior mean), NAME_std.png "
            "(per-pixel standard deviation, colour scale in brgm.json), NAME_samples.png (grid of draws), "
            "NAME_overview.png, NAME_error.png (|mean - truth|, with --truth) and NAME_posterior.nc (ArviZ "
            "InferenceData, NetCDF), and one brgm.json with settings, diagnostics and per-image results."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="corrupted input images (PNG)")
    _add_generator_options(parser)
    parser.add_argument("--task", required=True, choices=("superres", "inpaint"))
    corruption = _add_corruption_options(parser)
    corruption.add_argument(
        "--truth",
        nargs="+",
        type=Path,
        metavar="CLEAN.png",
        help="the clean images, one per input in the same order: adds NAME_error.png and calibration figures",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        choices=available_models(),
        default=DEFAULT_MODEL,
        help=f"model variant (default: {DEFAULT_MODEL}, the noise level inferred per image; brgm: the paper's "
        "fixed sigma_pixel)",
    )
    _add_model_options(model)
    model.add_argument(
        "--sigma-reach",
        type=_sigma_reach,
        default="auto",
        help="std of the prior's reach residual per clean pixel, added to the posterior predictive "
        "(brgm_pyro.discrepancy): auto (the prior card's value; off if it has none), 0 to turn it off, "
        "or a positive number (default: auto)",
    )
    _add_map_options(parser.add_argument_group("MAP (the starting point)"))
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--method", choices=METHODS, default="svi", help="inference method (default: svi)")
    sampling.add_argument(
        "--num-samples",
        type=positive_int,
        default=16,
        help="draws from the SVI guide, or kept draws per MCMC chain (default 16)",
    )
    sampling.add_argument("--guide", choices=GUIDES, help=f"SVI guide (default {SVISettings.guide})")
    sampling.add_argument("--rank", type=positive_int, help=f"rank of the lowrank guide (default {SVISettings.rank})")
    sampling.add_argument("--svi-steps", type=positive_int, help=f"SVI steps (default {SVISettings.steps})")
    sampling.add_argument("--svi-lr", type=positive_float, help=f"SVI learning rate (default {SVISettings.lr})")
    sampling.add_argument(
        "--num-particles", type=positive_int, help=f"ELBO particles (default {SVISettings.num_particles})"
    )
    sampling.add_argument("--num-chains", type=positive_int, help=f"MCMC chains (default {MCMCSettings.num_chains})")
    sampling.add_argument(
        "--warmup", type=nonnegative_int, help=f"MCMC warm-up draws per chain (default {MCMCSettings.warmup_steps})"
    )
    sampling.add_argument(
        "--max-tree-depth", type=positive_int, help=f"NUTS tree depth cap (default {MCMCSettings.max_tree_depth})"
    )
    sampling.add_argument(
        "--trajectory-length",
        type=positive_float,
        help=f"HMC trajectory length (default {MCMCSettings.trajectory_length})",
    )
    sampling.add_argument(
        "--precondition",
        choices=("auto", "laplace", "none"),
        help="MCMC in the whitened coordinates of the Hessian at the MAP (laplace), on the raw latents (none), "
        f"or laplace up to {MAX_LAPLACE_DIM} latent coordinates (auto, the default)",
    )
    _add_output_options(parser)
    parser.set_defaults(run=cmd_sample, batch_size=1)


def _sigma_reach(text: str) -> str | float:
    if text == "auto":
        return text
    try:
        return nonnegative_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a non-negative finite number, got {text!r}") from None


_sigma_reach.__name__ = "'auto' or a non-negative finite number"


def _inference_options(args: argparse.Namespace) -> dict[str, Any]:
    """The SVI or MCMC settings given on the command line; options of another method are refused."""
    mine, other = (SVI_OPTIONS, MCMC_OPTIONS) if args.method == "svi" else (MCMC_OPTIONS, SVI_OPTIONS)
    only = {"max_tree_depth": "nuts", "trajectory_length": "hmc"}
    for dest in other.values():
        if getattr(args, dest) is not None:
            raise InputError(
                f"--{dest.replace('_', '-')} does not apply to --method {args.method}; drop it or change --method."
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

    base: ReconstructJob
    truth: torch.Tensor | None
    options: dict[str, Any]
    outputs: list[dict[str, Path]]


def plan_sample(args: argparse.Namespace) -> SampleJob:
    """Check every input and option of ``brgm sample``; raise on the first problem, write nothing."""
    options = _inference_options(args)
    if args.truth is not None and len(args.truth) != len(args.images):
        raise InputError(
            f"--truth names {len(args.truth)} image(s) for {len(args.images)} input(s); give one clean image per "
            "input, in the same order."
        )
    base = plan_reconstruct(args)
    truth = None
    if args.truth is not None:
        G = base.generator
        truth = io.read_images(args.truth, channels=G.channels)
        if tuple(truth.shape[-2:]) != (G.resolution, G.resolution):
            raise InputError(
                f"The --truth images are {truth.shape[-1]}x{truth.shape[-2]} pixels, but the generator makes "
                f"{G.resolution}x{G.resolution} images; give the clean images at that size."
            )
    outputs = []
    for name in base.names:
        files = {kind: base.out / f"{name}_{kind}.png" for kind in SAMPLE_OUTPUTS}
        if truth is not None:
            files["error"] = base.out / f"{name}_error.png"
        files["posterior"] = base.out / f"{name}_posterior.nc"
        outputs.append(files)
    inputs = [args.mask, Path(args.generator), *(args.truth or [])]
    protected = base.paths + [p for p in inputs if p is not None and p.is_file()]
    every_output = [p for files in outputs + base.outputs for p in files.values()] + [base.out / SUMMARY_NAME]
    check_outputs(every_output, protected, args.force)
    base.settings["model"] = args.model
    base.settings["sigma_reach"] = args.sigma_reach
    base.settings["sampling"] = {"method": args.method, "num_samples": args.num_samples, "options": options}
    base.settings["truth"] = [str(p) for p in args.truth] if args.truth is not None else None
    return SampleJob(base=base, truth=truth, options=options, outputs=outputs)


def _calibration(post: Posterior, truth: torch.Tensor, hole: torch.Tensor | None) -> dict[str, Any]:
    """Scores of one image's posterior against its clean image (1, C, H, W)."""
    error = (post.mean - truth).abs()
    scores: dict[str, Any] = {
        "psnr_mean": float(psnr(post.mean, truth)[0]),
        "psnr_map": float(psnr(post.map.image, truth)[0]),
    }
    if post.num_samples >= 2:
        scores["coverage"] = {str(k): v for k, v in interval_coverage(post.samples, truth).items()}
        try:
            scores["spearman_std_error"] = spearman_std_error(post.std, error)
        except ValueError:
            scores["spearman_std_error"] = None
    if hole is not None:
        scores["std_ratio_hole_observed"] = float(post.std[hole].mean() / post.std[~hole].mean().clamp_min(1e-12))
    return scores


def run_sample(job: SampleJob, quiet: bool) -> dict[str, Any]:
    """Sample each image's posterior, writing its files and the updated brgm.json as it finishes."""
    base = job.base
    io.ensure_output_dir(base.out)
    started = time.perf_counter()
    images: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "command": "sample",
        "complete": False,
        "settings": base.settings,
        "versions": versions(),
        "images": images,
    }
    G = base.generator
    clean_shape = (1, G.channels, G.resolution, G.resolution)
    hole = None
    if isinstance(base.forward, Mask):
        hole = base.forward.observed(clean_shape, device="cpu").expand(clean_shape) == 0
    progress = tqdm(total=len(base.paths), desc="images", unit="img", disable=quiet or len(base.paths) == 1)
    for index, name in enumerate(base.names):
        image_started = time.perf_counter()
        y = base.y[index : index + 1]
        common = dict(params=base.params, perceptual=base.perceptual, seed=base.settings["seed"], progress=not quiet)
        rec = reconstruct(
            y, base.forward, G, schedule=base.schedule, model=get_model(base.settings["model"]), **common
        )
        post = sample_posterior(
            y,
            base.forward,
            G,
            method=base.settings["sampling"]["method"],
            num_samples=base.settings["sampling"]["num_samples"],
            model=base.settings["model"],
            map_result=rec,
            sigma_reach=base.settings["sigma_reach"],
            **common,
            **job.options,
        )
        truth = job.truth[index : index + 1] if job.truth is not None else None
        files = job.outputs[index]
        reconstruction = base.outputs[index]
        io.write_image(reconstruction["reconstruction"], rec.image[0])
        io.write_image(reconstruction["input"], rec.y[0])
        io.write_image(reconstruction["reconstruction_corrupted"], rec.y_reconstructed[0])
        maps = save_uncertainty_maps(post, base.out, [name], truth=truth)[0]
        post.save_netcdf(files["posterior"])
        entry = {
            "name": name,
            "input": str(base.paths[index]),
            "outputs": {
                kind: path.name for kind, path in {**reconstruction, **maps, "posterior": files["posterior"]}.items()
            },
            "wall_time_s": time.perf_counter() - image_started,
            "std_png_vmax": float(post.std.max()),
            "map": {
                "final_losses": {term: float(values[-1, 0]) for term, values in rec.losses.items()},
                "data_consistency": {k: float(v[0]) for k, v in rec.data_consistency.items()},
            },
            "posterior": post.summary()["images"][0],
            "diagnostics": post.diagnostics,
        }
        if truth is not None:
            entry["truth"] = base.settings["truth"][index]
            entry["calibration"] = _calibration(post, truth, hole)
        images.append(entry)
        summary["wall_time_s"] = time.perf_counter() - started
        io.write_json(base.out / SUMMARY_NAME, summary)
        progress.update(1)
    progress.close()
    summary["complete"] = True
    io.write_json(base.out / SUMMARY_NAME, summary)
    return summary


def cmd_sample(args: argparse.Namespace) -> int:
    job = plan_sample(args)
    run_sample(job, args.quiet)
    print(
        f"brgm: wrote posterior samples and uncertainty maps of {len(job.base.paths)} image(s) and {SUMMARY_NAME} "
        f"to {job.base.out}"
    )
    return 0


# ----------------------------------------------------------------------------- brgm demo


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="reconstruct the shipped examples with the embedded prior (make demo)",
        description="Super-resolution x4 and x8 and two inpainting tasks on the examples/ images; "
        "writes a PNG grid and a metrics table per task.",
    )
    parser.add_argument("--generator", default="fashion-mnist-32", help="prior name or checkpoint path")
    parser.add_argument("--steps", type=positive_int, default=None, help="MAP steps (default: the prior's card)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), metavar="DIR", help="output folder")
    parser.add_argument("--force", action="store_true", help="replace the outputs of an earlier demo run")
    parser.add_argument("--quiet", action="store_true", help="hide progress bars")
    parser.set_defaults(run=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from brgm_pyro.demo import run_demo

    check_output_dir(args.out)
    start = time.perf_counter()
    result = run_demo(args.out, generator=args.generator, steps=args.steps, progress=not args.quiet,
                      force=args.force)
    print((args.out / "metrics.md").read_text(), end="")
    print(f"brgm demo: {len(result['metrics'])} tasks in {time.perf_counter() - start:.0f} s; grids "
          f"(input | baseline | BRGM | truth) and metrics.md / metrics.json are in {args.out}/")
    return 0


# ----------------------------------------------------------------------------- brgm train-prior


def add_train_prior_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train-prior",
        help="train a small StyleGAN2 prior on Fashion-MNIST (resumable)",
        description="The StyleGAN2 recipe for small priors (brgm_pyro/training/recipe.py). Re-running with the same "
        "--out resumes from its last checkpoint.",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="run folder (resumes if present)")
    parser.add_argument("--kimg", type=positive_float, default=1000.0, help="train until this many thousand images")
    parser.add_argument("--checkpoint-kimg", type=positive_float, default=10.0)
    parser.add_argument("--snapshot-kimg", type=positive_float, default=50.0)
    parser.add_argument("--max-minutes", type=positive_float, default=None, help="stop (after a checkpoint)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--channel-base", type=positive_int, default=2048)
    parser.add_argument("--channel-max", type=positive_int, default=64)
    parser.add_argument("--r1-gamma", type=nonnegative_float, default=0.1, help="R1 weight (default 0.1)")
    parser.add_argument(
        "--pl-weight", type=nonnegative_float, default=2.0, help="path-length regularisation weight (default 2; 0: off)"
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=cmd_train_prior)


def cmd_train_prior(args: argparse.Namespace) -> int:
    from brgm_pyro.data import load_fashion_mnist
    from brgm_pyro.training.recipe import TrainConfig, train_prior

    check_output_dir(args.out)
    config = TrainConfig(
        batch_size=args.batch_size,
        channel_base=args.channel_base,
        channel_max=args.channel_max,
        d_channel_base=args.channel_base,
        d_channel_max=args.channel_max,
        r1_gamma=args.r1_gamma,
        pl_weight=args.pl_weight,
        seed=args.seed,
    )
    images, _ = load_fashion_mnist("train")
    trainer = train_prior(
        images,
        args.out,
        kimg=args.kimg,
        config=config,
        checkpoint_kimg=args.checkpoint_kimg,
        snapshot_kimg=args.snapshot_kimg,
        device=args.device,
        progress=not args.quiet,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
    )
    print(f"brgm train-prior: {trainer.cur_nimg / 1000:.1f} kimg; generator at {args.out / 'generator.safetensors'}")
    return 0


# ----------------------------------------------------------------------------- brgm info / convert


def add_info_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe a generator checkpoint",
        description="Resolution, channels, num_ws, parameters and source format of a checkpoint or prior name.",
    )
    parser.add_argument("checkpoint", help="prior name or checkpoint path (.safetensors, .pkl, .pt)")
    parser.set_defaults(run=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    from brgm_pyro.checkpoints import registered_priors, sniff_format

    G = load_generator(args.checkpoint)
    path = registered_priors().get(args.checkpoint, Path(args.checkpoint))
    summary = describe(G)
    summary["source_format"] = getattr(G, "source_format", None) or (
        sniff_format(path) if Path(path).exists() else "download"
    )
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    return 0


def add_convert_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a StyleGAN2 checkpoint (NVIDIA .pkl, TensorFlow .pkl, rosinality .pt) to .safetensors",
        description="Reads the input with the restricted loader (no code in it runs) and writes the "
        "project's safetensors format, which never needs unpickling.",
    )
    parser.add_argument("input", help="checkpoint path or public prior name")
    parser.add_argument("output", type=Path, help="output .safetensors file")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.set_defaults(run=cmd_convert)


def cmd_convert(args: argparse.Namespace) -> int:
    from brgm_pyro.checkpoints import save_generator

    if args.output.suffix != ".safetensors":
        raise InputError(f"The output must end in .safetensors, got {args.output.name!r}; rename it.")
    check_output_dir(args.output.parent if str(args.output.parent) else Path("."))
    io.check_not_input(args.output, [Path(args.input)])
    if args.output.exists() and not args.force:
        raise FileExistsError(f"{args.output} exists; pass --force to replace it.")
    G = load_generator(args.input)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    info = {"converted_from": str(args.input), "source_format": getattr(G, "source_format", None)}
    save_generator(G, args.output, info=info)
    print(f"brgm convert: wrote {args.output} ({G.resolution} px, {G.channels} channel(s), {G.num_ws} ws)")
    return 0


# ----------------------------------------------------------------------------- entry point


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="brgm", description="Bayesian image reconstruction with a StyleGAN2 prior (BRGM), in Pyro."
    )
    parser.add_argument("--version", action="version", version=f"brgm-pyro {brgm_pyro.__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_reconstruct_parser(subparsers)
    add_sample_parser(subparsers)
    add_demo_parser(subparsers)
    add_train_prior_parser(subparsers)
    add_info_parser(subparsers)
    add_convert_parser(subparsers)
    return parser


def _error_text(err: BaseException) -> str:
    """One line for an error: the project's messages as they are, OS errors with the file named."""
    if isinstance(err, OSError) and err.strerror and err.filename and str(err).startswith("["):
        text = f"cannot access {err.filename}: {err.strerror}."
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``brgm`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        print(f"brgm: error: {_error_text(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0
    try:
        return args.run(args)
    except INPUT_ERRORS as err:
        if args.traceback:
            raise
        print(f"brgm: error: {_error_text(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except torch.cuda.OutOfMemoryError:
        if args.traceback:
            raise
        print("brgm: error: out of GPU memory; lower --batch-size or use --device cpu.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("brgm: interrupted; finished outputs are kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
