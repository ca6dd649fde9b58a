"""The manifest of a data-set run on disk: its settings, and one record per image and attempt, merged on read.

    DIR/run.json                              the settings and their id (written once, atomically)
    DIR/manifest/<attempt>-rank<NNNNN>.jsonl  the records of one process of one attempt, appended

Every process appends only to its own file, one JSON line per image when that image's outputs are
all written (``"done"``, with its metrics and seed) or when it cannot be read (``"failed"``, with the
reason), each line one ``write`` followed by ``fsync``. No file has two writers, so nothing needs a
lock, and this works across processes and across nodes on a shared file system, where SQLite's
write-ahead log (shared memory on one host) and POSIX locks cannot be relied on. A process killed
while writing leaves at most its last line without its newline; readers ignore such a line, and a
later attempt writes new files, so a torn line is never followed by another record.

Reading merges the files of every attempt in order (attempt ids sort by their start time): an image
is done if any record of the current settings says so (exactly one should), else it has the status
of its latest record. Records of other settings (before ``--force``) stay on disk and are ignored.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brgm_pyro import io
from brgm_pyro.errors import InputError
from brgm_pyro.output_lock import LOCK_NAME

__all__ = ["Manifest", "RecordWriter", "new_attempt_id", "open_run", "read_manifest", "settings_id"]

FORMAT = "brgm-dataset/1"
RUN_FILE = "run.json"
RECORDS_DIR = "manifest"
SHOWN_CHARS = 60  # of a changed setting's value, in the refusal's sentence


def settings_id(settings: dict[str, Any]) -> str:
    """A short hash of the settings (canonical JSON): the records of a run carry it."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def new_attempt_id() -> str:
    """A unique id of one attempt of a run that sorts by its start time (UTC, microseconds)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{now}-{uuid.uuid4().hex[:6]}"


def _first_difference(old: Any, new: Any, where: str = "") -> str | None:
    """The first setting that differs, as "name: old -> new", or None when equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    if old == new:
        return None
    shown = [json.dumps(value, default=str) for value in (old, new)]
    shown = [text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..." for text in shown]
    return f"{where}: {shown[0]} -> {shown[1]}"


def open_run(out: Path, settings: dict[str, Any], force: bool) -> str:
    """Start or continue the run in ``out`` with ``settings``; return their id.

    A new or empty folder (the lock file of ``brgm_pyro.output_lock`` aside) gets ``run.json``. A folder of a
    run with the same settings is continued.
    Other settings, or a folder with other files and no run, are refused unless ``force``, which
    records the new settings (earlier records stay on disk, ignored, and outputs are redone).
    """
    settings = json.loads(json.dumps(settings, default=str))  # as it reads back: tuples become lists
    identity = settings_id(settings)
    run_file = out / RUN_FILE
    if run_file.exists():
        try:
            previous = json.loads(run_file.read_text())
            change = _first_difference(previous["settings"], settings)
        except (ValueError, KeyError, TypeError, RecursionError):
            raise InputError(
                f"{run_file} is not the record of a brgm data-set run; choose another output folder."
            ) from None
        if change is None:
            return identity
        if not force:
            raise InputError(
                f"The folder {out} holds a run with other settings ({change}); write to a new output folder, "
                "or pass --force to redo every image there with the new settings."
            )
    elif out.is_dir() and any(path.name != LOCK_NAME for path in out.iterdir()) and not force:
        raise InputError(
            f"The folder {out} is not empty and holds no brgm data-set run; choose a new or empty output "
            "folder, or pass --force to write there anyway."
        )
    io.ensure_output_dir(out / RECORDS_DIR)
    io.write_json(run_file, {"format": FORMAT, "settings_id": identity, "settings": settings})
    return identity


class RecordWriter:
    """Appends the records of one process in one attempt to its own file, each durable once written."""

    def __init__(self, out: Path, attempt: str, rank: int) -> None:
        self.path = out / RECORDS_DIR / f"{attempt}-rank{rank:05d}.jsonl"
        # O_EXCL: a file of records never has two writers, even if two processes got the same rank.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o666)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, default=str) + "\n"
        os.write(self._fd, line.encode())
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Manifest:
    """The merged view of a run folder.

    Attributes:
        settings, settings_id: those of ``run.json``.
        attempts: the attempt records of these settings, oldest first (each lists its images).
        images: image (relative path) -> its final record ("done" or "failed").
        duplicates: image -> number of "done" records, for images done more than once (none, in a
            consistent folder).
        torn_lines: lines left unfinished by a killed process (ignored).
    """

    settings: dict[str, Any]
    settings_id: str
    attempts: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    torn_lines: int = 0

    @property
    def planned(self) -> list[str]:
        """The images of the latest attempt (the folder's content when it started)."""
        return self.attempts[-1]["images"] if self.attempts else []

    def status(self, image: str) -> str:
        return self.images.get(image, {}).get("status", "pending")

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "failed": 0, "pending": 0}
        for image in dict.fromkeys([*self.planned, *self.images]):
            out[self.status(image)] += 1
        return out

    def problems(self, out: Path) -> list[str]:
        """What would make the folder inconsistent: images done twice, outputs of done images missing,
        temporary files left by a killed writer."""
        found = [f"{image} is recorded done {count} times" for image, count in sorted(self.duplicates.items())]
        for image, record in sorted(self.images.items()):
            if record["status"] == "done":
                missing = [name for name in record["outputs"].values() if not _is_file(out / name)]
                found += [f"{image}: output {name} is missing" for name in missing]
        found += [f"temporary file {p.relative_to(out)} was left behind" for p in io.stale_temporaries(out)]
        return found


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; False too for a path the system cannot look up (a name too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _is_output_name(name: Any) -> bool:
    """A file name inside the run's folder, as the runs write them (relative, without '..')."""
    return isinstance(name, str) and bool(name) and not Path(name).is_absolute() and ".." not in Path(name).parts


def _is_record(record: Any) -> bool:
    """Whether a line's JSON is a record as :class:`RecordWriter` writes them: an attempt (the images it
    planned, its number of processes) or an image's record (done, with its output files, or failed)."""
    if not isinstance(record, dict) or not isinstance(record.get("settings_id"), str):
        return False
    if record.get("type") == "attempt":
        images = record.get("images")
        return isinstance(images, list) and all(isinstance(i, str) for i in images) and type(record.get("world_size")) is int
    if record.get("type") != "image" or not isinstance(record.get("image"), str):
        return False
    if record.get("status") == "failed":
        return isinstance(record.get("reason", ""), str)
    outputs, metrics = record.get("outputs"), record.get("metrics", {})
    return (record.get("status") == "done" and isinstance(outputs, dict) and isinstance(metrics, dict)
            and all(_is_output_name(name) for name in outputs.values()))


def _read_lines(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of one file, and the number of lines that are not records (torn by a killed writer, or damaged)."""
    records, torn = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        try:
            record = io.parse_json(line, str(path), "") if line.endswith(b"\n") else None
        except InputError:
            record = None
        if _is_record(record):
            records.append(record)
        else:
            torn += 1
    return records, torn


def read_manifest(out: Path) -> Manifest:
    """Read and merge the manifest of the run in ``out`` (see the module docstring).

    A line that is not a record (see :func:`_is_record`) is counted in ``torn_lines`` and ignored, as a
    line torn by a killed writer is; a damaged ``run.json`` is refused with one sentence.
    """
    run_file = Path(out) / RUN_FILE
    if not run_file.is_file():
        raise InputError(f"{out} holds no brgm data-set run ({RUN_FILE} is missing); give the --out folder of a run.")
    run = io.read_json(run_file, "run record", "it is damaged: start the run again in a new output folder.")
    if not (isinstance(run, dict) and isinstance(run.get("settings"), dict) and isinstance(run.get("settings_id"), str)):
        raise InputError(f"{run_file} is not the record of a brgm data-set run; start the run again in a new output folder.")
    manifest = Manifest(settings=run["settings"], settings_id=run["settings_id"])
    done: dict[str, int] = {}
    # File names start with the attempt id, which sorts by start time, then the rank.
    for path in sorted((Path(out) / RECORDS_DIR).glob("*.jsonl")):
        records, torn = _read_lines(path)
        manifest.torn_lines += torn
        for record in records:
            if record["settings_id"] != manifest.settings_id:
                continue
            if record["type"] == "attempt":
                manifest.attempts.append(record)
            elif record["status"] == "done":
                done[record["image"]] = done.get(record["image"], 0) + 1
                manifest.images[record["image"]] = record
            elif manifest.status(record["image"]) != "done":
                manifest.images[record["image"]] = record
    manifest.duplicates = {image: count for image, count in done.items() if count > 1}
    return manifest
