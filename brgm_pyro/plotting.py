"""Pictures: labelled grids of images, and a posterior's mean, per-pixel standard deviation, |error| and sample grids.

:func:`save_labelled_grid` is :func:`brgm_pyro.io.save_grid` with a title, a heading per column and a
caption per cell (the method, the task, the PSNR), and a red frame and caption on a flagged cell (a
reconstruction that does not fit its observed pixels, :mod:`brgm_pyro.fit`); the pixels stay exact.
Maps of a non-negative quantity (std, |error|) are rendered through a matplotlib colour map with a
stated range ``[0, vmax]``, so that two maps drawn with the same vmax compare by colour.
:func:`save_uncertainty_maps` writes them as PNG (``brgm sample`` uses it);
:func:`plot_posterior` draws one image's panels with colour bars, for notebooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from brgm_pyro import io
from brgm_pyro.errors import InputError
from brgm_pyro.fit import FitCheck
from brgm_pyro.metrics import psnr
from brgm_pyro.posterior import Posterior

__all__ = ["colorize", "plot_posterior", "save_labelled_grid", "save_uncertainty_maps", "uncertainty_maps"]

STD_CMAP = "magma"
ERROR_CMAP = "viridis"
GRID_CELL_SIZE = 128
LABEL_PX = 13  # the height of the labels' font
FLAG_RGB = (200, 0, 0)


def save_labelled_grid(
    path: str | Path,
    rows: Sequence[Sequence[torch.Tensor]],
    columns: Sequence[str],
    captions: Sequence[Sequence[str]] | None = None,
    title: str = "",
    flagged: Sequence[Sequence[bool]] | None = None,
    scale: int = 1,
    pad: int = 2,
) -> Path:
    """:func:`brgm_pyro.io.save_grid` on white, with ``title`` above, ``columns[j]`` over column j and
    ``captions[i][j]`` under cell (i, j); a cell with ``flagged[i][j]`` gets a red frame and a red caption.
    Text wider than its cell is cut with "..."; the cells' pixels are those of ``save_grid``."""
    canvas, boxes = io.grid_canvas(rows, scale=scale, pad=pad)
    font = ImageFont.load_default(size=LABEL_PX)
    line = LABEL_PX + 4
    caption_band = line if captions is not None else 0
    head = (line if title else 0) + (line if columns else 0)
    pixels = (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    grid = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    width = max(grid.width, int(font.getlength(title)) + 2 * pad + 4)
    height = head + grid.height + caption_band * len(rows)
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    if title:
        draw.text((pad, 2), title, fill="black", font=font)

    def centred(text: str, box: tuple[int, int, int, int], top: int, colour: Any) -> None:
        while text and font.getlength(text) > box[3] + pad:
            text = text[:-4] + "..." if len(text) > 4 else ""
        draw.text((box[1] + (box[3] - font.getlength(text)) / 2, top), text, fill=colour, font=font)

    for j, name in enumerate(columns[: len(boxes[0])]):
        centred(name, boxes[0][j], head - line + 1, "black")
    for i, row in enumerate(boxes):
        first = row[0][0]
        strip = grid.crop((0, first - pad, grid.width, first + row[0][2] + pad))
        top = head + first - pad + caption_band * i
        picture.paste(strip.convert("RGB"), (0, top))
        for j, box in enumerate(row):
            flag = bool(flagged and flagged[i][j])
            cell_top = top + pad
            if flag:
                draw.rectangle((box[1] - 2, cell_top - 2, box[1] + box[3] + 1, cell_top + box[2] + 1), outline=FLAG_RGB,
                               width=2)
            if captions is not None:
                centred(captions[i][j], box, cell_top + box[2] + 2, FLAG_RGB if flag else "black")
    array = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float() / 255
    return io.write_image(path, array)


def colorize(values: torch.Tensor, vmax: float, cmap: str = STD_CMAP) -> torch.Tensor:
    """A map (C, H, W) or (H, W) of non-negative values as an RGB image (3, H, W) in [0, 1]:
    the mean over channels, divided by ``vmax`` (clipped at 1), through the colour map ``cmap``."""
    import matplotlib

    if values.dim() == 3:
        values = values.mean(0)
    if values.dim() != 2:
        raise InputError(f"colorize takes a map (C, H, W) or (H, W), got shape {tuple(values.shape)}.")
    if not vmax > 0:
        raise InputError(f"vmax must be positive, got {vmax!r}.")
    scaled = (values.detach().cpu().double() / vmax).clamp(0.0, 1.0).numpy()
    rgba = matplotlib.colormaps[cmap](scaled)
    return torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float()


def _vmax(values: torch.Tensor) -> float:
    """The top of a colour scale for ``values``: their maximum, or 1e-6 for an all-zero map."""
    return max(float(values.max()), 1e-6)


def uncertainty_maps(
    posterior: Posterior,
    truth: torch.Tensor | None = None,
    std_vmax: float | None = None,
    error_vmax: float | None = None,
) -> dict[str, Any]:
    """The maps of every image of the batch, each (B, C, H, W) in [0, 1]: "mean", "map" (the MAP),
    "std" and, with ``truth`` (B, C, H, W), "error" = |mean - truth|, both coloured (C = 3); and
    "std_vmax", "error_vmax", the values at the top of their colour scales (default: the batch maximum)."""
    maps: dict[str, Any] = {"mean": posterior.mean, "map": posterior.map.image}
    std_vmax = std_vmax or _vmax(posterior.std)
    maps["std"] = torch.stack([colorize(s, std_vmax, STD_CMAP) for s in posterior.std])
    maps["std_vmax"] = std_vmax
    if truth is not None:
        if tuple(truth.shape) != tuple(posterior.mean.shape):
            raise InputError(
                f"The truth has shape {tuple(truth.shape)}, but the posterior's images are "
                f"{tuple(posterior.mean.shape)}; give one clean image per input."
            )
        error = (posterior.mean - truth.cpu()).abs()
        error_vmax = error_vmax or _vmax(error)
        maps["error"] = torch.stack([colorize(e, error_vmax, ERROR_CMAP) for e in error])
        maps["error_vmax"] = error_vmax
    return maps


def save_uncertainty_maps(
    posterior: Posterior,
    out: str | Path,
    names: Sequence[str],
    truth: torch.Tensor | None = None,
    grid_columns: int = 8,
    max_grid_samples: int = 32,
    fit: FitCheck | None = None,
) -> list[dict[str, Path]]:
    """Write, per image NAME of the batch: NAME_mean.png, NAME_std.png, NAME_error.png (with a
    truth), NAME_samples.png (a grid of up to ``max_grid_samples`` draws of G(w), the plausible
    reconstructions, ``grid_columns`` per row; mean and std include the reach residual when it is on)
    and NAME_overview.png (input, MAP, mean, std, error = |mean - truth| side by side, labelled: the method
    and task above, the top of each colour scale over its map, the PSNR to the truth under the MAP and the mean; the MAP
    framed in red when ``fit`` says it does not fit its observed pixels). The grids are enlarged by nearest
    neighbour to about GRID_CELL_SIZE pixels per image; the single maps keep the image's size.
    Returns the paths per image."""
    out = Path(out)
    if len(names) != posterior.mean.shape[0]:
        raise InputError(f"Got {len(names)} names for {posterior.mean.shape[0]} images; give one name per image.")
    maps = uncertainty_maps(posterior, truth)
    scale = max(1, GRID_CELL_SIZE // max(posterior.mean.shape[-2:]))
    written = []
    shown = posterior.generator_samples[:max_grid_samples]
    what = f"{posterior.method.upper()}, {posterior.task or 'a corruption without a task family'}"
    columns = ["input y", "MAP", "posterior mean", f"std, max {maps['std_vmax']:.3f}"]
    if "error" in maps:
        columns.append(f"|error|, max {maps['error_vmax']:.3f}")
    for i, name in enumerate(names):
        files = {kind: out / f"{name}_{kind}.png" for kind in ("mean", "std", "samples", "overview")}
        io.write_image(files["mean"], maps["mean"][i])
        io.write_image(files["std"], maps["std"][i])
        overview = [posterior.y[i], maps["map"][i], maps["mean"][i], maps["std"][i]]
        captions = [""] * len(columns)
        if "error" in maps:
            files["error"] = out / f"{name}_error.png"
            io.write_image(files["error"], maps["error"][i])
            overview.append(maps["error"][i])
            for column, image in ((1, maps["map"][i]), (2, maps["mean"][i])):
                captions[column] = f"{float(psnr(image[None], truth[i : i + 1].cpu())):.1f} dB"
        misfit = fit is not None and not bool(fit.fits[i])
        if misfit:
            captions[1] = ", ".join(filter(None, [captions[1], "misfits y"]))
        draws = list(shown[:, i])
        rows = [draws[start : start + grid_columns] for start in range(0, len(draws), grid_columns)]
        save_labelled_grid(files["samples"], rows, [], title=f"{name}: {len(draws)} draws of G(w), {what}", scale=scale)
        title = f"{name}: {what}" + ("; dB: PSNR to the truth" if "error" in maps else "")
        save_labelled_grid(files["overview"], [overview], columns, [captions], title=title,
                           flagged=[[False, misfit] + [False] * (len(columns) - 2)], scale=scale)
        written.append(files)
    return written


def plot_posterior(
    posterior: Posterior,
    index: int = 0,
    truth: torch.Tensor | None = None,
    num_samples: int = 6,
    title: str | None = None,
) -> Any:
    """A matplotlib figure of image ``index``: input, MAP, posterior mean, std, |error| (with a truth,
    (B, C, H, W)), and ``num_samples`` draws of G(w) below. Returns the figure."""
    import matplotlib.pyplot as plt

    def show(ax: Any, image: torch.Tensor, label: str, **kwargs: Any) -> Any:
        array = image.detach().cpu()
        array = array.mean(0) if array.shape[0] == 1 else array.permute(1, 2, 0)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
        return ax.imshow(array.numpy(), **kwargs)

    panels = [("input y", posterior.y[index]), ("MAP", posterior.map.image[index]), ("mean", posterior.mean[index])]
    num_top = len(panels) + 1 + (truth is not None)
    columns = max(num_top, min(num_samples, posterior.num_samples))
    fig, axes = plt.subplots(2, columns, figsize=(1.7 * columns, 3.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, image) in zip(axes[0], panels):
        show(ax, image, label, cmap="gray", vmin=0, vmax=1)
    maps = [("std", posterior.std[index], STD_CMAP)]
    if truth is not None:
        maps.append(("|mean - truth|", (posterior.mean[index] - truth[index].cpu()).abs(), ERROR_CMAP))
    for column, (label, values, cmap) in enumerate(maps, start=len(panels)):
        ax = axes[0, column]
        fig.colorbar(show(ax, values.mean(0, keepdim=True), label, cmap=cmap, vmin=0), ax=ax, shrink=0.8)
    for j in range(min(columns, posterior.num_samples)):
        show(axes[1, j], posterior.generator_samples[j, index], f"G(w) draw {j}", cmap="gray", vmin=0, vmax=1)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
