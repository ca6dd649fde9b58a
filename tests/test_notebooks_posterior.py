"""Notebooks 02 and 03 run top to bottom with BRGM_NOTEBOOK_FAST=1 (tiny random generator, a few steps), and their
stored copies hold the outputs of their current cells (test_notebooks.check_stored_copy).

Both run in one kernel, its namespace reset before each, so that torch, Pyro and ArviZ are imported once.
"""

import os
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell
from test_notebooks import check_stored_copy, stored_text

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(scope="module")
def kernel():
    manager = KernelManager(kernel_name="python3")
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}  # inline figures, as stored
    manager.start_kernel(cwd=str(NOTEBOOKS), env={**env, "BRGM_NOTEBOOK_FAST": "1"})
    yield manager
    manager.shutdown_kernel(now=True)


def run_notebook(name: str, kernel: KernelManager) -> nbformat.NotebookNode:
    """Execute a notebook in memory (the stored file is left as it is) and return it with its outputs."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    notebook.cells.insert(0, new_code_cell("%reset -f"))
    NotebookClient(notebook, km=kernel, timeout=300).execute()
    return notebook


@pytest.mark.parametrize(
    "name, expected",
    [
        ("02_posterior_uncertainty.ipynb", ["super-resolution:", "inpainting:", "low rank:", "max R-hat"]),
        ("03_swap_priors.ipynb", ["learned-noise", "heavy-tail", "no-colinear", "sigma_pixel: posterior mean",
                                  "laplace: PSNR mean"]),
    ],
)
def test_posterior_notebooks_run_and_their_stored_copies_are_current(name, expected, kernel):
    executed = run_notebook(name, kernel)
    stored = check_stored_copy(name, executed)
    for text in expected:
        assert text in stored_text(executed), text
        assert text in stored_text(stored), text
