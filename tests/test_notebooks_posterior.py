"""Notebooks 02 and 03 run top to bottom with BRGM_NOTEBOOK_FAST=1 (tiny random generator, a few steps).

Both run in one kernel, its namespace reset before each, so that torch, Pyro and ArviZ are imported once.
"""

import os
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(scope="module")
def kernel():
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(NOTEBOOKS), env={**os.environ, "BRGM_NOTEBOOK_FAST": "1", "MPLBACKEND": "Agg"})
    yield manager
    manager.shutdown_kernel(now=True)


def run_notebook(name: str, kernel: KernelManager) -> str:
    """Execute a notebook in memory (the file keeps no outputs) and return everything it printed."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "notebooks are committed without outputs"
    )
    notebook.cells.insert(0, new_code_cell("%reset -f"))
    NotebookClient(notebook, km=kernel, timeout=300).execute()
    return "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )


@pytest.mark.parametrize(
    "name, expected",
    [
        ("02_posterior_uncertainty.ipynb", ["super-resolution:", "inpainting:", "low rank:", "max R-hat"]),
        ("03_swap_priors.ipynb", ["learned-noise", "heavy-tail", "no-colinear", "sigma_pixel: posterior mean",
                                  "laplace: PSNR mean"]),
    ],
)
def test_posterior_notebooks_run(name, expected, kernel):
    printed = run_notebook(name, kernel)
    for text in expected:
        assert text in printed, text
