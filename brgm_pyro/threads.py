"""How many threads torch uses in a ``brgm`` command, and how they wait: every usable core, sleeping when idle.

Torch starts one thread per core, and OpenMP's threads spin while they wait for work. On a machine
where other jobs run, that spinning is what loses: two spinning threads on two cores ran the demo
5x slower than one thread beside another job, while the same two threads told to sleep when out of
work (``OMP_WAIT_POLICY=PASSIVE``) stayed within 0.90-1.06x of one thread's time on a loaded machine,
where spinning ones ranged from 0.76x to 2.79x of it (docs/results/threads.md, ``benchmarks/threads.py``). So every compute command of ``brgm``
runs :func:`choose` and :func:`using` before torch does any work, and the count is, first that applies:

1. ``--threads N``, else the environment variable ``BRGM_THREADS=N``: N threads;
2. ``OMP_NUM_THREADS`` when set (by the user, or by ``torchrun`` for each of several processes): as torch reads it;
3. every core this process may use: its CPU affinity, capped by a cgroup's CPU quota when there is one.

And ``OMP_WAIT_POLICY=PASSIVE`` unless ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set. OpenMP reads
it when torch is imported, so it takes effect in a process that has not imported torch yet (the
``brgm`` command imports torch after :func:`using` set it). Torch's inter-op threads are left alone:
no brgm computation starts them (a MAP and an SVI run leave the process with the same threads
whether their count is 1 or the default).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from brgm_pyro.errors import InputError

__all__ = ["ENV", "ThreadChoice", "choose", "usable_cores", "using"]

ENV = "BRGM_THREADS"


@dataclass(frozen=True)
class ThreadChoice:
    """The threads of a command and why: ``source`` is "--threads", ``ENV``, "OMP_NUM_THREADS" or "usable cores"."""

    threads: int
    source: str


def _cgroup_quota() -> float | None:
    """The CPUs a cgroup's quota allows (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None without a quota."""
    for quota_file, period_file in (("/sys/fs/cgroup/cpu.max", None),
                                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            fields = Path(quota_file).read_text().split()
            if period_file is not None:
                fields.append(Path(period_file).read_text().strip())
            quota, period = float(fields[0]), float(fields[1])
        except (OSError, ValueError, IndexError):  # no such file, or "max": no quota
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup's CPU quota (rounded up)."""
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_quota()
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


def _count(text: str, source: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{source} must be a positive number of threads, got {text!r}; e.g. {source}=1.")
    return value


def choose(requested: int | None = None, environ: Mapping[str, str] = os.environ) -> ThreadChoice:
    """The threads of a command (module notes); ``requested`` is its ``--threads``."""
    if requested is not None:
        return ThreadChoice(requested, "--threads")
    if environ.get(ENV):
        return ThreadChoice(_count(environ[ENV], ENV), ENV)
    if environ.get("OMP_NUM_THREADS"):
        return ThreadChoice(_count(environ["OMP_NUM_THREADS"].split(",")[0], "OMP_NUM_THREADS"), "OMP_NUM_THREADS")
    return ThreadChoice(usable_cores(), "usable cores")


@contextmanager
def using(choice: ThreadChoice) -> Iterator[ThreadChoice]:
    """Run the block with ``choice``'s threads; the thread count and the environment are restored after it."""
    passive = "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ
    if passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    import torch  # after the wait policy: OpenMP reads it when torch loads it

    previous = torch.get_num_threads()
    torch.set_num_threads(choice.threads)
    try:
        yield choice
    finally:
        torch.set_num_threads(previous)
        if passive:
            del os.environ["OMP_WAIT_POLICY"]
