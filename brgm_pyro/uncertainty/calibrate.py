"""Calibrating a prior's intervals on validation images: ``calibrate`` runs the posterior on each, scores it, fits.

    calibration = calibrate(val_images, Downsample(4), G, data="my 100 validation images")
    save_calibration("my-prior.calibration.json", calibration)      # brgm_pyro.uncertainty.conformal
    post = sample_posterior(y, f, G, calibration="my-prior.calibration.json")

For each clean validation image x (N, C, H, W in [0, 1]) and its corruption f, y = f(x) (plus
``noise``), the posterior is sampled exactly as ``sample_posterior`` will sample it later with the
same options, and scored against x (``conformal.image_scores``); the scores of all images give the
:class:`~brgm_pyro.uncertainty.conformal.Calibration`. Its guarantee holds for new images exchangeable with
these (``brgm_pyro.uncertainty.conformal``): give images, corruptions and noise like those it will be used on.
Each image's scores are kept in ``scores_dir`` as they are made, so a stopped run resumes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from brgm_pyro.errors import InputError, InputTypeError
from brgm_pyro.io import atomic_path
from brgm_pyro.problem import check_images
from brgm_pyro.sampling import sample_posterior
from brgm_pyro.uncertainty.conformal import (
    Calibration,
    ImageScores,
    fingerprint,
    fit,
    image_scores,
)

__all__ = ["calibrate"]


def _key(x: torch.Tensor, f: nn.Module, prior: str, noise: float, num_samples: int, options: dict) -> str:
    """What makes one image's scores: the image, f's buffers, the prior and every sampling option."""
    digest = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes())
    for name, tensor in sorted(f.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps([repr(f), prior, noise, num_samples, sorted(options.items())], default=repr).encode())
    return digest.hexdigest()[:16]


def calibrate(
    images: torch.Tensor,
    f: nn.Module | Callable[[int], nn.Module],
    G: nn.Module,
    num_samples: int = 16,
    *,
    noise: float = 0.0,
    data: str = "",
    scores_dir: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> Calibration:
    """The calibration of ``sample_posterior(..., num_samples, **options)``'s intervals on clean ``images``.

    Args:
        images: clean validation images (N, C, H, W) in [0, 1], at G's resolution.
        f: the corruption, or a function of the image index giving each image its own (e.g. a seeded
            free-form mask); every one of the same task family (``f.task``).
        G: the prior.
        num_samples: posterior draws per image; the calibration holds for this many or more.
        noise: std of the Gaussian noise added to y = f(x) (clamped to [0, 1]), as in the data it is for.
        data: what the images are, in words (kept in the calibration).
        scores_dir: a folder to keep each image's scores in, so that a stopped run resumes.
        seed: seed of the noise and of each image's posterior (image i: seed + i).
        progress: show a progress bar over the images.
        options: the other arguments of :func:`~brgm_pyro.sampling.sample_posterior` (method, model,
            guide, ...); the calibration holds only for posteriors sampled with the same ones.
    """
    check_images(images, "images")
    if images.shape[1:] != (G.channels, G.resolution, G.resolution):
        raise InputError(
            f"The validation images are {tuple(images.shape[1:])}, but the prior makes "
            f"{(G.channels, G.resolution, G.resolution)} images; give clean images at the prior's size."
        )
    if not (noise >= 0 and noise < float("inf")):
        raise InputError(f"noise must be a non-negative finite std, got {noise!r}.")
    corruption = f if not isinstance(f, nn.Module) else (lambda _: f)
    if not callable(corruption):
        raise InputTypeError(f"f must be a corruption operator or a function of the image index, got {type(f).__name__}.")
    prior = fingerprint(G)
    folder = Path(scores_dir) if scores_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    scores: list[ImageScores] = []
    task, settings = None, None
    for index in tqdm(range(images.shape[0]), desc="calibration images", disable=not progress):
        x, f_i = images[index : index + 1], corruption(index)
        family = getattr(f_i, "task", None)
        if family is None or (task is not None and family != task):
            raise InputError(
                f"Image {index}'s corruption is {type(f_i).__name__} ({family or 'not a calibrated kind'}), "
                f"{'after ' + task + ' for the images before' if task else 'which no calibration covers'}; "
                "calibrate one task family (a Mask, or a named Downsample kernel) at a time."
            )
        task = family
        path = folder / f"{index:05d}-{_key(x, f_i, prior, noise, num_samples, options)}.pt" if folder else None
        saved = torch.load(path) if path is not None and path.exists() else {}
        if "means" in saved:  # scores saved before the cells of the mean existed are sampled again
            scores.append(ImageScores(saved["pixels"], saved["image"], saved["means"]))
            settings = saved["settings"]
            continue
        clean = f_i(x)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + index)
        y = (clean + noise * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
        post = sample_posterior(y, f_i, G, num_samples=num_samples, calibration=None, seed=seed + index,
                                progress=False, **options)
        score = image_scores(post.samples[:, 0], x[0], post.unpinned[0])
        scores.append(score)
        settings = post.settings
        if path is not None:
            with atomic_path(path) as tmp:
                torch.save({"pixels": score.pixels, "image": score.image, "means": score.means, "settings": settings}, tmp)
    if task is None:
        raise InputError("A calibration needs at least one validation image; give the images to calibrate on.")
    return fit(scores, task, prior, settings, num_samples, data=data)
