"""Memory handling of large tensors: freed blocks stay in the process for the next step (glibc).

glibc's malloc serves each block above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and unmaps it when it is freed. A generator at 256 px and batch 8 allocates and frees gigabytes
of activations per step, so every step the kernel maps, zeroes and faults in those pages again:
with glibc's defaults that was 70% of such a run's wall time, spent in the kernel (see
``benchmarks/speed.py --compare-malloc`` and docs/results/speed.md). With ``M_MMAP_MAX = 0`` large blocks
come from the heap and with ``M_TRIM_THRESHOLD = -1`` the heap is never shrunk, so the next step
reuses the same pages. The process keeps its peak memory until it exits, as PyTorch's GPU
caching allocator does.

:func:`keep_freed_memory` runs when ``brgm_pyro.stylegan2`` is imported. ``BRGM_MALLOC=system`` in
the environment keeps glibc's defaults; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["keep_freed_memory"]

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Keep freed heap memory for reuse instead of returning it to the OS; True if it was set."""
    if os.environ.get("BRGM_MALLOC") == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success.
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))
