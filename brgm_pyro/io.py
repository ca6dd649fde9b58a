"""Image and file input/output for the command line, the demos and training.

Images at this boundary are float32 tensors in [0, 1]: ``(C, H, W)`` for one image,
``(B, C, H, W)`` for a batch, grayscale being ``C = 1``. Files are PNG (lossless).

Reading refuses, each with one sentence, what would otherwise be read as something it is not: a
path that is not a regular readable file (a FIFO would block the reader forever), an image larger
than :data:`MAX_IMAGE_PIXELS` (checked from the header, before any pixel is decoded: a small file can
claim a huge image), transparent pixels (an alpha channel below fully opaque), and masks that are
not black and white.

Every file the project writes goes through :func:`atomic_path` (or a helper built on it):
the data is written to a hidden temporary file in the destination folder and renamed onto
the destination only once complete, so an interrupted run never leaves a half-written file
and never clobbers a good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from brgm_pyro.errors import InputError, InputTypeError

PathLike = str | os.PathLike

# ITU-R BT.601 luma weights, the ones Pillow's convert("L") uses, applied in float so that
# no precision is lost to an intermediate 8-bit image.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

#: The most pixels (width x height) an image file may claim: 4096 x 4096, 16 times the largest
#: StyleGAN2 output (1024 x 1024). Decoded, such an image takes at most 16.8 M pixels x 4 channels x
#: 4 bytes = 268 MB as float32; a file that claims more is refused from its header, before decoding.
MAX_IMAGE_PIXELS = 4096 * 4096

# A value within half an 8-bit step of 0 or 1 is black or white in a mask; anything between is grey.
_MASK_TOLERANCE = 0.5 / 255

_EIGHT_BIT_MODES = {"L": 1, "LA": 1, "RGB": 3, "RGBA": 3}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_FILE_KINDS = {stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device",
               stat.S_ISBLK: "a block device"}

# The name atomic_path gives its temporary files: ".<stem>.tmp-<12 hex digits><suffix>".
_TEMPORARY_NAME = re.compile(r"\..*\.tmp-[0-9a-f]{12}(\.[^.]*)?")


# ----------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The temporary file is hidden (``.name.tmp-<random><suffix>``), lives in the destination
    folder (so the final ``os.replace`` is an atomic rename on the same file system) and keeps
    the destination's suffix (so writers that infer a format from it still work). The block must
    create the file. If the block raises, the temporary file is deleted and ``path`` is untouched.

    Example::

        with atomic_path("out/weights.safetensors") as tmp:
            save_file(tensors, tmp)
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"Cannot write {path}: the folder {parent} does not exist; create it first "
            "(brgm_pyro.io.ensure_output_dir)."
        )
    if path.is_dir():
        raise IsADirectoryError(f"Cannot write {path}: it is a folder; choose a file name inside it.")
    tmp = parent / f".{path.stem}.tmp-{uuid.uuid4().hex[:12]}{path.suffix}"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"Nothing was written to the temporary file for {path}.")
        # Flush the data to disk before the rename, so a crash cannot leave an empty file behind.
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        # Some writers (safetensors) create private files; give the result the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def stale_temporaries(folder: PathLike) -> list[Path]:
    """The temporary files of :func:`atomic_path` under ``folder`` (recursively), sorted.

    A process killed inside an ``atomic_path`` block (``kill -9``, a lost node) leaves its temporary
    file behind, never a half-written destination. Only call this, and remove what it finds, when
    no other process writes into ``folder``.
    """
    return sorted(p for p in Path(folder).rglob(".*.tmp-*") if p.is_file() and _TEMPORARY_NAME.fullmatch(p.name))


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (torch.Tensor, np.ndarray, np.generic)):
        return obj.tolist()
    raise InputTypeError(f"Object of type {type(obj).__name__} is not JSON serialisable.")


def write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON (indent 2, trailing newline) to ``path`` atomically.

    Paths become strings and tensors / numpy arrays become (nested) lists. Non-finite floats
    are written as ``NaN`` / ``Infinity`` as Python's ``json`` does, so that a diverged metric
    never makes a long run fail at its very end.
    """
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    return atomic_write_text(path, text)


def parse_json(text: str | bytes, where: str, fix: str) -> Any:
    """The JSON document ``text``, or an :class:`InputError` naming ``where`` it came from and ``fix``.

    Refused as not JSON: malformed text, bytes that are not UTF-8, nesting deeper than Python's
    parser recurses (``[[[[...]]]]``, a RecursionError) and integers of more than 4300 digits
    (Python's limit on converting text to int), each with the first line of the parser's reason.
    """
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
        raise InputError(f"{where} is not valid JSON ({reason}); {fix}") from None


def read_json(path: PathLike, what: str, fix: str) -> Any:
    """The JSON document in the file ``path`` (see :func:`parse_json`); ``what`` names the file in the
    sentence ("calibration file"), ``fix`` says what to do instead."""
    path = check_readable_file(path, what)
    return parse_json(path.read_bytes(), f"The {what} {path}", fix)


# ----------------------------------------------------------------------------- output folders


def ensure_output_dir(path: PathLike) -> Path:
    """Create the output folder ``path`` (and its parents) if needed; return it as a Path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            f"The output folder {path} exists as a file; choose another output folder or remove the file."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise NotADirectoryError(
            f"Cannot create the output folder {path} because a file stands in its path "
            f"({err.filename}); choose another output folder."
        ) from None
    return path


def check_not_input(out_path: PathLike, input_paths: Sequence[PathLike]) -> None:
    """Raise ``ValueError`` if writing ``out_path`` would overwrite one of ``input_paths``.

    Paths are compared after resolving symbolic links and ``..``; existing files are also
    compared by identity (``os.path.samefile``), which catches hard links.
    """
    out = Path(out_path)
    out_resolved = out.resolve()
    for inp in input_paths:
        inp = Path(inp)
        same = inp.resolve() == out_resolved
        if not same and out.exists() and inp.exists():
            same = os.path.samefile(out, inp)
        if same:
            raise InputError(
                f"The output {out} would overwrite the input {inp}; choose another output folder."
            )


# ----------------------------------------------------------------------------- reading images


def check_readable_file(path: PathLike, what: str) -> Path:
    """``path`` as a Path, once it is known to be a regular file that this process can read.

    Raises ``FileNotFoundError`` or ``IsADirectoryError`` (the command line's one-line errors for a
    wrong path) or :class:`InputError` for anything else that is not a readable file: a named pipe,
    socket or device (opening one would block or read forever), or a file whose permissions or disk
    refuse the read. ``what`` names the file in the sentence ("image", "mask", "calibration file").
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what.capitalize()} file not found: {path}; check the path.") from None
    except OSError as err:
        raise InputError(f"The {what} {path} cannot be reached ({err.strerror}); check the folders in its path.") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"Expected {_article(what)} {what} file but {path} is a folder.")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS.items() if test(mode)), "not a regular file")
        raise InputError(f"The {what} {path} is {kind}, not a file; give the path of {_article(what)} {what} file.")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        raise InputError(
            f"The {what} {path} cannot be read: permission denied; make it readable (chmod +r) or copy it."
        ) from None
    except OSError as err:
        raise InputError(f"The {what} {path} cannot be read ({err.strerror}); copy it again from a good source.") from None
    return path


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _open_image(path: Path, what: str) -> Image.Image:
    check_readable_file(path, what)
    too_large = (
        f"The {what} {path} claims more than {MAX_IMAGE_PIXELS:,} pixels (4096 x 4096), the most an image may "
        "have here; it is not decoded (a small file claiming a huge image is a decompression bomb), give a smaller image."
    )
    try:
        # Pillow warns, then refuses, at its own bounds (89 M and 179 M pixels); both are above ours.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(too_large) from None
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image file that can be read; pass a PNG image.") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"The {what} {path} is corrupt or truncated ({err}); re-export it as PNG.") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise InputError(too_large.replace("claims more than", f"claims {width} x {height} pixels, more than"))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        image.close()
        raise InputError(f"The {what} {path} is corrupt or truncated ({err}); re-export it as PNG.") from None
    return image


def _refuse_transparency(image: Image.Image, path: Path, what: str) -> None:
    """Refuse an image with any pixel below fully opaque: a background composited in would become data
    the model takes as observed, and missing pixels have their own model, a mask."""
    transparent = int((np.asarray(image.getchannel("A")) < 255).sum())
    if transparent:
        raise InputError(
            f"The {what} {path} has {transparent} transparent pixel(s) (its alpha channel); transparency is not "
            "read as data: flatten it onto a background, or mark missing pixels with a mask (--task inpaint --mask)."
        )


def _image_to_tensor(image: Image.Image, path: Path, what: str) -> torch.Tensor:
    """(C, H, W) float32 in [0, 1]; an opaque alpha channel is dropped, a transparent one refused; a palette
    is expanded, to one channel when every colour it uses is grey."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        array = np.asarray(image).astype(np.float64)
        if array.min() < 0 or array.max() > 65535:
            raise InputError(
                f"The {what} {path} has integer values outside the 16-bit range; save it as 8 or 16 bit PNG."
            )
        return torch.from_numpy(array / 65535.0).float()[None]
    if mode == "1":
        image = image.convert("L")
    elif mode in ("P", "PA"):
        image = image.convert("RGBA")
        _refuse_transparency(image, path, what)
        rgb = np.asarray(image)[:, :, :3]
        if (rgb == rgb[:, :, :1]).all():  # a grayscale image stored with a palette
            image = image.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        image = image.convert("RGB")
    elif mode not in _EIGHT_BIT_MODES:
        raise InputError(
            f"The {what} {path} has pixel mode {mode!r}, which cannot be read as [0, 1] intensities; "
            "save it as an 8 or 16 bit grayscale or RGB PNG."
        )
    mode = image.mode
    if mode in ("LA", "RGBA"):
        _refuse_transparency(image, path, what)
    array = np.array(image)
    if array.ndim == 2:
        array = array[:, :, None]
    array = array[:, :, : _EIGHT_BIT_MODES[mode]]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255.0)


def _convert_channels(img: torch.Tensor, channels: int | None, path: Path) -> torch.Tensor:
    if channels is None or img.shape[0] == channels:
        return img
    if channels == 1 and img.shape[0] == 3:
        weights = torch.tensor(LUMA_WEIGHTS, dtype=img.dtype).view(3, 1, 1)
        return (img * weights).sum(0, keepdim=True).clamp_(0.0, 1.0)
    if channels == 3 and img.shape[0] == 1:
        return img.expand(3, -1, -1).clone()
    raise InputError(f"Cannot convert the image {path} with {img.shape[0]} channels to {channels} channels.")


def read_image(path: PathLike, channels: int | None = None, what: str = "image") -> torch.Tensor:
    """Read an image file (PNG; 8 or 16 bit) as a float32 tensor (C, H, W) in [0, 1].

    Grayscale images (L, LA, I;16, and palette images whose colours are all grey) give C = 1, colour
    images (RGB, RGBA, colour palette) C = 3. An alpha channel is dropped when every pixel is opaque and
    refused otherwise. 8-bit values k become k / 255 exactly, 16-bit values k / 65535.
    ``channels=1`` converts colour to grayscale with the BT.601 luma weights
    (0.299 R + 0.587 G + 0.114 B), ``channels=3`` repeats a grayscale channel three times.
    An image of more than :data:`MAX_IMAGE_PIXELS` pixels is refused before it is decoded;
    ``what`` names the file in error messages.
    """
    if channels not in (None, 1, 3):
        raise InputError(f"channels must be None, 1 or 3, got {channels!r}.")
    path = Path(path)
    with _open_image(path, what) as image:
        img = _image_to_tensor(image, path, what)
    return _convert_channels(img, channels, path)


def read_images(paths: Sequence[PathLike], channels: int | None = None) -> torch.Tensor:
    """Read several images of one size into a batch (B, C, H, W) float32 in [0, 1].

    With ``channels=None`` the images must also share their number of channels.
    """
    if len(paths) == 0:
        raise InputError("No image paths were given; pass at least one image.")
    images = [read_image(p, channels=channels) for p in paths]
    first = images[0]
    for p, img in zip(paths, images):
        if img.shape[1:] != first.shape[1:]:
            raise InputError(
                f"All images must have the same size, but {paths[0]} is {first.shape[2]}x{first.shape[1]} "
                f"and {p} is {img.shape[2]}x{img.shape[1]} (width x height); resize them first."
            )
        if img.shape[0] != first.shape[0]:
            raise InputError(
                f"{paths[0]} has {first.shape[0]} channel(s) but {p} has {img.shape[0]}; "
                "pass channels=1 or channels=3 to convert them all."
            )
    return torch.stack(images)


def read_mask(path: PathLike) -> torch.Tensor:
    """Read a mask image as a float32 tensor (H, W) of 0 and 1, where 1 marks an observed pixel.

    White means observed, black means missing. The image (colour by luma) must be black and white: a
    grey pixel (more than half an 8-bit step from black and from white) is refused rather than
    thresholded, since an all-grey mask would read as all observed or all missing, and a mask that
    marks every pixel observed is refused too, since there is nothing to inpaint.
    """
    path = Path(path)
    img = read_image(path, channels=1, what="mask")[0]
    grey = (img > _MASK_TOLERANCE) & (img < 1 - _MASK_TOLERANCE)
    if grey.any():
        example = float(img[grey][0])
        raise InputError(
            f"The mask {path} has {int(grey.sum())} grey pixel(s) (e.g. {example:.3f}) where a mask holds only "
            "white (observed) and black (missing); save it without anti-aliasing, or threshold it at 50%."
        )
    mask = (img >= 0.5).float()
    if bool(mask.all()):
        raise InputError(
            f"The mask {path} is white everywhere, so every pixel is observed and there is nothing to inpaint; "
            "paint the missing pixels black."
        )
    return mask


# ----------------------------------------------------------------------------- writing images


def _as_chw(img: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    img = torch.as_tensor(img).detach().cpu()
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3 or img.shape[0] not in (1, 3, 4):
        raise InputError(
            f"{name} must have shape (C, H, W) with C in 1, 3, 4 or shape (H, W), got {tuple(img.shape)}."
        )
    img = img.float()
    if torch.isnan(img).any():
        raise InputError(
            f"{name} contains NaN values; the reconstruction has diverged, so nothing is written."
        )
    return img.clamp(0.0, 1.0)


def write_image(path: PathLike, img: torch.Tensor | np.ndarray) -> Path:
    """Write an image (C, H, W) or (H, W) in [0, 1] as a lossless 8-bit PNG, atomically.

    Values are clamped to [0, 1] and rounded to k / 255; NaN is refused. C may be 1
    (grayscale), 3 (RGB) or 4 (RGBA).
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"Images are written as lossless PNG; give {path} the suffix .png.")
    chw = _as_chw(img, "The image")
    array = (chw * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    pil = Image.fromarray(array[:, :, 0] if mode == "L" else array, mode=mode)
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")
    return path


def grid_canvas(
    rows: Sequence[Sequence[torch.Tensor]],
    scale: int = 1,
    pad: int = 2,
    pad_value: float = 1.0,
) -> tuple[torch.Tensor, list[list[tuple[int, int, int, int]]]]:
    """The grid of :func:`save_grid` as an image (C, height, width) in [0, 1], and each cell's box
    (top, left, height, width) in it, row by row (for labels drawn on the grid)."""
    if scale < 1 or pad < 0:
        raise InputError(f"save_grid needs scale >= 1 and pad >= 0, got scale={scale}, pad={pad}.")
    if len(rows) == 0 or any(len(row) == 0 for row in rows):
        raise InputError("save_grid needs at least one row and at least one image in every row.")
    grid_rows = [[_as_chw(img, "Every grid image")[:3] for img in row] for row in rows]
    channels = max(img.shape[0] for row in grid_rows for img in row)
    cells = []
    for row in grid_rows:
        height = max(img.shape[1] for img in row)
        width = max(img.shape[2] for img in row)
        size = (height * scale, width * scale)
        cells.append(
            [
                F.interpolate(img[None], size=size, mode="nearest-exact")[0].expand(channels, -1, -1)
                for img in row
            ]
        )
    total_height = pad + sum(row[0].shape[1] + pad for row in cells)
    total_width = max(pad + sum(cell.shape[2] + pad for cell in row) for row in cells)
    canvas = torch.full((channels, total_height, total_width), float(pad_value))
    boxes = []
    top = pad
    for row in cells:
        left, row_boxes = pad, []
        for cell in row:
            canvas[:, top : top + cell.shape[1], left : left + cell.shape[2]] = cell
            row_boxes.append((top, left, cell.shape[1], cell.shape[2]))
            left += cell.shape[2] + pad
        boxes.append(row_boxes)
        top += row[0].shape[1] + pad
    return canvas, boxes


def save_grid(
    path: PathLike,
    rows: Sequence[Sequence[torch.Tensor]],
    scale: int = 1,
    pad: int = 2,
    pad_value: float = 1.0,
) -> Path:
    """Save a grid of images (rows x columns) as one lossless PNG.

    Each image is (C, H, W) or (H, W) in [0, 1]. Within a row, smaller images (e.g. 8x8
    low-resolution inputs next to 32x32 reconstructions) are enlarged with nearest neighbour to
    the row's largest height and width, so their pixels show as blocks. Every image is then
    enlarged ``scale`` times (nearest neighbour) and the cells are separated and surrounded by
    ``pad`` pixels of value ``pad_value``. Grayscale images are shown as RGB when any image in the
    grid is in colour. Rows are left-aligned, so the output is

        height = pad + sum over rows (scale * row height + pad)
        width  = max over rows (pad + sum over the row's cells (scale * row width + pad)).
    """
    return write_image(path, grid_canvas(rows, scale, pad, pad_value)[0])
