"""The demo: reconstruct the shipped Fashion-MNIST examples with the embedded prior (``make demo``).

Four tasks on the images of ``examples/`` (Fashion-MNIST test images, padded to 32x32):
super-resolution x4 (8x8 input) and x8 (4x4 input) with the bicubic kernel, inpainting with a
centre box and with the right half missing. Per task it writes a lossless PNG grid, one row per
image: input | baseline (bicubic upsampling, or the masked input) | BRGM | truth, labelled with the
task, the methods and each output's PSNR to the truth, and a metrics table comparing BRGM with the
baseline: PSNR, SSIM, the ``fmnist-eval`` LPIPS-style distance (lower is better) and class fidelity
(the evaluator's class of the output equals the true class). A reconstruction that does not fit its
observed pixels (:mod:`brgm_pyro.fit`) is framed in red on its grid and named in a note of
``metrics.md`` and ``metrics.json``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from brgm_pyro import forward as fw
from brgm_pyro import io, metrics
from brgm_pyro.baselines.bicubic import bicubic
from brgm_pyro.checkpoints import load_generator
from brgm_pyro.errors import InputError
from brgm_pyro.fit import check_fit
from brgm_pyro.plotting import save_labelled_grid
from brgm_pyro.reconstruct import reconstruct

__all__ = ["TASKS", "Task", "run_demo", "evaluate_outputs"]

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    kind: str  # "superres" or "inpaint"
    factor: int = 1
    mask: str = ""

    def operator(self, size: int) -> fw.Operator:
        if self.kind == "superres":
            return fw.Downsample(self.factor, "bicubic")
        if self.mask == "center":
            return fw.Mask.center_box(size, size // 2)
        return fw.Mask.half(size, side="right")


TASKS = (
    Task("superres-x4", "super-resolution x4 (8x8 input)", "superres", factor=4),
    Task("superres-x8", "super-resolution x8 (4x4 input)", "superres", factor=8),
    Task("inpaint-center", "inpainting, centre box missing", "inpaint", mask="center"),
    Task("inpaint-half", "inpainting, right half missing", "inpaint", mask="half"),
)


def evaluate_outputs(
    outputs: torch.Tensor, truth: torch.Tensor, labels: torch.Tensor | None, evaluator: Any | None
) -> dict[str, float]:
    """Mean PSNR, SSIM, fmnist-eval distance and class fidelity of ``outputs`` against ``truth``."""
    row = {
        "psnr": float(metrics.psnr(outputs, truth).mean()),
        "ssim": float(metrics.ssim(outputs, truth).mean()),
    }
    if evaluator is not None:
        with torch.no_grad():
            row["fmnist_eval_distance"] = float(evaluator.distance(outputs, truth).mean())
            if labels is not None:
                row["class_fidelity"] = float((evaluator.predict(outputs) == labels).float().mean())
    return row


def load_examples(folder: Path = EXAMPLES_DIR) -> tuple[list[Path], torch.Tensor, torch.Tensor | None]:
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"No example images in {folder}; the package's brgm_pyro/examples/ folder is missing; reinstall brgm-pyro.")
    images = io.read_images(paths, channels=1)
    labels = None
    label_file = folder / "labels.json"
    if label_file.exists():
        table = json.loads(label_file.read_text())["labels"]
        labels = torch.tensor([table[p.name] for p in paths])
    return paths, images, labels


def _label(path: Path) -> str:
    """What an example shows, from its file name ("00000-ankle-boot.png" -> "ankle boot")."""
    return path.stem.split("-", 1)[-1].replace("-", " ")


def _markdown_table(rows: dict[str, dict[str, dict[str, float]]], notes: list[str]) -> str:
    lines = [
        "| task | method | PSNR (dB) | SSIM | fmnist-eval distance | class fidelity |",
        "|---|---|---|---|---|---|",
    ]
    for task, methods in rows.items():
        for method, r in methods.items():
            dist = f"{r['fmnist_eval_distance']:.4f}" if "fmnist_eval_distance" in r else "-"
            fid = f"{r['class_fidelity']:.2f}" if "class_fidelity" in r else "-"
            lines.append(f"| {task} | {method} | {r['psnr']:.2f} | {r['ssim']:.3f} | {dist} | {fid} |")
    lines += ["", *(f"Note: {note}" for note in notes)] if notes else []
    return "\n".join(lines) + "\n"


def run_demo(
    out_dir: str | Path,
    generator: str = "fashion-mnist-32",
    steps: int | None = None,
    tasks: tuple[Task, ...] = TASKS,
    examples: Path = EXAMPLES_DIR,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Run the demo tasks, write grids and tables into ``out_dir``, return the metrics."""
    out_dir = io.ensure_output_dir(out_dir)
    outputs = [out_dir / f"{t.name}.png" for t in tasks] + [out_dir / "metrics.md", out_dir / "metrics.json"]
    existing = [p for p in outputs if p.exists()]
    if existing and not force:
        raise FileExistsError(
            f"{existing[0]} exists from an earlier demo run; pass --force to replace it or choose another --out."
        )
    G = load_generator(generator)
    paths, truth, labels = load_examples(examples)
    if truth.shape[-1] != G.resolution or truth.shape[1] != G.channels:
        raise InputError(f"The examples are {tuple(truth.shape[1:])}, the generator makes "
                         f"({G.channels}, {G.resolution}, {G.resolution}) images; use the matching prior.")
    try:
        from brgm_pyro.fmnist.evaluator import FMNISTEval

        evaluator = FMNISTEval()
    except (ImportError, FileNotFoundError, RuntimeError):
        evaluator = None
    table: dict[str, dict[str, dict[str, float]]] = {}
    timings, fits, notes = {}, {}, []
    bar = tqdm(tasks, desc="demo", unit="task", disable=not progress)
    for task in bar:
        bar.set_description(f"demo: {task.name}")  # the MAP's own bar runs below this one
        f = task.operator(G.resolution)
        y = f(truth).clamp(0, 1)
        start = time.perf_counter()
        rec = reconstruct(y, f, G, steps=steps, progress=progress)  # the card's schedule
        timings[task.name] = round(time.perf_counter() - start, 2)
        fit = check_fit(rec, f)
        fits[task.name] = {p.name: fit.record(i) for i, p in enumerate(paths)}
        notes += [note for i, p in enumerate(paths) if (note := fit.note(i, f"{task.name} {p.name}"))]
        if task.kind == "superres":
            baseline, baseline_name, shown_input = bicubic(y, f, G), "bicubic", y
        else:
            baseline, baseline_name, shown_input = y, "masked input", y
        table[task.name] = {
            baseline_name: evaluate_outputs(baseline, truth, labels, evaluator),
            "BRGM": evaluate_outputs(rec.image, truth, labels, evaluator),
        }
        rows = [[shown_input[i], baseline[i], rec.image[i], truth[i]] for i in range(len(paths))]
        db = {name: metrics.psnr(images, truth) for name, images in (("baseline", baseline), ("BRGM", rec.image))}
        captions = [["", f"{db['baseline'][i]:.1f} dB", f"{db['BRGM'][i]:.1f} dB" + ("" if fit.fits[i] else ", misfits y"),
                     _label(p)] for i, p in enumerate(paths)]
        flagged = [[False, False, not bool(fit.fits[i]), False] for i in range(len(paths))]
        size = "x".join(map(str, y.shape[-2:]))
        save_labelled_grid(out_dir / f"{task.name}.png", rows, [f"input ({size})", baseline_name, "BRGM", "truth"],
                           captions, title=f"{task.title}, prior {generator}; dB: PSNR to the truth", flagged=flagged, scale=4)
    result = {
        "generator": generator,
        "examples": [p.name for p in paths],
        "schedule": rec.schedule.__dict__,
        "params": rec.params.__dict__,
        "seconds_per_task": timings,
        "grid_columns": ["input", "baseline (bicubic / masked input)", "BRGM", "truth"],
        "metrics": table,
        "fit": fits,
        "notes": notes,
    }
    io.atomic_write_text(out_dir / "metrics.md", _markdown_table(table, notes))
    io.write_json(out_dir / "metrics.json", result)
    return result
