"""``brgm demo``: the shipped examples reconstructed with the embedded prior, a grid and metrics per task."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from brgm_pyro.cli.common import (
    DEFAULT_PRIOR,
    add_generator_option,
    add_threads_option,
    check_output_dir,
    positive_int,
)
from brgm_pyro.output_lock import claim_output


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="reconstruct the shipped examples with the embedded prior (make demo)",
        description="Super-resolution x4 and x8 and two inpainting tasks on the example images shipped "
        "with the package; writes a PNG grid and a metrics table per task.",
    )
    add_generator_option(parser)
    add_threads_option(parser)
    parser.add_argument(
        "--steps", type=positive_int, default=None, help="MAP steps (default: the prior's card)"
    )
    parser.add_argument("--out", type=Path, default=Path("demo-output"), metavar="DIR",
                        help="output folder (default: demo-output)")
    parser.add_argument("--force", action="store_true", help="replace the outputs of an earlier demo run in DIR")
    parser.add_argument("--quiet", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from brgm_pyro.demo import run_demo

    check_output_dir(args.out)
    start = time.perf_counter()
    with claim_output(args.out, "demo"):
        result = run_demo(args.out, generator=args.generator or DEFAULT_PRIOR, steps=args.steps,
                          progress=not args.quiet, force=args.force)
    print((args.out / "metrics.md").read_text(), end="")
    print(
        f"brgm demo: {len(result['metrics'])} tasks in {time.perf_counter() - start:.0f} s; grids "
        f"(input | baseline | BRGM | truth) and metrics.md / metrics.json are in {args.out}/"
    )
    return 0
