"""The allocator setting: large freed blocks are reused by later allocations instead of faulted in again."""

import os
import platform
import subprocess
import sys

import pytest

# Page faults of the last three of twelve allocations of a 64 MiB tensor (above glibc's largest mmap
# threshold), each freed before the next. The first ones grow the heap: how many still fault their
# pages in depends on where the interpreter's earlier allocations fell (up to six of them were seen).
PAGES_TOUCHED = r"""
import resource, torch
import brgm_pyro.stylegan2  # noqa: F401  (applies the allocator setting)
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(2**24)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del x
print(sum(faults[9:]))
"""


def page_faults(environment: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", PAGES_TOUCHED], env={**os.environ, **environment},
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's mallopt")
def test_freed_large_blocks_are_reused_and_the_setting_can_be_switched_off():
    pages = 2**26 // 4096
    assert page_faults({}) < pages
    # glibc's default maps a fresh block for each allocation and faults in every page again.
    assert page_faults({"BRGM_MALLOC": "system"}) > 2.5 * pages
