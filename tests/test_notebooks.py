"""Notebooks run top to bottom (few steps), so the worked examples never rot, and each is stored with the outputs of
its current cells (scripts/execute_notebooks.py), so that it reads on a hosting site without running."""

import base64
from pathlib import Path

import nbformat
import pytest
from conftest import load_script
from nbclient import NotebookClient

import brgm_pyro as bp
from brgm_pyro.card import PriorCard

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
MAX_FIGURE_BYTES = 100_000


def _script():
    return load_script("scripts/execute_notebooks.py")


def _kinds(cell) -> list[str]:
    """What a code cell shows: "stream" for printed text, else the richest type of each display."""
    kinds = set()
    for output in cell.get("outputs", []):
        if output.output_type == "stream" and output.name == "stdout":
            kinds.add("stream")
        elif output.output_type in ("display_data", "execute_result"):
            kinds.add(next((t for t in ("image/png", "text/html") if t in output.data), "text/plain"))
    return sorted(kinds)


def stored_text(notebook) -> str:
    return "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)


def check_stored_copy(name: str, executed) -> nbformat.NotebookNode:
    """The notebook as stored: executed with the full settings from exactly its current code cells, top to bottom,
    showing in every cell what the same cells show when run now with small settings (``executed``), in small
    figures and with nothing that changes from run to run. Returns it."""
    stored = nbformat.read(NOTEBOOKS / name, as_version=4)
    script = _script()
    record = stored.metadata.get("brgm_pyro", {})
    assert record.get("settings") == "full", f"{name} has no stored outputs: run python scripts/execute_notebooks.py"
    assert record["sources_sha256"] == script.sources_digest(stored), (
        f"a cell of {name} changed after its outputs were stored: run python scripts/execute_notebooks.py {name}")
    code = [cell for cell in stored.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert script.churn(stored) == []
    ran = [cell for cell in executed.cells if cell.cell_type == "code"][-len(code):]
    assert [_kinds(cell) for cell in code] == [_kinds(cell) for cell in ran]
    figures = [o.data["image/png"] for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert figures and all(len(base64.b64decode(f)) < MAX_FIGURE_BYTES for f in figures)
    return stored


@pytest.mark.slow
def test_map_reconstruction_notebook_runs_and_its_stored_copy_is_current(monkeypatch):
    monkeypatch.setenv("BRGM_NOTEBOOK_STEPS", "3")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    path = NOTEBOOKS / "01_map_reconstruction.ipynb"
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    printed = stored_text(notebook)
    assert "data consistency" in printed and "3 MAP steps at lr 0.1 (set by BRGM_NOTEBOOK_STEPS)" in printed
    stored = check_stored_copy(path.name, notebook)
    steps = PriorCard.of(bp.load_generator("fashion-mnist-32")).schedule.steps
    assert f"{steps} MAP steps at lr 0.1 (the prior card's schedule)" in stored_text(stored)
    assert "data consistency" in stored_text(stored)
