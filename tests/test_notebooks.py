"""Notebooks run top to bottom (few steps), so the worked examples never rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.slow
def test_map_reconstruction_notebook_runs(monkeypatch):
    monkeypatch.setenv("BRGM_NOTEBOOK_STEPS", "3")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    path = NOTEBOOKS / "01_map_reconstruction.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "notebooks are committed without outputs"
    )
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    printed = "".join(
        out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs
    )
    assert "data consistency" in printed
