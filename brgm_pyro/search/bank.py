"""A bank of draws of G's own prior, z ~ N(0, I), w = mapping(z), and their images, cached on disk per prior.

The mode search (``brgm_pyro.search``) ranks these draws by how well each explains y before any
optimisation: a draw of the prior that fits y is a start in the basin of a mode of the posterior,
which the MAP from w_avg often misses. The draws do not depend on y, so one bank serves every image
of a batch and of a data-set run, and every later run with the same prior.

    bank = PriorBank.load_or_build(G, size=65536)      # built in batches, cached, reused
    for start, z, w, images in bank.chunks(4096): ...   # read a slice at a time, never whole

What a bank holds, row n: ``z`` (z_dim,) from a seeded generator, ``w`` = mapping(z_n) (w_dim,),
and ``images``, G(w_n) with the same w on every layer, in [0, 1] as float16, at ``resolution``:
G's own for priors up to ``MAX_FULL_RESOLUTION`` px, else the image the skip architecture has drawn
at that resolution on its way up (``SynthesisNetwork(..., resolution=r)``), which costs the blocks
up to r only. The file is a safetensors file named by the prior's fingerprint (a hash of its
weights, ``uncertainty.conformal.fingerprint``), the bank's size, seed and resolution, in the cache
folder (``$BRGM_CACHE_DIR``, else ``$XDG_CACHE_HOME/brgm_pyro``, else ``~/.cache/brgm_pyro``),
under ``banks/``. It is written atomically; a file that does not match (another prior, a wrong
shape, a truncated or corrupt file, values outside [0, 1]) is rebuilt with one note, never
trusted. The folder is bounded: after a write, the least recently used banks are deleted until the
folder holds at most ``BRGM_BANK_CACHE_BYTES`` (default 2 GiB), the new one always kept.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from brgm_pyro.errors import InputError
from brgm_pyro.io import atomic_path
from brgm_pyro.stylegan2 import to_unit
from brgm_pyro.uncertainty.conformal import fingerprint

__all__ = [
    "BANK_SEED", "CACHE_BYTES", "DEFAULT_SIZE", "MAX_FULL_RESOLUTION", "BankNote", "PriorBank", "cache_folder",
    "default_bank_size",
]

DEFAULT_SIZE = 65536
"""Draws in a bank by default."""
BANK_SEED = 20_240_601
"""The seed of the bank's z, the same for every prior, so that a bank is a function of the prior alone."""
MAX_FULL_RESOLUTION = 64
"""Priors up to this size keep full-resolution images in their bank; larger ones keep the 64 px image."""
CACHE_BYTES = 2 * 1024**3
"""The banks folder's bound in bytes unless ``BRGM_BANK_CACHE_BYTES`` says otherwise."""
FORMAT = "brgm_pyro.prior_bank/1"
BUILD_BATCH = 256


class BankNote(UserWarning):
    """A cached bank that could not be used and was rebuilt."""


def cache_folder() -> Path:
    """The folder of the banks: ``$BRGM_CACHE_DIR/banks``, else ``$XDG_CACHE_HOME/brgm_pyro/banks``,
    else ``~/.cache/brgm_pyro/banks``."""
    root = os.environ.get("BRGM_CACHE_DIR")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "brgm_pyro"
    return Path(root) / "banks"


def default_bank_size() -> int:
    """The draws in a bank unless the search says: ``$BRGM_BANK_SIZE`` (a smaller bank on a small machine,
    a tiny one in tests), else ``DEFAULT_SIZE``."""
    value = os.environ.get("BRGM_BANK_SIZE")
    if value is None:
        return DEFAULT_SIZE
    try:
        return _check_size(int(value))
    except ValueError:
        raise InputError(f"BRGM_BANK_SIZE must be a positive number of draws, got {value!r}.") from None


def _cache_bytes() -> int:
    value = os.environ.get("BRGM_BANK_CACHE_BYTES")
    if value is None:
        return CACHE_BYTES
    try:
        return int(value)
    except ValueError:
        raise InputError(f"BRGM_BANK_CACHE_BYTES must be a number of bytes, got {value!r}.") from None


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InputError(f"The bank's size must be a positive integer of draws, got {size!r}.")
    return size


@dataclass(frozen=True)
class PriorBank:
    """Draws of G's prior and their images, read from a file a slice at a time (module notes).

    Attributes:
        path: the safetensors file.
        prior: the fingerprint of the prior that made it.
        size: the number of draws N.
        resolution: the images' size r (G's own, or smaller for a large prior).
        channels, z_dim, w_dim: the sizes of a row.
    """

    path: Path
    prior: str
    size: int
    resolution: int
    channels: int
    z_dim: int
    w_dim: int

    @staticmethod
    def resolution_for(G: nn.Module) -> int:
        """The images' size in G's bank: G's own up to ``MAX_FULL_RESOLUTION`` px, else that."""
        return min(int(G.resolution), MAX_FULL_RESOLUTION)

    @classmethod
    def file_for(cls, G: nn.Module, size: int, folder: Path | None = None) -> Path:
        resolution = cls.resolution_for(G)
        return (folder or cache_folder()) / f"{fingerprint(G)}-{size}-{BANK_SEED}-{resolution}px.safetensors"

    @classmethod
    def load_or_build(cls, G: nn.Module, size: int | None = None, folder: Path | None = None,
                      progress: bool = False) -> PriorBank:
        """The bank of ``size`` draws of G: read from the cache when a valid file is there, else built
        (in batches of ``BUILD_BATCH`` on G's device) and written atomically, the folder then bounded.
        ``size`` None: :func:`default_bank_size`."""
        size = _check_size(default_bank_size() if size is None else size)
        path = cls.file_for(G, size, folder)
        if path.is_file():
            try:
                bank = cls.open(path, G)
                os.utime(path, (time.time(), path.stat().st_mtime))  # last used (access time), for the bound
                return bank
            except InputError as err:
                warnings.warn(f"The cached prior bank {path} is rebuilt: {err}", BankNote, stacklevel=2)
        path.parent.mkdir(parents=True, exist_ok=True)
        cls.build(G, size, path, progress)
        _bound(path.parent, keep=path)
        return cls.open(path, G)

    @staticmethod
    @torch.no_grad()
    def build(G: nn.Module, size: int, path: Path, progress: bool = False) -> None:
        """Draw the bank of G and write it to ``path`` (atomically)."""
        from tqdm.auto import tqdm

        resolution = PriorBank.resolution_for(G)
        device = G.w_avg.device
        gen = torch.Generator().manual_seed(BANK_SEED)
        zs, ws, images = [], [], []
        for start in tqdm(range(0, size, BUILD_BATCH), disable=not progress, desc="prior bank", leave=False):
            z = torch.randn(min(BUILD_BATCH, size - start), G.z_dim, generator=gen)
            w = G.mapping(z.to(device=device, dtype=G.w_avg.dtype))  # (n, num_ws, w_dim), the same w on every layer
            image = to_unit(G.synthesis(w, resolution=None if resolution == G.resolution else resolution), clamp=True)
            zs.append(z)
            ws.append(w[:, 0].float().cpu())
            images.append(image.to(torch.float16).cpu())
        metadata = {
            "format": FORMAT, "prior": fingerprint(G), "size": str(size), "seed": str(BANK_SEED),
            "resolution": str(resolution),
        }
        tensors = {"z": torch.cat(zs), "w": torch.cat(ws), "images": torch.cat(images)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)

    @classmethod
    def open(cls, path: Path, G: nn.Module | None = None) -> PriorBank:
        """The bank in ``path``, checked: its header, its shapes, its prior (if G is given) and a scan of
        its values (finite, images in [0, 1]); InputError with one sentence otherwise. A file checked
        before in this process (same path, size and modification time) is not scanned again."""
        path = Path(path)
        try:
            stat = path.stat()
        except OSError as err:
            raise InputError(f"{path} is not a readable prior bank ({type(err).__name__}).") from None
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key in _CHECKED:
            bank = _CHECKED[key]
            if G is not None:
                bank.check(G)
            return bank
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
            raise InputError(f"{path} is not a readable prior bank ({type(err).__name__}).") from None
        if metadata.get("format") != FORMAT or set(shapes) != {"z", "w", "images"}:
            raise InputError(f"{path} is not a prior bank of this format (format {metadata.get('format')!r}).")
        try:
            size, resolution = int(metadata["size"]), int(metadata["resolution"])
        except (KeyError, ValueError):
            raise InputError(f"{path} has no valid size or resolution in its header.") from None
        z_shape, w_shape, image_shape = shapes["z"], shapes["w"], shapes["images"]
        if (len(z_shape) != 2 or len(w_shape) != 2 or len(image_shape) != 4 or z_shape[0] != size
                or w_shape[0] != size or image_shape[0] != size or image_shape[2:] != (resolution, resolution)):
            raise InputError(f"{path} holds tensors of shapes {shapes}, which do not match its header.")
        bank = cls(path, metadata.get("prior", ""), size, resolution, image_shape[1], z_shape[1], w_shape[1])
        if G is not None:
            bank.check(G)
        for _, z, w, images in bank.chunks(8192):
            if not (torch.isfinite(z).all() and torch.isfinite(w).all() and torch.isfinite(images).all()):
                raise InputError(f"{path} holds NaN or infinite values.")
            if float(images.min()) < 0 or float(images.max()) > 1:
                raise InputError(f"{path} holds images outside [0, 1].")
        _CHECKED[key] = bank
        return bank

    def check(self, G: nn.Module) -> None:
        """One sentence unless this bank was made by G (same fingerprint and sizes)."""
        if self.prior != fingerprint(G):
            raise InputError(
                f"The prior bank {self.path.name} was made by another prior (fingerprint {self.prior!r}, this one "
                f"{fingerprint(G)!r}); build one for this prior (PriorBank.load_or_build(G))."
            )
        if (self.z_dim, self.w_dim, self.channels) != (G.z_dim, G.w_dim, G.channels) or \
                self.resolution != self.resolution_for(G):
            raise InputError(f"The prior bank {self.path.name} does not match the sizes of this prior.")

    def chunks(self, rows: int) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(start, z, w, images as float32) for rows [start, start + rows), read from the file slice by slice."""
        with safe_open(str(self.path), framework="pt") as handle:
            z_slice, w_slice, image_slice = (handle.get_slice(name) for name in ("z", "w", "images"))
            for start in range(0, self.size, rows):
                stop = min(start + rows, self.size)
                yield start, z_slice[start:stop], w_slice[start:stop], image_slice[start:stop].float()

    def rows(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z, w and images (float32) of the rows ``index`` (any shape), each with the index's shape in front."""
        flat = index.reshape(-1).tolist()
        with safe_open(str(self.path), framework="pt") as handle:
            z, w, images = (handle.get_slice(name) for name in ("z", "w", "images"))
            picked = [(z[i : i + 1], w[i : i + 1], images[i : i + 1]) for i in flat]
        out = [torch.cat(part) for part in zip(*picked)]
        return tuple(t.reshape(*index.shape, *t.shape[1:]) for t in (out[0], out[1], out[2].float()))

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size


_CHECKED: dict[tuple[str, int, int], PriorBank] = {}
"""Banks this process has checked, by path, file size and modification time."""


def _bound(folder: Path, keep: Path) -> None:
    """Delete the least recently used bank files of ``folder`` until it holds at most the bound, ``keep`` kept."""
    limit = _cache_bytes()
    files = sorted((p for p in folder.glob("*.safetensors") if p != keep), key=lambda p: p.stat().st_atime)
    total = sum(p.stat().st_size for p in files) + keep.stat().st_size
    for path in files:
        if total <= limit:
            break
        total -= path.stat().st_size
        path.unlink(missing_ok=True)


def expected_bytes(G: nn.Module, size: int) -> int:
    """The size of G's bank file of ``size`` draws (z and w as float32, images as float16), header aside."""
    r = PriorBank.resolution_for(G)
    return size * (4 * (G.z_dim + G.w_dim) + 2 * G.channels * r * r)

