"""The project's own errors: bad input from the user, each with one sentence naming the problem and the fix.

Every check of a user's input (an image, an operator's argument, a setting, a file) raises one of
these, so that callers, the command line above all, can tell a user's mistake from a bug: ``brgm``
reports these as one line with exit code 2 and lets anything else surface as the bug it is.
They subclass the built-in exception a Python user would expect (``ValueError``, ``TypeError``,
``RuntimeError``), so ``except ValueError`` keeps working.

This module imports nothing of the project: every other module may import it.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "DatasetError", "InputError", "InputTypeError", "MissingWeightsError"]


class InputError(ValueError):
    """A value the user gave is wrong (shape, range, size, name, setting); the message says how to fix it."""


class InputTypeError(InputError, TypeError):
    """A value the user gave has the wrong type (a tensor expected, a module expected, ...)."""


class CheckpointError(InputError):
    """A checkpoint file that is missing, corrupt, unsafe or of an unsupported format."""


class DatasetError(InputError, RuntimeError):
    """A data set that is not installed, incomplete or corrupt, and cannot be downloaded."""


class MissingWeightsError(InputError, RuntimeError):
    """A network's pretrained weights are not on this machine and cannot be downloaded."""
