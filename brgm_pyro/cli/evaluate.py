"""``brgm evaluate``: BRGM against the methods a user would pick instead, on the same corrupted images.

    brgm evaluate --task superres --factor 8 --out eval-x8/                    100 test images, every method
    brgm evaluate --task inpaint --masks all --num-images 20 --split val --out eval-inpaint/
    brgm evaluate --inputs low/ --truth high/ --task superres --factor 4 --methods bicubic,brgm --out eval/
    brgm evaluate --task superres --factor 8 --methods brgm --single-start --out eval-x8/   also brgm-single-start

The evaluation itself is :mod:`brgm_pyro.evaluation`; this module reads the command line into a
setting and a list of methods. A run that is stopped keeps its finished images; the same command
again skips them (``--force`` redoes them).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from brgm_pyro.cli.choices import KERNELS
from brgm_pyro.cli.common import (
    DEFAULT_PRIOR,
    UsageError,
    add_device_option,
    add_generator_option,
    add_seed_option,
    add_task_option,
    add_threads_option,
    check_output_dir,
    nonnegative_float,
    positive_float,
    positive_int,
    resolve_device,
)

if TYPE_CHECKING:
    from brgm_pyro.evaluation import Method
    from brgm_pyro.inference.map import MAPSchedule

__all__ = ["add_parser", "parse_indices", "run"]


def parse_indices(text: str) -> list[int]:
    """'0-9,20,31-33' -> [0, ..., 9, 20, 31, 32, 33] (ranges inclusive, order kept, repeats refused)."""
    indices: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            indices.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers and ranges such as 0-99,120, got {text!r}") from None
    if not indices or min(indices) < 0 or len(set(indices)) != len(indices):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative image indices, got {text!r}")
    return indices


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="compare BRGM with other methods on the same corrupted images (tables, outputs, grids)",
        description="Run every method that applies (or --methods) on corrupted images simulated from "
        "Fashion-MNIST, or given with --inputs/--truth, and write each output, a results table "
        "(results.md, results.json) and a grid (results.png: input | each method | truth). Finished images are kept "
        "and skipped when the command runs again.",
    )
    add_task_option(parser)
    corruption = parser.add_argument_group("corruption")
    corruption.add_argument("--factor", type=positive_int, help="superres factor (required for superres)")
    corruption.add_argument("--kernel", choices=KERNELS, default="bicubic", help="superres kernel")
    corruption.add_argument("--blur", type=positive_float, metavar="SIGMA",
                            help="a Gaussian blur of this width (pixels) before downsampling")
    corruption.add_argument("--masks", default="all", metavar="KIND,...",
                            help="inpaint mask kinds applied in turn: the seven rectangles (right-half, left-half, two-boxes, "
                                 "vertical-bar, top-right-quadrant, centre-box, bottom-half; default all) or free-form "
                                 "(brush strokes seeded by the image's index)")
    corruption.add_argument("--mask", type=Path, metavar="MASK.png",
                            help="with --inputs: the inpainting mask of every input (white = observed)")
    corruption.add_argument("--noise", type=nonnegative_float, default=0.0,
                            help="std of Gaussian noise added to the simulated inputs (default 0)")
    images = parser.add_argument_group("images")
    images.add_argument("--split", choices=("test", "val"), default="test", help="Fashion-MNIST split (default test)")
    images.add_argument("--num-images", type=positive_int, default=100, help="the first N images (default 100)")
    images.add_argument("--indices", type=parse_indices, help="image indices instead, e.g. 0-49,100")
    images.add_argument("--inputs", type=Path, metavar="DIR", help="corrupted inputs made elsewhere (PNG)")
    images.add_argument("--truth", type=Path, metavar="DIR", help="their true images, same file names")
    parser.add_argument("--methods", metavar="NAME,...", help="methods to run (default: all that apply)")
    parser.add_argument("--single-start", action="store_true",
                        help="also run brgm from the prior's average alone, without the mode search "
                        "(row brgm-single-start; search=None)")
    parser.add_argument("--keep-observed", action="store_true",
                        help="inpainting: also run brgm with y kept on the observed pixels (row brgm-keep-observed)")
    parser.add_argument("--steps", type=positive_int, metavar="N",
                        help="Adam steps of BRGM's MAP in the brgm rows (default: the prior card's)")
    add_generator_option(parser)
    add_device_option(parser)
    add_threads_option(parser)
    parser.add_argument("--batch-size", type=positive_int, default=25, help="images per method call (default 25)")
    parser.add_argument("--grid-rows", type=positive_int, default=8, help="images in results.png (default 8)")
    add_seed_option(parser, "the simulated noise and of the methods' random draws")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--force", action="store_true",
                        help="redo every image in DIR, also where it holds an evaluation of another setting or a "
                        "method run with other options (their outputs are replaced)")
    parser.add_argument("--quiet", action="store_true", help="hide the progress bar")
    parser.set_defaults(run=run)


def _setting(args: argparse.Namespace, size: int):
    from brgm_pyro import evaluation, io
    from brgm_pyro.baselines.masks import MASK_KINDS
    from brgm_pyro.forward import Mask

    if (args.inputs is None) != (args.truth is None):
        raise UsageError("--inputs and --truth go together: the corrupted images and their true images.")
    if args.task == "superres":
        if args.factor is None:
            raise UsageError("--task superres needs --factor (e.g. --factor 8 for 4x4 inputs of 32x32 images).")
        setting = evaluation.superres_setting(args.factor, args.kernel, args.blur, args.noise)
    else:
        if args.factor is not None or args.blur is not None:
            raise UsageError("--factor and --blur are for --task superres; inpainting takes --masks or --mask.")
        if args.inputs is not None:
            if args.mask is None:
                raise UsageError("--task inpaint with --inputs needs --mask MASK.png, the mask of the inputs.")
            f = Mask(io.read_mask(args.mask))
            return evaluation.files_setting("inpaint", f, args.inputs, args.truth, f"Mask({args.mask.name})")
        kinds = MASK_KINDS if args.masks == "all" else tuple(args.masks.split(","))
        setting = evaluation.inpaint_setting(kinds, size, args.noise)
    if args.inputs is not None:
        if args.noise:
            raise UsageError("--noise simulates inputs; inputs given with --inputs are used as they are.")
        return evaluation.files_setting(args.task, setting.corruption([]), args.inputs, args.truth, setting.description)
    return setting


def _with_steps(method: Method, schedule: MAPSchedule, steps: int | None) -> Method:
    """``method`` with --steps in its MAP schedule where it runs BRGM's MAP (brgm, brgm-mean), else as it is."""
    from brgm_pyro import evaluation

    options = {"brgm": "schedule", "brgm-mean": "map_schedule"}
    if steps is None or method.name not in options:
        return method
    return evaluation.Method(method.label, method.name, {**method.options, options[method.name]: schedule})


def run(args: argparse.Namespace) -> int:
    from brgm_pyro import evaluation
    from brgm_pyro.card import PriorCard
    from brgm_pyro.checkpoints import load_generator
    from brgm_pyro.fmnist import FMNISTEval

    check_output_dir(args.out)
    names = None if args.methods is None else [name.strip() for name in args.methods.split(",") if name.strip()]
    G = load_generator(args.generator or DEFAULT_PRIOR).to(resolve_device(args.device)).requires_grad_(False)
    schedule = PriorCard.of(G).schedule
    if args.steps is not None:
        schedule = replace(schedule, steps=args.steps)
    methods = [_with_steps(method, schedule, args.steps) for method in evaluation.default_methods(args.task, names)]
    if args.single_start:
        methods.append(evaluation.Method("brgm-single-start", "brgm", {"schedule": schedule, "search": None}))
    if args.keep_observed:
        if args.task != "inpaint":
            raise UsageError("--keep-observed is for --task inpaint, where y holds the observed pixels of the image.")
        methods.append(evaluation.Method("brgm-keep-observed", "brgm", {"schedule": schedule, "keep_observed": True}))
    setting = _setting(args, G.resolution)
    truth = labels = image_names = None
    if setting.files is None:
        truth, labels, image_names = evaluation.split_images(args.split, args.indices or range(args.num_images),
                                                             G.resolution)
    start = time.perf_counter()
    result = evaluation.evaluate(
        setting, methods, args.out, G, truth=truth, names=image_names, labels=labels, evaluator=FMNISTEval(),
        batch_size=args.batch_size, grid_rows=args.grid_rows, seed=args.seed, progress=not args.quiet,
        force=args.force,
    )
    print((args.out / "results.md").read_text(), end="")
    print(f"brgm evaluate: {len(methods)} methods on {len(result['names'])} images in "
          f"{time.perf_counter() - start:.0f} s; outputs, results.md / results.json and the grid results.png are in "
          f"{args.out}/")
    return 0
