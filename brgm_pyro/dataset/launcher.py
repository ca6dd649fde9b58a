"""A process of a torchrun job ends when its launcher does: :func:`stop_with_launcher`, called first thing.

``torchrun`` starts each worker in a process group of its own (``setsid``), so a launcher that is killed (``kill -9``, the
out-of-memory killer) takes no worker with it: the workers run on, keep writing and keep their output
folder (``brgm_pyro.output_lock``), with nobody left to collect them. Linux's parent-death signal
(``prctl(PR_SET_PDEATHSIG, SIGTERM)``) asks the kernel to send SIGTERM to a worker when the thread that
started it ends, and torchrun starts its workers from its main thread: a worker ends with its launcher.
The output folder's lock goes with it, so a rerun is accepted at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["stop_with_launcher"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Set by torchrun's agent in the environment of the workers it starts.
TORCHRUN_VARIABLE = "TORCHELASTIC_RUN_ID"


def stop_with_launcher() -> bool:
    """In a worker started by torchrun on Linux, have the kernel end this process when its launcher ends;
    return whether it will (False elsewhere: a plain process, another launcher, another system)."""
    if not sys.platform.startswith("linux") or TORCHRUN_VARIABLE not in os.environ:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return False
    if os.getppid() == 1:  # the launcher ended before the call, and this process went to init: no signal comes
        os.kill(os.getpid(), signal.SIGTERM)
    return True
