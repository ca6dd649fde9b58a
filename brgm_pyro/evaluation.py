"""Head to head: reconstruction methods on the same corrupted images, with per-image outputs, metrics and grids.

    setting = superres_setting(8)                            # or inpaint_setting(MASK_KINDS), files_setting(...)
    result = evaluate(setting, default_methods("superres"), "out/", G)
    result["table"]["brgm"]["fmnist_eval_distance"]

``brgm evaluate`` is the command line of this module. The data path: the truth and the corrupted
inputs y (simulated from Fashion-MNIST, or read from folders) are written as lossless PNGs and read
back, so every method sees the 8-bit y a user's file would hold; each method reconstructs the images
it has not finished, in batches, and writes ``METHOD/NAME.png`` and ``METHOD/NAME.json`` (seconds per
image, the method's own diagnostics, e.g. PULSE's consistency check) for each; then the metrics are
computed from the saved PNGs, so a run stopped and started again gives the same table as one run
(``results.md``, ``results.json``, and the grid ``results.png``: input | each method | truth):

    fmnist_eval_distance  the LPIPS-style distance of ``FMNISTEval`` to the truth (lower is better)
    class_fidelity        the evaluator's class of the output equals the true label (with labels)
    psnr, ssim, rmse, mae pixel metrics against the truth (``brgm_pyro.metrics``)
    data_consistency      RMSE between f(x_hat) and y on the observed pixels, f the true corruption
                          (the paper's Fig. 8: how far the output is from explaining its input)
    seconds_per_image     wall time of the method's batch divided by its images

A folder holds one setting (``setting.json``, written once the inputs are checked); a rerun with another
setting is refused, and a method label run again with other options is refused, so no table mixes two
runs; ``force=True`` redoes every image instead, replacing the records. One run at a time writes into a
folder (``brgm_pyro.output_lock``).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from brgm_pyro import baselines, io, metrics
from brgm_pyro.baselines.masks import MASK_KINDS, mask
from brgm_pyro.errors import InputError
from brgm_pyro.fmnist.data import load_fashion_mnist
from brgm_pyro.forward import Blur, Compose, Downsample, Mask, Operator, as_operator, free_form_mask
from brgm_pyro.output_lock import claim_output
from brgm_pyro.reconstruct import data_consistency

__all__ = [
    "METRICS",
    "Method",
    "Setting",
    "default_methods",
    "evaluate",
    "files_setting",
    "inpaint_setting",
    "markdown_table",
    "simulate",
    "split_images",
    "superres_setting",
]

METRICS = ("fmnist_eval_distance", "class_fidelity", "psnr", "ssim", "rmse", "mae", "data_consistency",
           "seconds_per_image")
HEADERS = ("fmnist-eval distance", "class fidelity", "PSNR (dB)", "SSIM", "RMSE", "MAE", "||f(x) - y||",
           "s / image")


@dataclass(frozen=True)
class Setting:
    """What is evaluated: a task, its true corruption per image, and where the images come from.

    Attributes:
        task: "superres" or "inpaint" (which methods apply).
        description: the corruption in words, recorded in ``setting.json``.
        corruption: image names -> the true f for those images (one operator for the batch), an
            operator of ``brgm_pyro.forward`` or a deepinv physics (as ``bp.reconstruct`` takes it; y is
            simulated as f(x) plus the setting's ``noise``, never with the physics' own noise model).
        noise: std of the Gaussian noise added to f(x) when simulating y (0: none).
        files: (inputs folder, truth folder) when y is given, else None (simulated from a split).
    """

    task: str
    description: str
    corruption: Callable[[Sequence[str]], Operator]
    noise: float = 0.0
    files: tuple[Path, Path] | None = None

    def record(self) -> dict[str, Any]:
        inputs = None if self.files is None else [str(folder.resolve()) for folder in self.files]
        return {"task": self.task, "corruption": self.description, "noise": self.noise, "files": inputs}


@dataclass(frozen=True)
class Method:
    """One row of the table: a registered baseline with options, and the corruption it is told.

    Attributes:
        label: the row's name and output folder.
        name: the registered method (``brgm_pyro.baselines.get``).
        options: keyword options of the method.
        told: the corruption the method is given, if not the true one (a misspecified f); an operator
            or a deepinv physics.
        generator: the prior of this row, if not the evaluation's G (to compare priors).
    """

    label: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)
    told: Operator | None = None
    generator: Any = None

    def record(self, G: Any = None) -> dict[str, Any]:
        """What made this row's outputs: the method, its options, the told f, and the prior with the
        defaults of its card (so outputs made before a change of the defaults are never reused)."""
        record = {"name": self.name, "options": {k: _option_text(v) for k, v in sorted(self.options.items())},
                  "told": None if self.told is None else repr(self.told)}
        prior = self.generator if self.generator is not None else G
        if prior is not None:
            card = getattr(prior, "card", None) or {}
            record["prior"] = {"name": getattr(prior, "name", None) or repr(prior.config),
                               **{key: card.get(key) for key in ("params", "schedule", "perceptual", "sigma_reach")}}
        return record


def _option_text(value: Any) -> str:
    """An option as the record keeps it: a function by its module and name (its repr holds an address that
    differs in every process, so a rerun would never match its own record)."""
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__module__}.{value.__qualname__}"
    return repr(value)


def split_images(split: str, indices: Sequence[int], size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The Fashion-MNIST images of ``split`` at ``indices`` padded to ``size``, their labels, and their
    names in an evaluation's folders ("00042")."""
    images, labels = load_fashion_mnist(split, pad_to=size)
    indices = list(indices)
    if max(indices) >= images.shape[0]:
        raise InputError(f"The {split} split has {images.shape[0]} images; index {max(indices)} is out of range.")
    return images[indices], labels[indices], [f"{index:05d}" for index in indices]


def superres_setting(factor: int, kernel: str = "bicubic", blur: float | None = None, noise: float = 0.0) -> Setting:
    """Super-resolution by ``factor`` with a Downsample ``kernel``, after a Gaussian blur of width ``blur``
    pixels if given, plus noise of std ``noise``."""
    downsample = Downsample(factor, kernel)
    f = downsample if blur is None else Compose(Blur.gaussian(blur), downsample)
    text = f"Downsample({factor}, {kernel!r})" if blur is None else f"Blur.gaussian({blur}) then Downsample({factor}, {kernel!r})"
    return Setting("superres", text, lambda names: f, noise)


def _kind(name: str, kinds: Sequence[str]) -> str:
    """The mask kind of an image: the kinds in turn over the dataset index (the paper's cyclic order)."""
    return kinds[int(name) % len(kinds)]


FREE_FORM = "free-form"


def _mask_of(name: str, kinds: Sequence[str], size: int) -> torch.Tensor:
    """The (S, S) mask of the image with dataset index ``name``: its kind's, or for ``free-form`` brush
    strokes seeded by the index (``forward.free_form_mask``), so every run gives an image the same mask."""
    kind = _kind(name, kinds)
    if kind == FREE_FORM:
        return free_form_mask(size, seed=int(name)).mask
    return mask(kind, size)


def inpaint_setting(kinds: Sequence[str] = MASK_KINDS, size: int = 32, noise: float = 0.0) -> Setting:
    """Inpainting with the mask kinds applied in turn: image with dataset index i gets kinds[i % len(kinds)].

    A kind is one of ``baselines.masks.MASK_KINDS`` (the authors' seven rectangles) or ``"free-form"``:
    random brush strokes seeded by the image's index."""
    kinds = tuple(kinds)
    for kind in kinds:
        if kind != FREE_FORM:
            mask(kind, size)  # checks the kind
    return Setting(
        "inpaint", f"masks in turn: {', '.join(kinds)}",
        lambda names: Mask(torch.stack([_mask_of(n, kinds, size) for n in names])[:, None]), noise,
    )


def files_setting(task: str, f: Operator, inputs: Path, truth: Path, description: str) -> Setting:
    """Corrupted inputs made elsewhere (``inputs``, PNG) with their true images under the same names (``truth``)."""
    return Setting(task, description, lambda names: f, 0.0, (Path(inputs), Path(truth)))


def _corruption(setting: Setting, names: Sequence[str]) -> Operator:
    """The true f of the images ``names``, a deepinv physics made an operator (``forward.as_operator``)."""
    return as_operator(setting.corruption(names))


def default_methods(task: str, names: Sequence[str] | None = None) -> list[Method]:
    """The registered methods made for ``task`` (all of them that can run here, or ``names``, each checked)."""
    if task not in ("superres", "inpaint"):
        raise InputError(f"Unknown task {task!r}; choose 'superres' or 'inpaint'.")
    applicable = [name for name in baselines.available() if task in baselines.tasks(name)]
    if names is None:
        names = [name for name in applicable if baselines.unavailable(name) is None]
    for name in names:
        baselines.get(name)  # unknown names: one sentence listing the registered ones
        if name not in applicable:
            raise InputError(
                f"The method {name} does not apply to {task} (it is made for {', '.join(baselines.tasks(name))}); "
                f"choose from {', '.join(applicable)}."
            )
        reason = baselines.unavailable(name)
        if reason is not None:
            raise InputError(reason)
    return [Method(name, name) for name in names]


# ----------------------------------------------------------------------------- the images


def _png_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of PNG images; check the path.")
    names = sorted(path.stem for path in folder.glob("*.png"))
    if not names:
        raise InputError(f"{folder} holds no PNG images; pass a folder of .png files.")
    return names


def _file_images(setting: Setting, channels: int) -> tuple[list[str], torch.Tensor | None]:
    """The names of the given images (after checking the two folders match), and their labels if
    the truth folder holds ``labels.json`` ({"labels": {file name: class}})."""
    inputs, truth = setting.files
    given, true = _png_names(inputs), _png_names(truth)
    if given != true:
        missing = sorted(set(given) - set(true))
        extra = sorted(set(true) - set(given))
        problem = (f"{truth} lacks {missing[0]}.png" if missing else f"{truth} has {extra[0]}.png with no input")
        raise InputError(
            f"--inputs and --truth must hold the same file names, but {problem}; give each input its true "
            "image under the same name."
        )
    y_shape = io.read_image(inputs / f"{given[0]}.png", channels).shape
    x_shape = io.read_image(truth / f"{true[0]}.png", channels).shape
    f = _corruption(setting, given[:1])
    expected = f.output_shape((1, *x_shape))[1:]
    if tuple(expected) != tuple(y_shape):
        raise InputError(
            f"The true images are {tuple(x_shape)} and f makes {tuple(expected)} from them, but the inputs are "
            f"{tuple(y_shape)}; give the corruption that made the inputs (--factor, --mask)."
        )
    labels_file = truth / "labels.json"
    labels = None
    if labels_file.exists():
        table = json.loads(labels_file.read_text())["labels"]
        labels = torch.tensor([table[f"{name}.png"] for name in given])
    return given, labels


def simulate(
    setting: Setting, truth: torch.Tensor, names: Sequence[str], out: Path, seed: int = 0, force: bool = False
) -> None:
    """Write truth/NAME.png and inputs/NAME.png (y = f(x) + noise, clamped; the noise of each image seeded by
    ``seed`` and its name) into ``out`` for the images not yet written (with ``force``, for every image): the
    inputs every method of an evaluation reads."""
    for folder in ("truth", "inputs"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    todo = [i for i, name in enumerate(names) if force or not (out / "inputs" / f"{name}.png").exists()]
    for start in range(0, len(todo), 256):
        chunk = todo[start : start + 256]
        x = truth[chunk]
        y = _corruption(setting, [names[i] for i in chunk])(x)
        for row, i in enumerate(chunk):
            if setting.noise:
                generator = torch.Generator().manual_seed(seed * 1_000_003 + int(names[i]))
                y[row] = y[row] + setting.noise * torch.randn(y[row].shape, generator=generator)
            io.write_image(out / "truth" / f"{names[i]}.png", x[row])
            io.write_image(out / "inputs" / f"{names[i]}.png", y[row].clamp(0, 1))


def _read(folder: Path, names: Sequence[str], channels: int) -> torch.Tensor:
    return io.read_images([folder / f"{name}.png" for name in names], channels=channels)


# ----------------------------------------------------------------------------- the methods


def _accepts(method: Callable, name: str) -> bool:
    parameters = inspect.signature(method).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _per_image(details: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """A method's diagnostics split by image: (B,) tensors per image, other values repeated."""
    records: list[dict[str, Any]] = [{} for _ in range(count)]
    for key, value in details.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == count:
            for record, item in zip(records, value.detach().cpu()):
                record[key] = item.tolist()
        else:
            for record in records:
                record[key] = value.tolist() if isinstance(value, torch.Tensor) else value
    return records


def _other_record(record_file: Path, record: dict, force: bool) -> dict | None:
    """The record an earlier run left in ``record_file`` where it differs from ``record``; where there is
    none, or with ``force``, ``record`` is written there (its folder made) and the run goes on."""
    if record_file.exists() and not force:
        earlier = json.loads(record_file.read_text())
        return earlier if earlier != record else None
    record_file.parent.mkdir(parents=True, exist_ok=True)
    io.write_json(record_file, record)
    return None


def _check_method_folder(folder: Path, method: Method, G: Any, force: bool) -> None:
    """Create the method's folder with its record, or check an earlier run used the same options."""
    record = method.record(G)
    earlier = _other_record(folder / "method.json", record, force)
    if earlier is not None:
        raise InputError(
            f"{folder} holds outputs of {method.label} made with {earlier}, not {record}; choose another "
            "--out (or another label) so that no table mixes two settings, or pass --force to redo every image."
        )


def _run_method(method: Method, setting: Setting, names: list[str], inputs: Path, out: Path, G: Any,
                channels: int, batch_size: int, seed: int, force: bool, bar: tqdm) -> None:
    folder = out / method.label
    _check_method_folder(folder, method, G, force)
    todo = [name for name in names if force or not (folder / f"{name}.png").exists()]
    bar.update(len(names) - len(todo))
    run = baselines.get(method.name)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        y = _read(inputs, chunk, channels)
        f = as_operator(method.told) if method.told is not None else _corruption(setting, chunk)
        options = dict(method.options)
        details: dict[str, Any] = {}
        if _accepts(run, "details"):
            options["details"] = details
        if _accepts(run, "seed"):
            options.setdefault("seed", seed)
        began = time.perf_counter()
        images = run(y, f, method.generator if method.generator is not None else G, **options)
        seconds = (time.perf_counter() - began) / len(chunk)
        for name, image, record in zip(chunk, images, _per_image(details, len(chunk))):
            io.write_json(folder / f"{name}.json", {"seconds": seconds, "batch": len(chunk), "details": record})
            io.write_image(folder / f"{name}.png", image)  # last: its presence marks the image finished
        bar.update(len(chunk))


# ----------------------------------------------------------------------------- the metrics


def _scores(outputs: torch.Tensor, truth: torch.Tensor, y: torch.Tensor, f: Operator, labels: torch.Tensor | None,
            evaluator: Any | None) -> dict[str, torch.Tensor]:
    """Per-image metrics of outputs against the truth and, through f, against y."""
    scores = {
        "psnr": metrics.psnr(outputs, truth),
        "ssim": metrics.ssim(outputs, truth),
        "rmse": metrics.rmse(outputs, truth),
        "mae": metrics.mae(outputs, truth),
    }
    shape = outputs.shape
    observed = f.observed(shape, device=outputs.device, dtype=outputs.dtype)
    with torch.no_grad():
        scores["data_consistency"] = data_consistency(f(outputs), y, observed)["rmse"]
        if evaluator is not None:
            scores["fmnist_eval_distance"] = evaluator.distance(outputs, truth)
            if labels is not None:
                scores["class_fidelity"] = (evaluator.predict(outputs) == labels).float()
    return scores


def _summarise(method: Method, setting: Setting, names: list[str], out: Path, truth: torch.Tensor,
               y: torch.Tensor, labels: torch.Tensor | None, evaluator: Any | None, channels: int) -> dict[str, Any]:
    folder = out / method.label
    outputs = _read(folder, names, channels)
    records = [json.loads((folder / f"{name}.json").read_text()) for name in names]
    scores: dict[str, list[float]] = {}
    for start in range(0, len(names), 256):
        chunk = slice(start, start + 256)
        f = _corruption(setting, names[chunk])
        part_labels = None if labels is None else labels[chunk]
        for key, value in _scores(outputs[chunk], truth[chunk], y[chunk], f, part_labels, evaluator).items():
            scores.setdefault(key, []).extend(value.tolist())
    scores["seconds_per_image"] = [record["seconds"] for record in records]
    row = {key: sum(values) / len(values) for key, values in scores.items()}
    details: dict[str, Any] = {}
    for key in records[0]["details"]:
        values = [record["details"].get(key) for record in records]
        if all(isinstance(v, (bool, int, float)) for v in values):
            details[key] = sum(float(v) for v in values) / len(values)
        elif all(v == values[0] for v in values):
            details[key] = values[0]
    return {"mean": row, "per_image": scores, "details": details, "method": json.loads((folder / "method.json").read_text()),
            "batch": records[0]["batch"]}


def markdown_table(table: dict[str, dict[str, Any]]) -> str:
    """The results as a markdown table, one row per method, plus a note per method with a consistency check."""
    lines = ["| method | " + " | ".join(HEADERS) + " |", "|---|" + "---|" * len(HEADERS)]
    notes = []
    for label, entry in table.items():
        row = entry["mean"]
        cells = []
        for key in METRICS:
            value = row.get(key)
            digits = {"psnr": 2, "class_fidelity": 2, "seconds_per_image": 2}.get(key, 4)
            cells.append("-" if value is None else f"{value:.{digits}f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        details = entry["details"]
        if "passed" in details and "eps" in details:
            count = len(entry["per_image"]["psnr"])
            notes.append(f"{label}: the consistency check (MSE of f(x) against y <= {details['eps']:g} at some step) "
                         f"passed for {round(details['passed'] * count)} of {count} images.")
        if "guide" in details:
            notes.append(f"{label}: {details.get('method', '')} posterior, {details.get('model', '')} model, "
                         f"guide {details['guide']}.")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


# ----------------------------------------------------------------------------- the driver


def _check_setting(out: Path, setting: Setting, force: bool) -> None:
    earlier = _other_record(out / "setting.json", setting.record(), force)
    if earlier is not None:
        raise InputError(
            f"{out} holds an evaluation of another setting ({earlier['corruption']}, noise {earlier['noise']}); "
            "choose another --out, or pass --force to redo every image there with this setting."
        )


def evaluate(
    setting: Setting,
    methods: Sequence[Method],
    out: str | Path,
    G: Any = None,
    truth: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
    labels: torch.Tensor | None = None,
    evaluator: Any | None = None,
    batch_size: int = 25,
    grid_rows: int = 8,
    seed: int = 0,
    progress: bool = True,
    report: str = "results",
    force: bool = False,
) -> dict[str, Any]:
    """Run ``methods`` on the images of ``setting``, write their outputs, the tables and a grid into ``out``.

    Args:
        setting: what is evaluated (:func:`superres_setting`, :func:`inpaint_setting`, :func:`files_setting`).
        methods: the rows (:func:`default_methods`, or :class:`Method` with options and a told f).
        out: the output folder; outputs already there are kept and not recomputed.
        G: the generator (the generative methods need it; it fixes the image size of all).
        truth, names, labels: for a simulated setting, the true images (N, C, H, W) in [0, 1], their
            names (the dataset indices as text) and their classes (or None).
        evaluator: the ``FMNISTEval`` network for the distance and class fidelity (None: left out).
        batch_size: images per method call.
        grid_rows: images shown in the grid (input | each method | truth).
        seed: the seed of the methods and of the simulated noise.
        progress: show a progress bar.
        report: the name of the table and grid files, ``REPORT.md``, ``REPORT.json`` and ``REPORT.png``
            (another name keeps the tables of other method lists in the same folder).
        force: redo every image, also in a folder of another setting or of a method with other options.

    Returns {"setting", "names", "table": label -> {"mean", "per_image", "details", "method", "batch"}}.
    """
    if not methods:
        raise InputError("No method to evaluate; pass at least one.")
    labels_seen = [method.label for method in methods]
    if len(set(labels_seen)) != len(labels_seen):
        raise InputError(f"Two methods share a label in {labels_seen}; give each row its own label.")
    out = Path(out)
    channels = G.channels if G is not None else 1
    # The inputs are checked before anything is written: a mistake in them leaves no setting.json behind.
    if setting.files is not None:
        names, file_labels = _file_images(setting, channels)
        labels = file_labels if labels is None else labels
        inputs, truth_dir = setting.files
        truth = _read(truth_dir, names, channels)
    elif truth is None or names is None or len(names) != truth.shape[0]:
        raise InputError("A simulated setting needs the true images and one name per image.")
    with claim_output(out, "evaluate"):
        _check_setting(out, setting, force)
        if setting.files is None:
            names, inputs = list(names), out / "inputs"
            simulate(setting, truth, names, out, seed, force)
            truth = _read(out / "truth", names, channels)
        y = _read(inputs, names, channels)
        bar = tqdm(total=len(names) * len(methods), disable=not progress, desc="evaluate", unit="image")
        for method in methods:
            bar.set_postfix(method=method.label, refresh=True)
            _run_method(method, setting, names, inputs, out, G, channels, batch_size, seed, force, bar)
        bar.close()
        table = {m.label: _summarise(m, setting, names, out, truth, y, labels, evaluator, channels) for m in methods}
        result = {"setting": setting.record(), "names": names, "table": table}
        io.write_json(out / f"{report}.json", result)
        io.atomic_write_text(out / f"{report}.md", markdown_table(table))
        shown = names[:grid_rows]
        rows = [[y[i], *[_read(out / m.label, [name], channels)[0] for m in methods], truth[i]]
                for i, name in enumerate(shown)]
        io.save_grid(out / f"{report}.png", rows, scale=4)
    return result
