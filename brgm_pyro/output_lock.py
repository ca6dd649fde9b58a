"""One run at a time per output folder: an OS file lock on ``OUT/.brgm-lock``, held while a run writes there.

    with claim_output(out, "sample"):           # refused with one sentence if another run holds OUT
        ...                                      # write into OUT

The lock is ``flock(2)`` on the file ``.brgm-lock`` in the folder. The kernel drops it when the
process that holds it ends, however it ends (``kill -9``, a crash), so a dead run never leaves the
folder locked: its lock file stays behind, meaning nothing, and the next run takes it. The last
process of a run to let go removes the file. ``flock`` works between the processes of one machine
and, on Linux, between machines on NFS (the client turns it into an NFS lock); on a shared file
system without locks it locks nothing across machines.

Every process of a run holds the lock *shared*, so that the ranks of a torchrun job can all hold it;
a new run *claims* the folder by taking it exclusively (which fails while any process of another run
holds it), then turns its hold into a shared one and lets its other ranks :func:`join_output`.
Turning a hold from one kind into the other is not atomic in Linux (it is released, then taken
again): a claimer that slips in between wins, and the first is refused. Either way at most one run
writes. A process that locked the file just as its holder removed it holds a file that is no longer
the folder's: it checks the name still leads to the file it locked, and starts again if not.

Claiming is also the first write into the folder: an output folder that cannot be created or
written (a read-only folder or file system, a path under ``/sys``) is refused here, with one
sentence, before any computation starts. :func:`check_writable` is the same check for the folder of
an output file.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import tempfile
from pathlib import Path
from types import TracebackType

from brgm_pyro.errors import InputError

__all__ = ["LOCK_NAME", "OutputInUseError", "OutputLock", "check_writable", "claim_output", "join_output"]

LOCK_NAME = ".brgm-lock"
# Attempts at locking a lock file that its holder removes each time (a few are plenty: each needs a
# whole run to start and end in between).
ATTEMPTS = 10


class OutputInUseError(InputError):
    """The output folder is held by another run that is still going."""


class OutputLock:
    """This process's shared hold on an output folder; released by :meth:`release` or at the end of a ``with``."""

    def __init__(self, folder: Path, fd: int) -> None:
        self.folder, self._fd = folder, fd

    def release(self) -> None:
        """Let go of the folder, removing the lock file if no other process holds it."""
        if self._fd < 0:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
        except OSError:  # another process of the run still holds it (or a claimer slipped in): it stays
            pass
        os.close(self._fd)  # closing the last descriptor of the open file drops the lock
        self._fd = -1

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def _unwritable(folder: Path, err: OSError, option: str) -> InputError:
    reason = err.strerror or type(err).__name__
    if isinstance(err, (FileExistsError, NotADirectoryError)) or err.errno in (errno.EEXIST, errno.ENOTDIR):
        reason = "a file stands in its path"
    return InputError(f"Cannot write into the output folder {folder} ({reason.lower()}); choose another {option}.")


def check_writable(folder: str | os.PathLike, option: str = "--out") -> None:
    """Create ``folder`` if needed and a file in it, then remove the file; one sentence naming ``option`` if
    that fails."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".brgm-write-check-"):
            pass
    except OSError as err:
        raise _unwritable(folder, err, option) from None


def _holder(fd: int) -> str:
    """The other run as the lock file names it ("sample, pid 12 on host, since ..."), or "another run"."""
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"{record['run']}, pid {record['pid']} on {record['host']}, since {record['started']}"
    except (OSError, ValueError, TypeError, KeyError):
        return "another run"


def _in_use(folder: Path, fd: int, option: str) -> OutputInUseError:
    return OutputInUseError(
        f"The output folder {folder} is in use by another run ({_holder(fd)}); wait for it to end or stop it, "
        f"or choose another {option}."
    )


def _lock(folder: Path, kind: int, create: bool, option: str) -> int:
    """A descriptor of the folder's lock file, locked with ``kind`` (``fcntl.LOCK_EX`` or ``LOCK_SH``)."""
    path = folder / LOCK_NAME
    for _ in range(ATTEMPTS):
        try:
            if create:
                folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o666)
        except OSError as err:
            raise _unwritable(folder, err, option) from None
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
        except BlockingIOError:
            error = _in_use(folder, fd, option)
            os.close(fd)
            raise error from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed this file as we locked it: lock the folder's new one
    raise OutputInUseError(f"The output folder {folder} keeps changing hands; try again, or choose another {option}.")


def claim_output(folder: str | os.PathLike, run: str, option: str = "--out") -> OutputLock:
    """Create ``folder`` if needed and take it for this run (``run`` names it to a refused one, e.g. "sample").

    Raises :class:`OutputInUseError` while another run holds the folder, and :class:`InputError` if the
    folder cannot be created or written; both name ``option``, the way the user chose the folder.
    """
    folder = Path(folder)
    fd = _lock(folder, fcntl.LOCK_EX, True, option)
    try:
        record = {
            "run": run,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError as err:
            raise _unwritable(folder, err, option) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released and taken again: see the module notes
        except BlockingIOError:
            raise _in_use(folder, fd, option) from None
    except BaseException:
        os.close(fd)
        raise
    return OutputLock(folder, fd)


def join_output(folder: str | os.PathLike) -> OutputLock:
    """Hold ``folder`` along with the run that claimed it (the other ranks of a torchrun job)."""
    folder = Path(folder)
    return OutputLock(folder, _lock(folder, fcntl.LOCK_SH, False, "--out"))
