"""Fashion-MNIST, the training data of the embedded prior (70,000 grayscale 28x28 images, MIT licence).

The four official files are looked for, in this order, in

1. the folder named by the environment variable ``BRGM_DATA_DIR``,
2. :func:`system_dir`: :data:`SYSTEM_DIR`, where Debian's package ``dataset-fashion-mnist`` puts
   them, or the folder named by ``BRGM_SYSTEM_DATA_DIR`` instead (set but empty: none, which hides
   an installed data set, as on a machine without it),
3. the package cache :func:`cache_dir` (``$XDG_CACHE_HOME/brgm_pyro/fashion-mnist``),

and otherwise downloaded from :data:`BASE_URL` into the cache. A folder counts only when it
holds all four files (each either gzipped, as published, or plain). Every file is checked
against the published MD5 of the ``.gz`` file or, because Debian recompresses the files, the
MD5 of its decompressed content; a file that matches neither is refused.

Splits (:func:`load_fashion_mnist`):

=============  ======  ==============================================================
``train``      55,000  the first 55,000 images of the official training set
``val``         5,000  the last 5,000 images of the official training set: tune here
``test``       10,000  the official test set: for the final evaluation only
``train_full`` 60,000  the whole official training set
=============  ======  ==============================================================
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from brgm_pyro.errors import DatasetError, InputError
from brgm_pyro.io import atomic_path

DATA_DIR_ENV = "BRGM_DATA_DIR"
SYSTEM_DIR_ENV = "BRGM_SYSTEM_DATA_DIR"
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DOWNLOAD_TIMEOUT_S = 60.0

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# MD5 of the official .gz files, as published in the Fashion-MNIST README.
GZ_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# MD5 of the decompressed files; Debian's recompressed .gz files differ from the official ones
# byte for byte but decompress to exactly these.
RAW_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SPLITS = ("train", "val", "test", "train_full")
VAL_SIZE = 5000
IMAGE_SIZE = 28

_IDX_MAGIC = {2049: 1, 2051: 3}  # unsigned-byte idx files: magic number -> number of dimensions


def cache_dir() -> Path:
    """The download cache: ``$XDG_CACHE_HOME/brgm_pyro/fashion-mnist`` (default ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "brgm_pyro" / "fashion-mnist"


def system_dir() -> Path | None:
    """The system-wide folder: ``BRGM_SYSTEM_DATA_DIR`` if set (empty: None), else :data:`SYSTEM_DIR`."""
    setting = os.environ.get(SYSTEM_DIR_ENV)
    if setting is None:
        return Path(SYSTEM_DIR)
    return Path(setting).expanduser() if setting else None


def candidate_dirs() -> list[Path]:
    """The folders searched for the files, in order of preference."""
    dirs = []
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    if (system := system_dir()) is not None:
        dirs.append(system)
    return [*dirs, cache_dir()]


def _file_in(folder: Path, name: str) -> Path | None:
    """The file ``name`` in ``folder``, gzipped (preferred) or plain, or None."""
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds all four files (their content is checked only when they are read)."""
    return all(_file_in(folder, name) is not None for name in FILES.values())


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _decompress(data: bytes, path: Path) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(
            f"{path} is not a valid gzip file ({err}); delete it so that it is downloaded again, "
            "or reinstall it with `apt-get install --reinstall dataset-fashion-mnist`."
        ) from None


def _verified_bytes(path: Path) -> bytes:
    """The decompressed content of ``path`` after checking it against the published checksums."""
    data = path.read_bytes()
    name = path.name.removesuffix(".gz")
    if path.suffix == ".gz":
        if _md5(data) == GZ_MD5[path.name]:
            return _decompress(data, path)
        raw = _decompress(data, path)
    else:
        raw = data
    if _md5(raw) != RAW_MD5[name]:
        raise DatasetError(
            f"{path} fails its checksum check (content MD5 {_md5(raw)}, expected {RAW_MD5[name]}), so it is "
            "corrupt or not the official Fashion-MNIST file; delete it so that it is downloaded again, "
            "or reinstall it with `apt-get install --reinstall dataset-fashion-mnist`."
        )
    return raw


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    header = np.frombuffer(raw[:4], dtype=">u4")
    magic = int(header[0]) if header.size else -1
    if magic not in _IDX_MAGIC:
        raise DatasetError(f"{path} is not an unsigned-byte idx file (magic number {magic}); replace it.")
    ndim = _IDX_MAGIC[magic]
    shape = tuple(int(n) for n in np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">u4"))
    offset = 4 + 4 * ndim
    if len(shape) != ndim or len(raw) != offset + int(np.prod(shape)):
        raise DatasetError(f"{path} is truncated or its idx header is wrong; replace it.")
    # A writable copy, so that torch can wrap it without a read-only warning; it is never handed out.
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(shape).copy()


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, size: int, mtime_ns: int) -> np.ndarray:
    return _parse_idx(_verified_bytes(Path(path)), Path(path))


def _read_idx(path: Path) -> np.ndarray:
    """Verified, decoded idx array (uint8, shared: do not modify), cached per file version."""
    stat = path.stat()
    return _read_idx_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _verify_folder(folder: Path) -> Path:
    for name in FILES.values():
        _read_idx(_file_in(folder, name))
    return folder


def _not_found_error(reason: str) -> DatasetError:
    return DatasetError(
        f"Fashion-MNIST was not found locally and {reason}; install it with "
        f"`sudo apt-get install dataset-fashion-mnist`, or set {DATA_DIR_ENV} to a folder holding the "
        f"four official files ({', '.join(GZ_MD5)})."
    )


def _download(url: str, destination: Path, expected_md5: str) -> None:
    """Download ``url`` to ``destination`` atomically, keeping it only if its MD5 matches."""
    digest = hashlib.md5(usedforsecurity=False)
    with atomic_path(destination) as tmp:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length") if response.headers else None
            with tqdm(
                total=int(length) if length else None,
                unit="B",
                unit_scale=True,
                desc=destination.name,
                disable=None,
            ) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != expected_md5:
            raise DatasetError(
                f"The download of {url} fails its checksum check (MD5 {digest.hexdigest()}, expected "
                f"{expected_md5}) and was deleted; try again later, or install the data with "
                "`sudo apt-get install dataset-fashion-mnist`."
            )


def local_dir() -> Path | None:
    """The first of :func:`candidate_dirs` that holds all four files, not yet verified, or None."""
    return next((folder for folder in candidate_dirs() if is_complete(folder)), None)


def find_fashion_mnist(download: bool = True) -> Path:
    """The folder holding the four Fashion-MNIST files, downloading them into the cache if needed.

    Searches :func:`candidate_dirs` in order and returns the first complete folder after
    checking every file's checksum. Raises :class:`DatasetError` when a file fails the check,
    or when nothing is found and the download is disabled or impossible (offline).
    """
    if (folder := local_dir()) is not None:
        return _verify_folder(folder)
    if not download:
        raise _not_found_error("downloading is disabled")
    target = cache_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in FILES.values():
            if _file_in(target, name) is None:
                _download(BASE_URL + f"{name}.gz", target / f"{name}.gz", GZ_MD5[f"{name}.gz"])
    except OSError as err:
        raise _not_found_error(f"could not be downloaded ({err})") from None
    return _verify_folder(target)


def _pad(images: np.ndarray, pad_to: int) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, pad_to, pad_to) in [0, 1], zero border, image centred."""
    n, height, width = images.shape
    out = torch.zeros((n, 1, pad_to, pad_to), dtype=torch.float32)
    top, left = (pad_to - height) // 2, (pad_to - width) // 2
    centre = out[:, 0, top : top + height, left : left + width]
    centre.copy_(torch.from_numpy(images))
    centre.div_(255.0)
    return out


def load_fashion_mnist(
    split: str, pad_to: int = 32, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a Fashion-MNIST split as ``(images, labels)``.

    Args:
        split: ``"train"`` (first 55,000 training images), ``"val"`` (last 5,000 training images,
            for tuning every setting), ``"test"`` (official 10,000 test images, evaluation only)
            or ``"train_full"`` (all 60,000 training images).
        pad_to: output side length >= 28; the 28x28 images are centred and padded with zeros
            (2 pixels each side for 32).
        root: a folder holding the four files; ``None`` searches with :func:`find_fashion_mnist`.

    Returns:
        images float32 (N, 1, pad_to, pad_to) in [0, 1] (pixel value k becomes k / 255) and
        labels int64 (N,) in 0..9 (see :data:`CLASS_NAMES`). The tensors are fresh copies.
    """
    if split not in SPLITS:
        raise InputError(f"Unknown Fashion-MNIST split {split!r}; choose one of {', '.join(SPLITS)}.")
    if pad_to < IMAGE_SIZE:
        raise InputError(f"pad_to must be at least {IMAGE_SIZE}, got {pad_to}.")
    if root is None:
        folder = find_fashion_mnist()
    else:
        folder = Path(root)
        if not is_complete(folder):
            raise DatasetError(
                f"{folder} does not hold all four Fashion-MNIST files ({', '.join(GZ_MD5)}); "
                "pass root=None to search the usual places."
            )
    prefix = "test" if split == "test" else "train"
    images = _read_idx(_file_in(folder, FILES[f"{prefix}_images"]))
    labels = _read_idx(_file_in(folder, FILES[f"{prefix}_labels"]))
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{folder} holds {images.shape[0]} {prefix} images but {labels.shape[0]} labels.")
    rows = {"train": slice(0, -VAL_SIZE), "val": slice(-VAL_SIZE, None)}.get(split, slice(None))
    return _pad(images[rows], pad_to), torch.from_numpy(labels[rows].astype(np.int64))
