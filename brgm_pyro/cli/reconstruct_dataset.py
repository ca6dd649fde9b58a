"""``brgm reconstruct-dataset``: every image of a folder, over the processes of a torchrun job, resumable.

    brgm reconstruct-dataset low/ --task superres --factor 4 --out rec/
    torchrun --nproc_per_node 2 -m brgm_pyro.cli reconstruct-dataset low/ --task superres --factor 4 --out rec/

The work is :func:`brgm_pyro.dataset.run.reconstruct_dataset`; this module turns the options that
``brgm reconstruct`` and ``brgm sample`` also take into its arguments, with the same checks.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brgm_pyro.cli.choices import DEFAULT_MODEL, METHODS
from brgm_pyro.cli.common import (
    DEFAULT_PRIOR,
    EXIT_SOME_FAILED,
    add_run_options,
    check_output_dir,
    note,
    positive_int,
    resolve_device,
)
from brgm_pyro.cli.sample import MCMC_OPTIONS, SVI_OPTIONS, add_sampling_options, inference_options
from brgm_pyro.errors import InputError

if TYPE_CHECKING:
    from brgm_pyro.dataset.manifest import Manifest
    from brgm_pyro.dataset.run import PosteriorRequest

# Options of the posterior that mean nothing without --posterior, with their defaults once it is given.
POSTERIOR_DEFAULTS = {"num_samples": 16, "model": DEFAULT_MODEL, "sigma_reach": "auto"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reconstruct-dataset",
        help="reconstruct every image of a folder (resumable; several processes, GPUs or nodes with torchrun)",
        description=(
            "MAP reconstruction, and with --posterior the posterior of each image, of every image under "
            "INPUT_DIR (subfolders included, hidden files skipped), as brgm reconstruct and brgm sample do. "
            "Run it as is for one process, or under torchrun for several (one per GPU or group of cores, on one "
            "or several nodes; the output folder must then be shared). Writes OUT/images/REL_input.png, "
            "REL_reconstruction.png, REL_reconstruction_corrupted.png and, with --posterior, REL_mean.png, "
            "REL_std.png and REL_posterior.nc per input REL; OUT/run.json (the settings) and OUT/manifest/ (a "
            "record per image: status, metrics, seed). Rerunning the same command continues where it stopped; "
            "images that cannot be read or have the wrong size are recorded as failed and the run goes on. "
            "brgm report OUT makes a browsable page of it."
        ),
    )
    parser.add_argument("input_dir", type=Path, metavar="INPUT_DIR", help="folder of corrupted images (read only)")
    _, model, optimiser = add_run_options(parser, "MAP")
    optimiser.add_argument(
        "--batch-size", type=positive_int, default=8, help="images per MAP batch and unit of work (default 8)"
    )
    sampling = parser.add_argument_group("posterior (each image on its own, with --posterior)")
    sampling.add_argument(
        "--posterior", dest="method", choices=METHODS, default=None,
        help="also sample each image's posterior with this method (default: the MAP only)",
    )
    add_sampling_options(model, sampling)
    parser.set_defaults(run=run, **dict.fromkeys(POSTERIOR_DEFAULTS))


def _posterior(args: argparse.Namespace) -> PosteriorRequest | None:
    from brgm_pyro.dataset.run import PosteriorRequest

    if args.method is None:
        given = [dest for dest in (*POSTERIOR_DEFAULTS, *SVI_OPTIONS.values(), *MCMC_OPTIONS.values())
                 if getattr(args, dest) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise InputError(f"{flag} only applies with --posterior; add --posterior svi (or nuts, hmc) or drop it.")
        return None
    for dest, default in POSTERIOR_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    return PosteriorRequest(args.method, args.num_samples, args.model, args.sigma_reach, inference_options(args))


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """Check the options and build the arguments of ``reconstruct_dataset``; write nothing."""
    import torch

    from brgm_pyro import io
    from brgm_pyro.checkpoints import load_generator
    from brgm_pyro.cli.plan import check_task_options, corruption, resolve_model, search_settings
    from brgm_pyro.dataset.distributed import local_device

    check_task_options(args)
    posterior = _posterior(args)
    check_output_dir(args.out)
    mask = io.read_mask(args.mask) if args.task == "inpaint" else None
    source = args.generator if args.generator is not None else DEFAULT_PRIOR
    G = load_generator(source, device=local_device(resolve_device(args.device)))
    notes = [] if args.generator is not None else [f"no --generator given: using the embedded prior {DEFAULT_PRIOR}."]
    size = G.resolution
    if args.task == "superres":
        # Unlike brgm reconstruct, not inferred from the inputs: one odd file must not set it for a folder.
        if args.factor is None:
            raise InputError("--task superres needs --factor for a folder (the factor is not inferred from "
                             "its images); add e.g. --factor 4.")
        size = G.resolution // args.factor
    forward, _, _ = corruption(args, torch.zeros(1, G.channels, size, size), mask, G.resolution)
    clean = (1, G.channels, G.resolution, G.resolution)
    params, perceptual, schedule, _ = resolve_model(args, torch.zeros(forward.output_shape(clean)), forward, G)
    return {
        "input_dir": args.input_dir,
        "out": args.out,
        "forward": forward,
        "generator": G,
        "posterior": posterior,
        "params": params,
        "perceptual": perceptual,
        "schedule": schedule,
        "search": search_settings(args),
        "batch_size": args.batch_size,
        "seed": args.seed,
        "force": args.force,
        "notes": notes,
    }


def _failures(manifest: Manifest, out: Path) -> str | None:
    """One sentence on the images of this run (those in the folder now) that failed, or None when none did."""
    from brgm_pyro.dataset.manifest import RECORDS_DIR

    failed = sorted(image for image in manifest.planned if manifest.status(image) == "failed")
    if not failed:
        return None
    first = manifest.images[failed[0]]["reason"].rstrip(".")
    return (f"{len(failed)} image(s) failed (the first, {failed[0]}: {first}); every reason is in "
            f"{out / RECORDS_DIR}/ and in `brgm report {out}`; fix or remove those images and run the same command "
            "again to finish them.")


def run(args: argparse.Namespace) -> int:
    from brgm_pyro.dataset.run import reconstruct_dataset

    arguments = plan(args)
    first = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 speaks
    for message in arguments.pop("notes"):
        note(message, args.quiet or not first)
    result = reconstruct_dataset(**arguments, progress=not args.quiet)
    if result.manifest is None:
        return 0
    counts = result.manifest.counts()
    print(
        f"brgm: {result.done} image(s) reconstructed now, {result.skipped} done before, {result.failed} failed; "
        f"{counts['done']} of {sum(counts.values())} done in {args.out} (brgm report {args.out} shows them)",
        flush=True,
    )
    failures = _failures(result.manifest, args.out)
    if failures is None:
        return 0
    print(f"brgm: error: {failures}", file=sys.stderr)
    return EXIT_SOME_FAILED
