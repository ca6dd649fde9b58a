"""How far deepinv's operators are from ours on Fashion-MNIST test images: max |A(x) - f(x)| per pair.

For each pair, deepinv's A (noise-free, float64) and our f on the same images (the first N test
images padded to 32x32): the largest and the mean difference over all outputs, the largest over the interior (outputs at least
2 output pixels from every edge, beyond the reach of a bicubic kernel's border), and the range of
deepinv's A(x). Pairs that share a kernel (the same filter through our Downsample or Blur) agree to
float rounding; deepinv's bicubic Downsampling against Pillow's (our Downsample(factor, "bicubic"))
differs in its border rule and, from x4, in the phase of its sampling grid (output i at input
i * factor, Pillow's at (i + 1/2) factor - 1/2).

    python benchmarks/deepinv_kernels.py --images 100 --json kernels.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from deepinv import physics as dp
from deepinv.physics.functional import gaussian_blur

from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.forward import Blur, Compose, Downsample, Mask
from brgm_pyro.forward.base import Operator

SIZE = 32
IMAGE = (1, SIZE, SIZE)


def _filter(physics: torch.nn.Module) -> torch.Tensor:
    return physics.filter[0, 0].double()


def pairs() -> dict[str, tuple[Callable[[], torch.nn.Module], Callable[[torch.nn.Module], Operator]]]:
    """label -> (deepinv's physics, our operator made from it)."""
    mask = torch.ones(1, 1, SIZE, SIZE)
    mask[..., 10:22, 10:22] = 0
    low_mask = torch.ones(1, 1, SIZE // 2, SIZE // 2)
    low_mask[..., 5:11, 5:11] = 0
    table = {
        "Inpainting(box) vs Mask": (lambda: dp.Inpainting(IMAGE, mask=mask), lambda p: Mask(mask[0, 0])),
        "BlurFFT(gaussian 1) vs Blur(circular)": (
            lambda: dp.BlurFFT(IMAGE, filter=gaussian_blur(sigma=(1.0, 1.0))),
            lambda p: Blur(_filter(p), padding="circular")),
        "Downsampling(bicubic, x2, reflect) vs Downsample(2, its filter)": (
            lambda: dp.Downsampling(IMAGE, "bicubic", 2, padding="reflect"), lambda p: Downsample(2, _filter(p))),
        "Downsampling(gaussian, x2, reflect) vs Downsample(2, its filter)": (
            lambda: dp.Downsampling(IMAGE, "gaussian", 2, padding="reflect"), lambda p: Downsample(2, _filter(p))),
        "Inpainting(box) * Downsampling(bicubic, x2, reflect) vs Compose": (
            lambda: dp.Inpainting((1, SIZE // 2, SIZE // 2), mask=low_mask) * dp.Downsampling(
                IMAGE, "bicubic", 2, padding="reflect"),
            lambda p: Compose(Downsample(2, _filter(p[0])), Mask(low_mask[0, 0]))),
    }
    for factor in (2, 4, 8):
        for padding in ("circular", "reflect"):
            table[f"Downsampling(bicubic, x{factor}, {padding}) vs Downsample({factor}, 'bicubic')"] = (
                lambda factor=factor, padding=padding: dp.Downsampling(IMAGE, "bicubic", factor, padding=padding),
                lambda p, factor=factor: Downsample(factor, "bicubic"))
        table[f"DownsamplingMatlab(x{factor}) vs Downsample({factor}, 'bicubic')"] = (
            lambda factor=factor: dp.DownsamplingMatlab(factor), lambda p, factor=factor: Downsample(factor, "bicubic"))
        if factor > 2:
            table[f"Downsampling(gaussian, x{factor}, reflect) vs Downsample({factor}, its filter)"] = (
                lambda factor=factor: dp.Downsampling(IMAGE, "gaussian", factor, padding="reflect"),
                lambda p, factor=factor: Downsample(factor, _filter(p)))
    return table


def measure(images: torch.Tensor) -> list[dict]:
    x = images.double()
    rows = []
    for label, (make_physics, make_ours) in pairs().items():
        physics = make_physics()
        ours = make_ours(physics)
        with torch.no_grad():
            theirs = physics.double().A(x)
            mine = ours(x)
        difference = (theirs - mine).abs()
        interior = difference[..., 2:-2, 2:-2]
        rows.append({
            "pair": label,
            "max_abs_difference": float(difference.max()),
            "mean_abs_difference": float(difference.mean()),
            "interior_max_abs_difference": float(interior.max()) if interior.numel() else None,
            "deepinv_range": [float(theirs.min()), float(theirs.max())],
        })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| deepinv vs ours | max abs difference | mean | interior max | deepinv's A(x) range |",
             "|---|---|---|---|---|"]
    for row in rows:
        interior = "-" if row["interior_max_abs_difference"] is None else f"{row['interior_max_abs_difference']:.2g}"
        low, high = row["deepinv_range"]
        lines.append(f"| {row['pair']} | {row['max_abs_difference']:.2g} | {row['mean_abs_difference']:.2g} | {interior} "
                     f"| [{low:.3f}, {high:.3f}] |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="the first N Fashion-MNIST test images")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # deepinv warns about compositions losing their decompositions
    images, _ = load_fashion_mnist("test", pad_to=SIZE)
    rows = measure(images[: args.images])
    print(f"{args.images} Fashion-MNIST test images, {SIZE}x{SIZE}, float64")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"images": args.images, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
