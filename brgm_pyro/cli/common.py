"""What the ``brgm`` commands share: option groups, number types, output checks, threads, the error mapping.

This module and the parsers of the commands import no torch (the names their options offer come from
:mod:`brgm_pyro.cli.choices`), so that ``brgm --help`` answers at once; a command imports the library
when it runs, after :func:`run_command` has set its threads (:mod:`brgm_pyro.threads`).

The error mapping is narrow on purpose: only a user's mistake ends as one line ``brgm: error:
<sentence>`` with exit code 2. Those are the project's own input errors
(:class:`brgm_pyro.errors.InputError` and its subclasses, which every input check of the library
raises), command lines argparse cannot parse, and OS errors about the files the user named.
Anything else is a bug: its traceback is shown, with a line asking to report it, and exit code 1.
"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from brgm_pyro import threads
from brgm_pyro.cli.choices import KERNELS, MAP_DEFAULTS, PRESETS, SEARCH_MODES
from brgm_pyro.errors import InputError

EXIT_BUG = 1
EXIT_BAD_INPUT = 2
EXIT_SOME_FAILED = 3  # a run that went to the end, but some of its images failed (each with its reason)
EXIT_INTERRUPTED = 130
SUMMARY_NAME = "brgm.json"
# The prior embedded in the package: what --generator means when it is not given.
DEFAULT_PRIOR = "fashion-mnist-32"

# A user's mistake. InputError covers its subclasses CheckpointError, DatasetError,
# MissingWeightsError, InputTypeError and UsageError; the OS errors are those about a file the
# user named (missing, already there, a folder where a file was expected or the reverse, not
# readable or writable). A plain ValueError, TypeError or other OSError is not listed: from
# inside the library it means a bug.
INPUT_ERRORS = (
    InputError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


class UsageError(InputError):
    """A command line that argparse cannot parse."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` (one line, exit code 2) instead of exiting."""

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
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was given but no CUDA GPU is available; use --device cpu.")
    return name


def check_output_dir(path: Path) -> None:
    """Raise NotADirectoryError if ``path`` cannot be a folder (it or a parent is a file); creates nothing."""
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
    from brgm_pyro import io

    for path in outputs:
        io.check_not_input(path, protected)
    if not force:
        for path in outputs:
            if path.exists():
                raise FileExistsError(
                    f"{path} already exists (from an earlier run?); pass --force to overwrite it, "
                    "or choose another --out."
                )


def note(message: str, quiet: bool) -> None:
    """One line ``brgm: note: ...`` on stderr, unless --quiet."""
    if not quiet:
        print(f"brgm: note: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- option groups


def add_generator_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--generator, the same in every command (None: the embedded prior)."""
    parser.add_argument(
        "--generator",
        default=None,
        metavar="NAME_OR_FILE",
        help="the prior: a registered prior's name, or a checkpoint file (.safetensors, NVIDIA .pkl, rosinality "
        f".pt) (default: {DEFAULT_PRIOR}, the embedded prior)",
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="where to run (default: cuda if available)"
    )


def add_generator_options(parser: argparse.ArgumentParser) -> None:
    """--generator and --device."""
    add_generator_option(parser)
    add_device_option(parser)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """--threads, which :func:`run_command` applies before the command imports torch."""
    parser.add_argument(
        "--threads", type=positive_int, metavar="N",
        help=f"CPU threads of torch (default: ${threads.ENV} or $OMP_NUM_THREADS if set, else every usable core; "
        "idle threads sleep, so that other jobs get the cores)",
    )


def add_task_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", required=True, choices=("superres", "inpaint"),
        help="superres: super-resolution (the inputs are low-resolution images); inpaint: inpainting (the "
        "inputs have holes, which --mask marks)",
    )


def add_seed_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup, draws: str) -> None:
    """--seed; ``draws`` says what it seeds."""
    parser.add_argument(
        "--seed", type=nonnegative_int, default=0,
        help=f"seed of {draws}: the same seed gives the same result (default 0)",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="output folder (created if needed)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite outputs of an earlier run in DIR")
    parser.add_argument("--quiet", action="store_true", help="hide progress bars and notes")


def add_corruption_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--task and the corruption group (--factor, --kernel, --sigma, --mask); returns the group."""
    add_task_option(parser)
    corruption = parser.add_argument_group("corruption")
    corruption.add_argument("--factor", type=positive_int, help="superres factor (default: R / input size)")
    corruption.add_argument("--kernel", choices=KERNELS, help="superres kernel (default: bicubic)")
    corruption.add_argument(
        "--sigma", type=positive_float, help="width of the gaussian kernel in pixels (default: factor / 2)"
    )
    corruption.add_argument("--mask", type=Path, metavar="MASK.png", help="inpaint mask: white = observed")
    return corruption


def add_model_options(model: argparse._ArgumentGroup) -> None:
    """The preset, its overrides and the perceptual network, in the ``model`` group."""
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


def add_map_options(optimiser: argparse._ArgumentGroup) -> None:
    """--steps, --lr and --seed of the MAP."""
    optimiser.add_argument(
        "--steps", type=positive_int,
        help=f"Adam steps (default: the prior card's, else {MAP_DEFAULTS['steps']})",
    )
    optimiser.add_argument(
        "--lr", type=positive_float,
        help=f"Adam learning rate (default: the prior card's, else {MAP_DEFAULTS['lr']})",
    )
    add_seed_option(optimiser, "every random draw")


def add_search_option(optimiser: argparse._ArgumentGroup) -> None:
    """--modes: the mode search of the MAP (brgm_pyro.search), 0 for the paper's single start."""
    optimiser.add_argument(
        "--modes", type=nonnegative_int, default=SEARCH_MODES, metavar="K",
        help=f"the MAP is the best of K modes that a search of G's prior finds and refines (default {SEARCH_MODES}); "
        "0: one start at the prior's average, as in the paper",
    )


def add_run_options(
    parser: argparse.ArgumentParser, map_title: str
) -> tuple[argparse._ArgumentGroup, argparse._ArgumentGroup, argparse._ArgumentGroup]:
    """The options of every reconstructing command (``reconstruct``, ``sample``, ``reconstruct-dataset``).

    The prior, the corruption, the output folder, the threads, the model and the MAP; returns the groups
    (corruption, model, MAP), so that a command adds its own options next to their kin.
    """
    add_generator_options(parser)
    add_threads_option(parser)
    corruption = add_corruption_options(parser)
    _add_output_options(parser)
    model = parser.add_argument_group("model")
    add_model_options(model)
    optimiser = parser.add_argument_group(map_title)
    add_map_options(optimiser)
    add_search_option(optimiser)
    return corruption, model, optimiser


def add_job_options(
    parser: argparse.ArgumentParser, map_title: str
) -> tuple[argparse._ArgumentGroup, argparse._ArgumentGroup, argparse._ArgumentGroup]:
    """The options ``brgm reconstruct`` and ``brgm sample`` share, which ``plan.plan_job`` reads:
    IMAGE... and :func:`add_run_options`, whose groups it returns."""
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="corrupted input images (PNG)")
    return add_run_options(parser, map_title)


# ----------------------------------------------------------------------------- the error mapping


def error_text(err: BaseException) -> str:
    """One line for an error: the project's messages as they are, OS errors with the file named."""
    if isinstance(err, OSError) and err.strerror and err.filename and str(err).startswith("["):
        text = f"cannot access {err.filename}: {err.strerror}."
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def report_bad_input(err: BaseException) -> int:
    print(f"brgm: error: {error_text(err)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _run(args: argparse.Namespace) -> int:
    """``args.run(args)`` with its threads set (a command with --threads) and torch's deprecation of
    torch.jit.script, which torch's own forward-mode autodiff triggers, kept from the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        if "threads" not in args:
            return args.run(args)
        with threads.using(threads.choose(args.threads)):
            return args.run(args)


def _out_of_gpu_memory(err: Exception) -> bool:
    torch = sys.modules.get("torch")  # a command that ran out of GPU memory has imported torch
    return torch is not None and isinstance(err, torch.cuda.OutOfMemoryError)


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command ``args.run(args)`` and map how it ended to an exit code.

    0: done; 2: a user's mistake (:data:`INPUT_ERRORS`), one line; 1: anything else, a bug, with its
    traceback (or out of GPU memory, one line); 130: interrupted. ``--traceback`` lets every error
    propagate, for bug reports.
    """
    try:
        return _run(args)
    except INPUT_ERRORS as err:
        if args.traceback:
            raise
        return report_bad_input(err)
    except KeyboardInterrupt:
        print("brgm: interrupted; finished outputs are kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if args.traceback:
            raise
        if _out_of_gpu_memory(err):
            print("brgm: error: out of GPU memory; lower --batch-size or use --device cpu.", file=sys.stderr)
            return EXIT_BUG
        traceback.print_exc()
        print(
            "brgm: internal error: this is a bug in brgm-pyro, not a problem with your input; "
            "please report it with the traceback above and the command line.",
            file=sys.stderr,
        )
        return EXIT_BUG
