"""The ``brgm`` command line: the parser of every command, and :func:`main`.

    brgm reconstruct low/*.png --task superres --factor 4 --out rec/
    brgm reconstruct holes/*.png --generator G.safetensors --task inpaint --mask mask.png --out rec/
    brgm evaluate --task superres --factor 8 --out eval-x8/

Each command is a module of this package with ``add_parser(subparsers)`` (its options) and
``run(args) -> exit code``; what they share is in :mod:`brgm_pyro.cli.common`, and the planning
``reconstruct`` and ``sample`` share in :mod:`brgm_pyro.cli.plan`. A command checks everything
before it writes anything. A user's mistake ends with one line ``brgm: error: <sentence>`` on
stderr and exit code 2; anything else is a bug and shows its traceback, with exit code 1
(:func:`brgm_pyro.cli.common.run_command`); a data-set run that finished with failed images exits
with 3. ``brgm --traceback ...`` lets every error propagate. Parsing imports no torch: ``brgm --help``
and ``brgm CMD --help`` answer at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import brgm_pyro
from brgm_pyro.cli import (
    calibrate,
    convert,
    demo,
    evaluate,
    info,
    reconstruct,
    reconstruct_dataset,
    report,
    sample,
    train_prior,
)
from brgm_pyro.cli.common import ArgumentParser, UsageError, report_bad_input, run_command
from brgm_pyro.dataset.launcher import stop_with_launcher

__all__ = ["build_parser", "main"]

COMMANDS = (reconstruct, sample, calibrate, reconstruct_dataset, report, demo, evaluate, train_prior, info, convert)


def build_parser() -> ArgumentParser:
    """The ``brgm`` parser, with one subcommand per module of :data:`COMMANDS`."""
    parser = ArgumentParser(
        prog="brgm", description="Bayesian image reconstruction with a StyleGAN2 prior (BRGM), in Pyro."
    )
    parser.add_argument("--version", action="version", version=f"brgm-pyro {brgm_pyro.__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback of errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``brgm`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    stop_with_launcher()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        return report_bad_input(err)
    except SystemExit as done:  # --help, --version
        return done.code if isinstance(done.code, int) else 0
    return run_command(args)
