"""Which checkpoint format a file holds, told from its first bytes (nothing in it is unpickled or run)."""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

from brgm_pyro.errors import CheckpointError

__all__ = ["FORMATS", "sniff_format"]

FORMATS = ("nvidia-pkl", "tf-pkl", "rosinality-pt", "brgm-safetensors")

# How much of a file is read: a pickle names its first globals long before its tensors.
_SNIFF_BYTES = 1 << 20
# torch.save's legacy (pre-zip) format starts with this pickled magic number.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
_NOT_ROSINALITY = (
    "is a PyTorch checkpoint without a 'g_ema' generator, so not a rosinality StyleGAN2 file; "
    "convert it to a supported format."
)


def sniff_format(path: str | os.PathLike) -> str:
    """The format of a generator file, from its content: one of :data:`FORMATS`.

    Raises :class:`CheckpointError` (one sentence) for empty, foreign or unsupported files.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the checkpoint file inside it.")
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}; check the path.")
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head:
        raise CheckpointError(f"{path} is empty; re-download or re-create it.")
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 0 < header_len <= path.stat().st_size - 8:
            return "brgm-safetensors"
    if head.startswith(b"PK\x03\x04"):
        return _sniff_zip(path)
    if head.startswith(_TORCH_LEGACY_MAGIC):
        if b"g_ema" in head:
            return "rosinality-pt"
        raise CheckpointError(f"{path} {_NOT_ROSINALITY}")
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        if b"torch_utils.persistence" in head:
            return "nvidia-pkl"
        if b"dnnlib.tflib.network" in head:
            return "tf-pkl"
        raise CheckpointError(
            f"{path} is a Python pickle but neither NVIDIA's PyTorch nor TensorFlow StyleGAN2 format, "
            "and pickles can run code, so it is not loaded; give a supported checkpoint."
        )
    raise CheckpointError(
        f"{path} is not a generator checkpoint (it looks like {_describe_foreign(head)}); give a "
        "StyleGAN2 .pkl (NVIDIA PyTorch or TensorFlow), a rosinality .pt or a brgm-pyro .safetensors file."
    )


def _sniff_zip(path: Path) -> str:
    """torch.save's zip format: a rosinality file when its pickle names a 'g_ema' entry."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            data = archive.read(pickles[0]) if pickles else None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(
            f"{path} is a damaged zip archive ({err}); it is truncated or corrupt, re-download it."
        ) from None
    if data is None:
        raise CheckpointError(
            f"{path} is a zip archive but not a PyTorch checkpoint; give a generator checkpoint instead."
        )
    if b"g_ema" not in data:
        raise CheckpointError(f"{path} {_NOT_ROSINALITY}")
    return "rosinality-pt"


def _describe_foreign(head: bytes) -> str:
    signatures = {
        b"\x89PNG": "a PNG image",
        b"\xff\xd8\xff": "a JPEG image",
        b"GIF8": "a GIF image",
        b"\x1f\x8b": "a gzip archive",
        b"\x89HDF": "an HDF5 file (Keras?)",
        b"%PDF": "a PDF document",
        b"\x93NUMPY": "a numpy .npy array",
    }
    for magic, kind in signatures.items():
        if head.startswith(magic):
            return kind
    text = head.lstrip()[:1]
    if text in (b"{", b"["):
        return "a JSON document"
    if text == b"<":
        return "an HTML or XML page (a failed download?)"
    return "unknown binary data"
