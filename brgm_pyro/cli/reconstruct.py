"""``brgm reconstruct``: MAP reconstructions of corrupted images, in batches, with their brgm.json."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from brgm_pyro.cli.common import SUMMARY_NAME, add_job_options, note, positive_int
from brgm_pyro.output_lock import claim_output

if TYPE_CHECKING:
    import torch

    from brgm_pyro.cli.plan import Job
    from brgm_pyro.stylegan2 import StyleGAN2Generator


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reconstruct",
        help="MAP reconstruction of corrupted images (super-resolution, inpainting)",
        description=(
            "MAP reconstruction under the BRGM model. The inputs are the corrupted images: low-resolution "
            "images of size R/factor for superres, R x R images with a hole for inpaint (R: the generator's "
            "resolution). Inputs are converted to the generator's channel count (colour to grayscale by "
            "BT.601 luma, grayscale repeated to RGB), with a note; brgm.json records it. Writes, per input "
            "NAME, NAME_reconstruction.png, NAME_input.png (the input as the model saw it, as 8-bit PNG: a "
            "lossless copy of an 8-bit input, the hole shown as 0 for inpaint) and "
            "NAME_reconstruction_corrupted.png, and one brgm.json with settings and per-image results."
        ),
    )
    _, _, optimiser = add_job_options(parser, "optimisation")
    optimiser.add_argument("--batch-size", type=positive_int, default=8, help="images per batch (default 8)")
    parser.set_defaults(run=run)


def plan(args: argparse.Namespace) -> Job:
    """Check every input and option of ``brgm reconstruct``; raise on the first problem, write nothing."""
    from brgm_pyro.cli.plan import MAP_OUTPUTS, plan_job

    return plan_job(args, dict.fromkeys(MAP_OUTPUTS, ".png"))


def w_statistics(w: torch.Tensor, G: StyleGAN2Generator) -> dict[str, float]:
    """Summary of one image's MAP latents w (L, D) against the prior N(w_avg, w_std^2).

    ``rms_z`` is the RMS of (w - w_avg) / w_std (about 1 for a draw of the prior); ``mean_cosine``
    the mean cosine between the L vectors w_i (1 when they are colinear, as for a mapping output).
    """
    from brgm_pyro.models.brgm import colinearity

    z = (w - G.w_avg.cpu()) / G.w_std.cpu()
    num_ws = w.shape[0]
    pairs = num_ws * (num_ws - 1) / 2
    return {
        "mean": float(w.mean()),
        "std": float(w.std()),
        "rms_z": float(z.square().mean().sqrt()),
        "mean_cosine": float(colinearity(w) / pairs) if pairs else 1.0,
    }


def run_job(job: Job, quiet: bool) -> dict[str, Any]:
    """Reconstruct in batches, writing each batch's images and the updated brgm.json as it finishes."""
    from tqdm.auto import tqdm

    import brgm_pyro as bp
    from brgm_pyro.cli.plan import SummaryFile, write_map_files
    from brgm_pyro.fit import check_fit

    batch_size = job.settings["batch_size"]
    summary = SummaryFile(job.out, "reconstruct", job.settings)
    count = len(job.paths)
    progress = tqdm(total=count, desc="images", unit="img", disable=quiet or count <= batch_size)
    for batch, start in enumerate(range(0, count, batch_size)):
        stop = min(start + batch_size, count)
        batch_started = time.perf_counter()
        rec = bp.reconstruct(
            job.y[start:stop],
            job.forward,
            job.generator,
            params=job.params,
            perceptual=job.perceptual,
            schedule=job.schedule,
            search=job.search,
            seed=job.settings["seed"],
            progress=not quiet,
        )
        batch_time = time.perf_counter() - batch_started
        fit = check_fit(rec, job.forward)
        entries = []
        for i, index in enumerate(range(start, stop)):
            files = job.outputs[index]
            write_map_files(files, rec, i)
            if misfit := fit.note(i, job.names[index]):
                note(misfit, quiet)
            entries.append(
                {
                    **job.input_record(index),
                    "outputs": {kind: path.name for kind, path in files.items()},
                    "batch": batch,
                    "batch_wall_time_s": batch_time,
                    "final_losses": {term: float(values[-1, i]) for term, values in rec.losses.items()},
                    "data_consistency": {k: float(v[i]) for k, v in rec.data_consistency.items()},
                    "fit": {**fit.record(i), **({"note": misfit} if misfit else {})},
                    "w": w_statistics(rec.w[i], job.generator),
                }
            )
        summary.add(entries)
        progress.update(stop - start)
    progress.close()
    return summary.finish()


def run(args: argparse.Namespace) -> int:
    job = plan(args)
    job.show_notes(args.quiet)
    with claim_output(job.out, "reconstruct"):
        run_job(job, args.quiet)
    print(f"brgm: wrote {len(job.paths)} reconstruction(s) and {SUMMARY_NAME} to {job.out}")
    return 0
