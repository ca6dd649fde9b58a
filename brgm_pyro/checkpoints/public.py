"""Published StyleGAN2 priors by name: the registry (data, ``public_priors.json``), the download, the cache and its checksums.

Each entry of ``public_priors.json`` gives ``url``, ``filename`` (its name in the cache),
``resolution``, ``channels`` (null: not published, read from the file), ``source_format``,
``licence`` (a key of its ``licences`` table), ``data``, ``perceptual`` (the default perceptual
network of the reconstruction), and ``size``/``sha256`` with ``checksum_source`` where a checksum is
known (null otherwise).

A file is kept under ``torch.hub.get_dir()/checkpoints/`` and checked *before* anything reads it:
against the published size and SHA-256 where there is one; otherwise against the size and SHA-256
recorded when the file was first downloaded (or first used, for a file placed there by hand), in
a small JSON next to it (``<filename>.json``). A file that fails its check is refused, never
loaded, and a download that fails it is not kept.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from brgm_pyro.errors import CheckpointError, InputError
from brgm_pyro.io import atomic_path

__all__ = ["PUBLIC_PRIORS", "fetch_public_prior", "public_prior_path", "record_path"]


def _read_registry() -> dict[str, dict[str, Any]]:
    registry = json.loads(resources.files(__package__).joinpath("public_priors.json").read_text())
    licences = registry["licences"]
    return {
        name: {**entry, "licence": licences[entry["licence"]]} for name, entry in registry["priors"].items()
    }


#: Published StyleGAN2 generators by name (see the module docstring for the fields).
PUBLIC_PRIORS: dict[str, dict[str, Any]] = _read_registry()


def _entry(name: str) -> dict[str, Any]:
    if name not in PUBLIC_PRIORS:
        raise InputError(f"Unknown public prior {name!r}; choose one of: {', '.join(sorted(PUBLIC_PRIORS))}.")
    return PUBLIC_PRIORS[name]


def public_prior_path(name: str) -> Path:
    """Where the file of the public prior ``name`` is kept (or expected, to be placed there by hand)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _entry(name)["filename"]


def record_path(path: Path) -> Path:
    """The JSON next to a cached file that records its size and SHA-256 at first download."""
    return path.with_name(path.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected(entry: dict[str, Any], path: Path) -> tuple[int | None, str | None, str]:
    """(size, sha256, where they come from) that the file at ``path`` must match."""
    if entry.get("sha256"):
        return entry.get("size"), entry["sha256"].lower(), "published"
    record = record_path(path)
    if record.is_file():
        recorded = json.loads(record.read_text())
        return recorded.get("size"), recorded.get("sha256"), f"recorded at its first download in {record}"
    return entry.get("size"), None, "published"


def _mismatch(path: Path, entry: dict[str, Any]) -> str | None:
    """What is wrong with the file at ``path`` (its size or SHA-256), or None when it passes."""
    size, sha256, origin = _expected(entry, path)
    actual = path.stat().st_size
    if size and actual != size:
        return f"has {actual} bytes where {size} are expected ({origin})"
    if sha256 and _sha256(path) != sha256:
        return f"fails its sha256 check (expected {sha256}, {origin})"
    return None


def _record(name: str, entry: dict[str, Any], path: Path) -> None:
    record = {
        "prior": name,
        "url": entry["url"],
        "size": path.stat().st_size,
        "sha256": _sha256(path),
        "recorded": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_path(record_path(path)) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def _download(name: str, entry: dict[str, Any], dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(entry["url"], headers={"User-Agent": "brgm-pyro"})
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or entry.get("size")
                done = 0
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name) as bar:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        out.write(chunk)
                        done += len(chunk)
                        bar.update(len(chunk))
            if total and done != total:
                raise CheckpointError(
                    f"The download of the prior {name!r} from {entry['url']} stopped after {done} of {total} "
                    "bytes; run again to retry."
                )
            problem = _mismatch(tmp, entry)
            if problem:
                raise CheckpointError(
                    f"The download of the prior {name!r} from {entry['url']} {problem}, so it was not kept; run "
                    "again, and if it fails again the published file has changed."
                )
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        known = [f"{entry['size']} bytes"] if entry.get("size") else []
        known += [f"SHA-256 {entry['sha256']}"] if entry.get("sha256") else []
        raise CheckpointError(
            f"Cannot download the prior {name!r} from {entry['url']} ({reason}); download it on a machine "
            f"with internet access and place it at {dest}{' (' + ', '.join(known) + ')' if known else ''}, "
            "then run again."
        ) from None


def fetch_public_prior(name: str) -> Path:
    """The local file of the public prior ``name``, downloaded on first use and checked before it is read.

    The download shows a progress bar and is written atomically. Where no checksum is published,
    the file's size and SHA-256 are recorded next to it on first use and checked on every later
    use. Raises :class:`CheckpointError` when the file fails its check (it is never unpickled) or
    when it cannot be downloaded (the message names the URL and the exact path to place it at).
    """
    entry = _entry(name)
    path = public_prior_path(name)
    if not path.is_file():
        _download(name, entry, path)
    else:
        problem = _mismatch(path, entry)
        if problem:
            record = f" and {record_path(path)}" if record_path(path).is_file() else ""
            raise CheckpointError(
                f"The cached file of the prior {name!r} at {path} {problem}; delete it{record} so that it is "
                f"downloaded again from {entry['url']}."
            )
    if not entry.get("sha256") and not record_path(path).is_file():
        _record(name, entry, path)
    return path
