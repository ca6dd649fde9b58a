"""The planning ``brgm reconstruct`` and ``brgm sample`` share: every input checked before any output.

:func:`plan_job` reads and checks every input and option the two commands have in common and
returns a :class:`Job`; :class:`SummaryFile` and :func:`write_map_files` write what both commands
write. The checks come before any output: a command that fails here leaves the disk as it was.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brgm_pyro import ReconstructionResult, io
from brgm_pyro.checkpoints import load_generator
from brgm_pyro.cli.common import (
    DEFAULT_PRIOR,
    SUMMARY_NAME,
    check_output_dir,
    check_outputs,
    note,
    resolve_device,
)
from brgm_pyro.errors import InputError
from brgm_pyro.forward import Downsample, Mask, Operator
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.models.brgm import BRGMParams
from brgm_pyro.problem import prepare_problem
from brgm_pyro.provenance import versions
from brgm_pyro.search import SearchSettings
from brgm_pyro.stylegan2 import StyleGAN2Generator, describe

# The MAP's files per input NAME: NAME_<kind>.png.
MAP_OUTPUTS = ("reconstruction", "input", "reconstruction_corrupted")
# How many converted inputs a note names before it counts the rest.
NAMED_IN_NOTE = 3


@dataclass
class Job:
    """Everything a command checked, ready to run; nothing written yet."""

    paths: list[Path]
    names: list[str]
    y: torch.Tensor
    input_channels: list[int]
    forward: Operator
    generator: StyleGAN2Generator
    params: BRGMParams
    perceptual: nn.Module | None
    schedule: MAPSchedule
    search: SearchSettings | None
    out: Path
    outputs: list[dict[str, Path]]
    settings: dict[str, Any]
    notes: list[str]

    def show_notes(self, quiet: bool) -> None:
        for message in self.notes:
            note(message, quiet)

    def input_record(self, index: int) -> dict[str, Any]:
        """The brgm.json fields that say which file input ``index`` was and how it was read."""
        channels = self.input_channels[index]
        return {
            "name": self.names[index],
            "input": str(self.paths[index]),
            "input_channels": channels,
            "conversion": _conversion(channels, self.generator.channels),
        }


def _output_names(paths: Sequence[Path]) -> list[str]:
    seen: dict[str, Path] = {}
    for path in paths:
        other = seen.setdefault(path.stem, path)
        if other is not path:
            if other.resolve() == path.resolve():
                raise InputError(f"The input {path} is given twice; pass each image once.")
            raise InputError(
                f"The inputs {other} and {path} share the name {path.stem!r}, so their outputs would "
                "collide; rename one of them."
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


def check_task_options(args: argparse.Namespace) -> None:
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


def corruption(
    args: argparse.Namespace, y: torch.Tensor, mask: torch.Tensor | None, resolution: int
) -> tuple[Operator, torch.Tensor, dict[str, Any]]:
    """The operator f of --task and its options, checked against the inputs y; y as the model sees it."""
    height, width = y.shape[-2:]
    if args.task == "superres":
        if height != width:
            raise InputError(
                f"The inputs are {width}x{height} pixels (width x height), but the generator makes square "
                f"images; crop them to a square of {resolution} / factor pixels."
            )
        factor, inferred = _superres_factor(args, height, resolution)
        kernel = args.kernel or "bicubic"
        forward = Downsample(factor, kernel, sigma=args.sigma)
        record = {"factor": factor, "factor_inferred": inferred, "kernel": kernel, "sigma": forward.sigma}
        return forward, y, {"task": args.task, "operator": "Downsample", **record, "mask": None}
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
    record = {"mask": str(args.mask), "observed_fraction": float(mask.mean())}
    # the input as the model sees it (the library applies f.observe too): 0 in the hole
    return forward, forward.observe(y), {"task": args.task, "operator": "Mask", **record}


def _conversion(from_channels: int, to_channels: int) -> str | None:
    if from_channels == to_channels:
        return None
    if to_channels == 1:
        return "colour converted to grayscale (BT.601 luma: 0.299 R + 0.587 G + 0.114 B)"
    return "grayscale repeated to RGB"


def _conversion_note(paths: Sequence[Path], input_channels: Sequence[int], channels: int) -> str | None:
    """One line naming the inputs converted to the prior's channel count; None when none was."""
    converted = [path.name for path, c in zip(paths, input_channels) if c != channels]
    if not converted:
        return None
    named = ", ".join(converted[:NAMED_IN_NOTE])
    if len(converted) > NAMED_IN_NOTE:
        named += f" and {len(converted) - NAMED_IN_NOTE} more"
    if channels == 1:
        what = "colour input(s) converted to grayscale (BT.601 luma) for the grayscale prior"
    else:
        what = "grayscale input(s) repeated to RGB for the RGB prior"
    return f"{len(converted)} {what}: {named} (recorded in {SUMMARY_NAME})."


def search_settings(args: argparse.Namespace) -> SearchSettings | None:
    """The mode search of --modes K (None for 0: the single start at the prior's average)."""
    return SearchSettings(modes=args.modes) if args.modes else None


def resolve_model(
    args: argparse.Namespace, y: torch.Tensor, forward: Operator, G: StyleGAN2Generator
) -> tuple[BRGMParams, nn.Module | None, MAPSchedule, list[str]]:
    """What the model and the MAP run with, resolved on the inputs y: the parameters (--preset, then
    --sigma-pixel, --sigma-percept, --kappa), the perceptual network (--perceptual), the MAP's schedule (the
    prior card's, then --steps, --lr); and the names of the overridden parameters."""
    problem = prepare_problem(y, forward, G, args.preset, args.perceptual)
    overrides = {
        name: value
        for name, value in (
            ("sigma_pixel", args.sigma_pixel),
            ("sigma_percept", args.sigma_percept),
            ("kappa", args.kappa),
        )
        if value is not None
    }
    schedule = replace(
        problem.card.schedule, **{k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
    )
    return replace(problem.params, **overrides), problem.perceptual, schedule, sorted(overrides)


def plan_job(
    args: argparse.Namespace, output_kinds: Mapping[str, str], other_inputs: Sequence[Path] = ()
) -> Job:
    """Check every input and option the two commands share; raise on the first problem, write nothing.

    Args:
        args: the parsed command line.
        output_kinds: per input NAME, the files the command writes: kind -> suffix, as NAME_<kind><suffix>.
        other_inputs: the command's further input files, which no output may overwrite.
    """
    check_task_options(args)
    paths = list(args.images)
    names = _output_names(paths)
    raw = [io.read_image(path) for path in paths]
    mask = io.read_mask(args.mask) if args.task == "inpaint" else None
    out = args.out
    check_output_dir(out)
    outputs = [
        {kind: out / f"{name}_{kind}{suffix}" for kind, suffix in output_kinds.items()} for name in names
    ]
    source = args.generator if args.generator is not None else DEFAULT_PRIOR
    named_inputs = [args.mask, Path(source), *other_inputs]
    protected = paths + [p for p in named_inputs if p is not None and p.is_file()]
    every_output = [p for files in outputs for p in files.values()] + [out / SUMMARY_NAME]
    check_outputs(every_output, protected, args.force)

    G = load_generator(source, device=resolve_device(args.device))
    y = io.read_images(paths, channels=G.channels)
    forward, y, corruption_record = corruption(args, y, mask, G.resolution)
    # Resolve the preset and the perceptual network once, on the first batch; this also checks
    # y, f and G against each other before anything is written.
    params, perceptual, schedule, overrides = resolve_model(args, y[: args.batch_size], forward, G)
    search = search_settings(args)
    generator_path = Path(source)
    settings = {
        "generator": {
            "source": source,
            "path": str(generator_path.resolve()) if generator_path.is_file() else None,
            "name": getattr(G, "name", None),
            **describe(G),
        },
        "corruption": corruption_record,
        "preset": args.preset,
        "params": asdict(params),
        "params_overridden": overrides,
        "schedule": asdict(schedule),
        "search": None if search is None else asdict(search),
        "perceptual": {
            "requested": args.perceptual,
            "network": type(perceptual).__name__ if perceptual is not None else None,
        },
        "seed": args.seed,
        "device": str(G.w_avg.device),
        "batch_size": args.batch_size,
    }
    input_channels = [img.shape[0] for img in raw]
    notes = []
    if args.generator is None:
        notes.append(f"no --generator given: using the embedded prior {DEFAULT_PRIOR}.")
    conversion = _conversion_note(paths, input_channels, G.channels)
    if conversion is not None:
        notes.append(conversion)
    return Job(
        paths=paths,
        names=names,
        y=y,
        input_channels=input_channels,
        forward=forward,
        generator=G,
        params=params,
        perceptual=perceptual,
        schedule=schedule,
        search=search,
        out=out,
        outputs=outputs,
        settings=settings,
        notes=notes,
    )


def write_map_files(files: Mapping[str, Path], rec: ReconstructionResult, index: int) -> None:
    """The MAP's files (:data:`MAP_OUTPUTS`) of image ``index`` of ``rec``."""
    io.write_image(files["reconstruction"], rec.image[index])
    io.write_image(files["input"], rec.y[index])
    io.write_image(files["reconstruction_corrupted"], rec.y_reconstructed[index])


class SummaryFile:
    """A command's brgm.json, rewritten as each image finishes so that a stopped run keeps its record."""

    def __init__(self, out: Path, command: str, settings: dict[str, Any]) -> None:
        self.path = out / SUMMARY_NAME
        self.started = time.perf_counter()
        self.summary: dict[str, Any] = {
            "command": command,
            "complete": False,
            "settings": settings,
            "versions": versions(),
            "images": [],
        }

    def add(self, entries: Sequence[dict[str, Any]]) -> None:
        self.summary["images"].extend(entries)
        self.summary["wall_time_s"] = time.perf_counter() - self.started
        io.write_json(self.path, self.summary)

    def finish(self) -> dict[str, Any]:
        self.summary["complete"] = True
        io.write_json(self.path, self.summary)
        return self.summary
