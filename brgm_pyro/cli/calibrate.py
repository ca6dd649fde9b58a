"""``brgm calibrate``: calibrate a prior's intervals on the user's own clean validation images."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from brgm_pyro.cli.choices import METHODS
from brgm_pyro.cli.common import (
    DEFAULT_PRIOR,
    add_corruption_options,
    add_generator_options,
    add_map_options,
    add_model_options,
    add_threads_option,
    nonnegative_float,
    note,
    resolve_device,
)
from brgm_pyro.cli.sample import add_sampling_options, inference_options
from brgm_pyro.errors import InputError
from brgm_pyro.output_lock import check_writable, claim_output


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="calibrate a prior's intervals on clean validation images",
        description=(
            "Corrupt each clean validation image as --task says, sample its posterior exactly as brgm sample "
            "will with the same options, and fit the intervals' calibration (conformal risk control, "
            "brgm_pyro.uncertainty.conformal) per region kind: the pixels the data pin and those they cannot. Writes the "
            "calibration into --out (a new JSON file, or added to one, e.g. a prior's card), for brgm sample "
            "--calibration FILE. The guarantee holds for new images like these: give images, masks and noise "
            "like those it will be used on. Each image's scores are kept in --scores, so a stopped run resumes."
        ),
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="CLEAN.png", help="clean validation images")
    add_generator_options(parser)
    add_threads_option(parser)
    corruption = add_corruption_options(parser)
    corruption.add_argument(
        "--free-form", action="store_true",
        help="inpaint with a seeded free-form mask per image (brgm_pyro.forward.free_form) instead of --mask",
    )
    corruption.add_argument(
        "--noise", type=nonnegative_float, default=0.0, help="std of the noise added to y = f(x) (default 0)"
    )
    model = parser.add_argument_group("model")
    add_model_options(model)
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--method", choices=METHODS, default="laplace",
                          help="inference method, as brgm sample's (default: laplace)")
    add_sampling_options(model, sampling)
    add_map_options(parser.add_argument_group("MAP (the starting point)"))
    parser.add_argument("--out", required=True, type=Path, metavar="FILE.json",
                        help="calibration file to write, or to add this task's calibration to")
    parser.add_argument("--replace", action="store_true", help="replace a calibration of this task in --out")
    parser.add_argument("--scores", type=Path, metavar="DIR", help="per-image scores (default: FILE.scores/)")
    parser.add_argument("--data", help="what the images are, in words, kept in the calibration")
    parser.add_argument("--quiet", action="store_true", help="hide progress bars and notes")
    parser.set_defaults(run=run)


def _corruption(args: argparse.Namespace, resolution: int):
    """The corruption of image i: Downsample, one --mask, or a free-form mask seeded by --seed and i."""
    from brgm_pyro import io
    from brgm_pyro.forward import Downsample, Mask
    from brgm_pyro.forward.free_form import free_form_mask

    if args.task == "superres":
        if args.mask is not None or args.free_form:
            raise InputError("--mask and --free-form are for --task inpaint; drop them for --task superres.")
        if args.factor is None:
            raise InputError("--task superres needs --factor (the inputs it is for are the clean images / factor).")
        f = Downsample(args.factor, args.kernel or "bicubic", sigma=args.sigma)
        f.output_shape((1, 1, resolution, resolution))
        return lambda _: f
    if args.factor is not None or args.kernel is not None or args.sigma is not None:
        raise InputError("--factor, --kernel and --sigma are for --task superres; drop them for --task inpaint.")
    if (args.mask is None) == (not args.free_form):
        raise InputError("--task inpaint needs either --mask MASK.png (white = observed) or --free-form.")
    if args.free_form:
        return lambda index: free_form_mask(resolution, seed=args.seed * 100_003 + index)
    f = Mask(io.read_mask(args.mask))
    f.output_shape((1, 1, resolution, resolution))
    return lambda _: f


def run(args: argparse.Namespace) -> int:
    import brgm_pyro as bp
    from brgm_pyro import io
    from brgm_pyro.checkpoints import load_generator
    from brgm_pyro.cli.plan import resolve_model
    from brgm_pyro.uncertainty.calibrate import calibrate
    from brgm_pyro.uncertainty.conformal import read_calibrations, save_calibration

    options = inference_options(args)
    out = args.out
    io.check_not_input(out, list(args.images))
    source = args.generator if args.generator is not None else DEFAULT_PRIOR
    if args.generator is None:
        note(f"no --generator given: calibrating the embedded prior {DEFAULT_PRIOR}.", args.quiet)
    G = load_generator(source, device=resolve_device(args.device))
    images = io.read_images(args.images, channels=G.channels)
    if tuple(images.shape[-2:]) != (G.resolution, G.resolution):
        raise InputError(
            f"The validation images are {images.shape[-1]}x{images.shape[-2]} pixels, but the prior makes "
            f"{G.resolution}x{G.resolution} images; give clean images at that size."
        )
    corruption = _corruption(args, G.resolution)
    first = corruption(0)
    task = getattr(first, "task", None)
    # Checked again when writing; here so that a long run does not end in a refusal.
    if out.exists() and task in read_calibrations(json.loads(out.read_text())) and not args.replace:
        raise InputError(f"{out} already holds a calibration for {task}; pass --replace or choose another --out.")
    params, _, schedule, _ = resolve_model(args, first(images[:1]).clamp(0, 1), first, G)
    data = args.data or f"{len(args.images)} images from {args.images[0]} to {args.images[-1]}"
    scores = args.scores or out.with_name(out.name + ".scores")
    check_writable(out.parent)
    with claim_output(scores, "calibrate", "--scores" if args.scores else "--out"):
        calibration = calibrate(
            images, corruption, G, args.num_samples, noise=args.noise, data=data, scores_dir=scores, seed=args.seed,
            progress=not args.quiet, method=args.method, model=args.model, params=params,
            perceptual=args.perceptual, sigma_reach=args.sigma_reach, map_schedule=schedule, **options,
        )
        save_calibration(out, calibration, replace=args.replace)

    def shown(value: float) -> str:
        return "unreachable" if math.isinf(value) else f"{value:.2f}"

    scales = ", ".join(f"{region} {' / '.join(shown(v) for v in calibration.scales[region][0.9])}"
                       for region in calibration.scales)
    print(f"brgm: calibrated {calibration.task} on {calibration.images} images (90%: lambda {scales}; "
          f"image-level q {shown(calibration.image_scales[0.9])}) and wrote it to {out}; use it with "
          f"`brgm sample ... --calibration {out}` (brgm-pyro {bp.__version__}).")
    return 0
