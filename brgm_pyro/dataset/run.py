"""Reconstruct every image of a folder, shared among the processes of a torchrun job and resumable: ``reconstruct_dataset``.

    G = bp.load_generator("fashion-mnist-32")
    run = reconstruct_dataset("scans/", "out/", bp.forward.Downsample(4), G, posterior=PosteriorRequest("svi", 16))

The images are the files under the input folder with an image suffix (hidden files and folders
skipped), named by their relative path. Sorted by that name they are cut into batches of
``batch_size`` in order, and batch ``b`` goes to rank ``b mod world_size`` (``brgm_pyro.dataset.distributed``).
Each rank runs the MAP of a batch at once, through the model's plate over images, then samples the
posterior of each image on its own, seeded by a hash of the run's seed and the image's name. A batch
holds the same images whatever the number of processes, so the per-image results do not depend on
it: bit for bit, on one kind of device with the same threads per process.

Why fixed batches rather than any split: the images of a batch share one Adam optimiser, and since
Adam works per coordinate and the loss is a sum over images, batching changes nothing in exact
arithmetic (in float64, batch 8 and batch 1 agree to 1e-15). In float32 the kernels for different
batch sizes round differently and a few hundred Adam steps amplify that to about 1e-3 in the image.
The posterior is sampled per image because its random draws would otherwise depend on the batch.

Per input REL (its relative path without the suffix), under ``OUT/images/``: ``REL_input.png`` (y as
the model sees it, unobserved pixels 0), ``REL_reconstruction.png`` (the MAP G(w)),
``REL_reconstruction_corrupted.png`` (f of it) and, with a posterior, ``REL_mean.png``, ``REL_std.png``
(per-pixel std through the magma colour map, from 0 to the ``std_vmax`` in its record) and
``REL_posterior.nc`` (ArviZ InferenceData). Each file is written atomically, then the image's record
is appended to the manifest (``brgm_pyro.dataset.manifest``): an image is done exactly when its record is.

Rerunning the same call continues: done images are skipped, the others are done (a batch with done
images still runs its MAP over all of its images, so that results stay those of an uninterrupted run,
but only the unfinished ones are written). Images that cannot be read or have the wrong size get a
"failed" record with the reason and are tried again by the next run. After ``kill -9`` of any process
every output is complete or absent; the next run removes the killed writers' temporary files before
any rank starts. One run at a time writes into an output folder: rank 0 claims it before it plans
(``brgm_pyro.output_lock``; a folder in use by another run, or one that cannot be written, is refused
then), and every rank holds it until it is done.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from brgm_pyro import io
from brgm_pyro.dataset.distributed import Ranks, process_group
from brgm_pyro.dataset.manifest import (
    Manifest,
    RecordWriter,
    new_attempt_id,
    open_run,
    read_manifest,
    settings_id,
)
from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.forward import as_operator
from brgm_pyro.inference.map import MAPSchedule
from brgm_pyro.models.brgm import BRGMParams
from brgm_pyro.output_lock import claim_output, join_output
from brgm_pyro.plotting import STD_CMAP, colorize
from brgm_pyro.posterior import Posterior
from brgm_pyro.problem import prepare_problem
from brgm_pyro.provenance import versions
from brgm_pyro.reconstruct import DEFAULT_SEARCH, ReconstructionResult, map_reconstruction
from brgm_pyro.sampling import DEFAULT_MODEL, METHODS, posterior_model, sample_posterior
from brgm_pyro.search import SearchSettings

__all__ = [
    "IMAGE_SUFFIXES",
    "DatasetRun",
    "PosteriorRequest",
    "image_seed",
    "list_images",
    "reconstruct_dataset",
    "shard",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
IMAGES_DIR = "images"
MAP_OUTPUTS = ("input", "reconstruction", "reconstruction_corrupted")
POSTERIOR_OUTPUTS = ("mean", "std", "posterior")


@dataclass(frozen=True)
class PosteriorRequest:
    """The posterior to sample for every image (``brgm_pyro.sampling.sample_posterior``'s arguments).

    ``options`` are the fields of the method's settings to override, e.g. ``{"steps": 500}`` for SVI."""

    method: str = "laplace"
    num_samples: int = 16
    model: str = DEFAULT_MODEL
    sigma_reach: float | str | None = "auto"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"Unknown posterior method {self.method!r}; choose one of: {', '.join(METHODS)}.")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise InputError(f"num_samples must be a positive integer, got {self.num_samples!r}.")
        if not isinstance(self.model, str):
            raise InputTypeError(
                f"The posterior model must be a registered model name, got {type(self.model).__name__}; "
                "register it with brgm_pyro.models.variants.register_model."
            )


@dataclass
class DatasetRun:
    """What one call did. On rank 0 the counts are over every rank and ``manifest`` is the merged
    manifest after all ranks finished; on other ranks they are the rank's own and ``manifest`` is None."""

    out: Path
    attempt: str
    done: int
    skipped: int
    failed: int
    manifest: Manifest | None = None


def list_images(input_dir: Path) -> list[str]:
    """The relative paths (POSIX, sorted) of the image files under ``input_dir``, hidden ones skipped."""
    found = []
    for path in input_dir.rglob("*"):
        relative = path.relative_to(input_dir)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.is_file():
            found.append(relative.as_posix())
    return sorted(found)


def image_seed(seed: int, image: str) -> int:
    """The seed of one image: a hash of the run's ``seed`` and the image's relative path, in [0, 2^31)."""
    digest = hashlib.sha256(f"{seed}/{image}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


def shard(images: Sequence[str], batch_size: int, rank: int, world_size: int) -> list[tuple[int, list[str]]]:
    """The batches (index, images) of ``rank``: ``images`` cut into batches of ``batch_size`` in order,
    batch b going to rank b mod ``world_size``."""
    batches = [list(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    return [(index, batch) for index, batch in enumerate(batches) if index % world_size == rank]


def _output_stems(images: Sequence[str]) -> dict[str, str | list[str]]:
    """Image -> the stem of its outputs (its relative path without the suffix), or the list of the other
    images with that stem when several share it (their outputs would collide)."""
    owners: dict[str, list[str]] = {}
    for image in images:
        owners.setdefault(image.rsplit(".", 1)[0], []).append(image)
    return {
        image: stem if len(names) == 1 else [other for other in names if other != image]
        for stem, names in owners.items()
        for image in names
    }


def _fingerprint(module: nn.Module | None, extra: Any = None) -> dict[str, Any] | None:
    """What identifies a network or operator: its class, its description and a hash of its state."""
    if module is None:
        return None
    digest = hashlib.sha256(repr(extra).encode())
    for name, tensor in sorted(module.state_dict().items()):
        array = tensor.detach().cpu().resolve_conj().contiguous().numpy()  # deepinv's physics hold conjugate views
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return {"type": type(module).__name__, "description": module.extra_repr(), "sha256": digest.hexdigest()}


def _check_folders(input_dir: Path, out: Path) -> None:
    if not input_dir.is_dir():
        raise InputError(f"The input folder {input_dir} does not exist or is not a folder; give a folder of images.")
    inside, outside = input_dir.resolve(), out.resolve()
    if outside == inside or inside in outside.parents or outside in inside.parents:
        raise InputError(
            f"The output folder {out} and the input folder {input_dir} overlap, so outputs could be read as "
            "inputs or written over them; choose an output folder outside the input folder."
        )
    if out.exists() and not out.is_dir():
        raise InputError(f"The output folder {out} exists as a file; choose another output folder.")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class _Job:
    """The checked inputs of a run, the same on every rank."""

    input_dir: Path
    out: Path
    forward: nn.Module
    generator: nn.Module
    params: BRGMParams
    perceptual: nn.Module | None
    schedule: MAPSchedule
    posterior: PosteriorRequest | None
    batch_size: int
    seed: int
    input_shape: tuple[int, ...]
    settings: dict[str, Any]
    settings_id: str
    search: SearchSettings | None = DEFAULT_SEARCH


def _plan(job: _Job, force: bool, held: ExitStack) -> dict[str, Any]:
    """On rank 0, before any rank writes: the output folder claimed (held until ``held`` closes), the images,
    which are done, and this attempt's id; or the error."""
    try:
        images = list_images(job.input_dir)
        if not images:
            raise InputError(
                f"The input folder {job.input_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}); "
                "give the folder of the corrupted images."
            )
        held.enter_context(claim_output(job.out, "reconstruct-dataset"))
        open_run(job.out, job.settings, force)
        for stale in io.stale_temporaries(job.out):
            stale.unlink()
        manifest = read_manifest(job.out)
    except (InputError, OSError) as err:
        return {"error": " ".join(str(err).split())}
    done = sorted(image for image, record in manifest.images.items() if record["status"] == "done")
    return {"attempt": new_attempt_id(), "images": images, "done": done, "started_unix": time.time()}


def _write_outputs(
    job: _Job, stem: str, rec: ReconstructionResult, post: Posterior | None
) -> tuple[dict[str, str], dict[str, Any]]:
    """Write one image's files (each atomically); return their paths relative to OUT and the image's metrics."""
    kinds = MAP_OUTPUTS + (POSTERIOR_OUTPUTS if post is not None else ())
    suffix = {"posterior": ".nc"}
    outputs = {kind: f"{IMAGES_DIR}/{stem}_{kind}{suffix.get(kind, '.png')}" for kind in kinds}
    for tensor in (rec.image, rec.y_reconstructed) + ((post.mean, post.std) if post is not None else ()):
        if not torch.isfinite(tensor).all():
            raise InputError("the reconstruction diverged (non-finite values), so nothing was written for it")
    io.ensure_output_dir((job.out / outputs["input"]).parent)
    io.write_image(job.out / outputs["input"], rec.y[0])
    io.write_image(job.out / outputs["reconstruction"], rec.image[0])
    io.write_image(job.out / outputs["reconstruction_corrupted"], rec.y_reconstructed[0])
    metrics: dict[str, Any] = {
        "rmse_y": float(rec.data_consistency["rmse"][0]),
        "psnr_y": float(rec.data_consistency["psnr"][0]),
        "losses": {term: float(values[-1, 0]) for term, values in rec.losses.items()},
    }
    if post is not None:
        std_vmax = max(float(post.std.max()), 1e-6)
        io.write_image(job.out / outputs["mean"], post.mean[0])
        io.write_image(job.out / outputs["std"], colorize(post.std[0], std_vmax, STD_CMAP))
        post.save_netcdf(job.out / outputs["posterior"])
        metrics["posterior"] = {**post.summary()["images"][0], "std_vmax": std_vmax}
    return outputs, metrics


def _read_input(job: _Job, image: str) -> torch.Tensor:
    """One input as (C, H, W) in the generator's channels; InputError or OSError if unusable."""
    y = io.read_image(job.input_dir / image, channels=job.generator.channels)
    if tuple(y.shape) != job.input_shape:
        _, height, width = job.input_shape
        raise InputError(
            f"{image} is {y.shape[2]}x{y.shape[1]} pixels, but this task needs {width}x{height} inputs "
            f"(the corruption applied to the generator's {job.generator.resolution}x{job.generator.resolution} "
            "images); resize it or check the task's options"
        )
    return y


class _Worker:
    """One rank's share of an attempt: reads, reconstructs, writes and records its batches."""

    def __init__(self, job: _Job, ranks: Ranks, plan: dict[str, Any], records: RecordWriter) -> None:
        self.job, self.ranks, self.plan, self.records = job, ranks, plan, records
        self.done = set(plan["done"])
        self.stems = _output_stems(plan["images"])
        self.host = socket.gethostname()
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        clean_shape = (1, job.generator.channels, job.generator.resolution, job.generator.resolution)
        self.observed = job.forward.observed(clean_shape, device="cpu")[0]

    def record(self, image: str, batch: int, **fields: Any) -> None:
        self.records.append(
            {
                "type": "image",
                "image": image,
                "settings_id": self.job.settings_id,
                "attempt": self.plan["attempt"],
                "rank": self.ranks.rank,
                "world_size": self.ranks.world_size,
                "host": self.host,
                "pid": os.getpid(),
                "batch": batch,
                "batch_size": self.job.batch_size,
                "seed": image_seed(self.job.seed, image),
                "finished": _now(),
                **fields,
            }
        )
        self.counts[fields["status"]] += 1

    def fail(self, image: str, batch: int, err: BaseException) -> None:
        self.record(image, batch, status="failed", reason=" ".join(str(err).split()))

    def run_batch(self, batch: int, images: list[str]) -> None:
        job = self.job
        readable, inputs = [], []
        for image in images:
            try:
                if isinstance(self.stems[image], list):
                    raise InputError(
                        f"{image} and {', '.join(self.stems[image])} would write outputs of the same name; "
                        "rename one of them"
                    )
                inputs.append(_read_input(job, image) * self.observed)
                readable.append(image)
            except (InputError, OSError) as err:
                if image not in self.done:
                    self.fail(image, batch, err)
        if not readable:
            return
        began = time.perf_counter()
        common = dict(params=job.params, perceptual=job.perceptual, progress=False)
        problem = prepare_problem(torch.stack(inputs), job.forward, job.generator, job.params, job.perceptual)
        model = None
        if job.posterior is not None:  # the MAP of the model (and reach) that sample_posterior will run
            model, problem, _, _ = posterior_model(job.posterior.model, job.posterior.sigma_reach, problem)
        rec = map_reconstruction(problem, job.schedule, model, job.seed, progress=False, search=job.search)
        map_seconds = (time.perf_counter() - began) / len(readable)
        for index, image in enumerate(readable):
            if image in self.done:
                continue
            began = time.perf_counter()
            one = rec.select(index)
            post = None
            if job.posterior is not None:
                request = job.posterior
                post = sample_posterior(
                    one.y, job.forward, job.generator, method=request.method, num_samples=request.num_samples,
                    model=request.model, map_result=one, sigma_reach=request.sigma_reach,
                    seed=image_seed(job.seed, image), **common, **request.options,
                )
            try:
                outputs, metrics = _write_outputs(job, self.stems[image], one, post)
            except InputError as err:
                self.fail(image, batch, err)
                continue
            seconds = map_seconds + time.perf_counter() - began
            self.record(image, batch, status="done", outputs=outputs, metrics=metrics, seconds=seconds)

    def run(self, progress: bool) -> None:
        mine = shard(self.plan["images"], self.job.batch_size, self.ranks.rank, self.ranks.world_size)
        bar = tqdm(
            total=sum(len(images) for _, images in mine),
            desc=f"images (rank {self.ranks.rank} of {self.ranks.world_size})",
            unit="img",
            disable=not progress or self.ranks.rank != 0,
        )
        for batch, images in mine:
            skipped = sum(image in self.done for image in images)
            self.counts["skipped"] += skipped
            if skipped < len(images):
                self.run_batch(batch, images)
            bar.update(len(images))
        bar.close()


def _settings(job: _Job) -> dict[str, Any]:
    G = job.generator
    return {
        "generator": {
            "name": getattr(G, "name", None),
            **(_fingerprint(G, getattr(G, "card", None)) or {}),
        },
        "forward": _fingerprint(job.forward),
        "input_shape": list(job.input_shape),
        "params": asdict(job.params),
        "perceptual": _fingerprint(job.perceptual),
        "schedule": asdict(job.schedule),
        "search": asdict(job.search) if job.search is not None else None,
        "posterior": asdict(job.posterior) if job.posterior is not None else None,
        "seed": job.seed,
    }


def reconstruct_dataset(
    input_dir: str | Path,
    out: str | Path,
    forward: nn.Module,
    generator: nn.Module,
    *,
    posterior: PosteriorRequest | None = None,
    params: BRGMParams | str | None = None,
    perceptual: str | nn.Module | None = "auto",
    schedule: MAPSchedule | None = None,
    search: SearchSettings | None = DEFAULT_SEARCH,
    batch_size: int = 8,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> DatasetRun:
    """Reconstruct every image under ``input_dir`` into ``out`` (see the module docstring); call it in every
    process of a torchrun job, or in one plain process.

    Args:
        input_dir: the folder of corrupted images (read only, never written to).
        out: the output folder: new, empty, or that of an earlier call with the same settings (continued).
        forward: the corruption f, or a deepinv physics (``brgm_pyro.forward.as_operator``); every input must
            have the shape of f applied to G's images.
        generator: G, on this process's device (``brgm_pyro.dataset.distributed.local_device``).
        posterior: also sample each image's posterior (None: the MAP only).
        params, perceptual, schedule, search: as for :func:`brgm_pyro.reconstruct`, resolved once.
        batch_size: images per MAP batch (and per unit of work of a rank).
        seed: the run's seed; each image's own is ``image_seed(seed, name)``.
        force: run into a folder whose run had other settings, redoing every image.
        progress: show rank 0's progress bar.
    """
    input_dir, out = Path(input_dir), Path(out)
    for name, value, least in (("batch_size", batch_size, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InputError(f"{name} must be an integer >= {least}, got {value!r}.")
    _check_folders(input_dir, out)
    G = generator
    clean_shape = (1, G.channels, G.resolution, G.resolution)
    forward = as_operator(forward, clean_shape[1:])
    try:
        input_shape = tuple(forward.output_shape(clean_shape))[1:]
    except ValueError as err:
        raise InputError(f"The corruption cannot apply to the generator's images: {err}") from None
    # Resolve the preset and the perceptual network once (the MAP of every batch then uses these).
    problem = prepare_problem(torch.zeros((1, *input_shape)), forward, G, params, perceptual)
    schedule = schedule or problem.card.schedule
    job = _Job(
        input_dir, out, forward, G, problem.params, problem.perceptual, schedule, posterior,
        batch_size, seed, input_shape, settings={}, settings_id="", search=search,
    )
    job.settings = _settings(job)
    job.settings_id = settings_id(job.settings)
    with process_group(G.w_avg.device) as ranks, ExitStack() as held:
        identities = ranks.gather(job.settings_id)
        if len(set(identities)) > 1:
            differing = [rank for rank, identity in enumerate(identities) if identity != identities[0]]
            raise InputError(
                f"Rank(s) {', '.join(map(str, differing))} run with other settings than rank 0 (another generator "
                "file, corruption or option); give every process the same command and files."
            )
        plan = ranks.broadcast(_plan(job, force, held) if ranks.rank == 0 else None)
        if "error" in plan:
            raise InputError(plan["error"])
        if ranks.rank != 0:
            held.enter_context(join_output(out))
        with RecordWriter(out, plan["attempt"], ranks.rank) as records:
            if ranks.rank == 0:
                records.append(
                    {
                        "type": "attempt",
                        "attempt": plan["attempt"],
                        "settings_id": job.settings_id,
                        "images": plan["images"],
                        "world_size": ranks.world_size,
                        "batch_size": batch_size,
                        "device": str(G.w_avg.device),
                        "threads": torch.get_num_threads(),
                        "started": _now(),
                        "versions": versions(),
                        "argv": sys.argv,
                    }
                )
            worker = _Worker(job, ranks, plan, records)
            worker.run(progress)
        totals = ranks.gather(worker.counts)
    if ranks.rank != 0:
        return DatasetRun(out, plan["attempt"], **worker.counts)
    summed = {key: sum(counts[key] for counts in totals) for key in worker.counts}
    return DatasetRun(out, plan["attempt"], **summed, manifest=read_manifest(out))
