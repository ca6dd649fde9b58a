"""Execute the notebooks of notebooks/ top to bottom and store their outputs in them, so that they read without running.

    python scripts/execute_notebooks.py                 # every notebook, the embedded prior and the tuned defaults
    python scripts/execute_notebooks.py 01_map_reconstruction.ipynb --timeout 1800
    python scripts/execute_notebooks.py --fast --out DIR  # the tests' small settings, written to DIR instead

Each notebook runs in a fresh kernel (nbclient) in notebooks/, with one torch thread per process. What
is stored is kept stable from run to run, so that a re-execution changes only what the code changed:
no execution timestamps, no stderr (warnings and progress name absolute paths of this machine), and a
run that prints a timing, an absolute path or an object's memory address is refused, naming the cell,
rather than stored. Figures are PNGs at 72 dpi. The notebook's metadata records, under "brgm_pyro",
the settings it ran with and the SHA-256 of its code cells, which the tests compare with the cells as
they are (an edited cell means the stored outputs are stale: run this script again).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
FIGURE_DPI = 72
# What a stored output must not hold: timings (digits then s / seconds / it/s), absolute paths, memory addresses.
CHURN = {
    "a timing": re.compile(r"\d\s*(s|sec|seconds|it/s|s/it)\b"),
    "an absolute path": re.compile(r"(/work/|/tmp/|/home/|/root/|site-packages)"),
    "a memory address": re.compile(r"\b0x[0-9a-f]{6,}\b"),
}
# Run first in the kernel, and not stored: figures inline as small PNGs.
SETUP = (f"%config InlineBackend.figure_formats = ['png']\n"
         f"%config InlineBackend.rc = {{'figure.dpi': {FIGURE_DPI}, 'savefig.dpi': {FIGURE_DPI}}}")


def sources_digest(notebook: nbformat.NotebookNode) -> str:
    """The SHA-256 of the notebook's code cells, in order (what the stored outputs were computed from)."""
    digest = hashlib.sha256()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.encode() + b"\0")
    return digest.hexdigest()


def churn(notebook: nbformat.NotebookNode) -> list[str]:
    """Where the outputs hold something that changes from run to run: "cell N: a timing (...)"."""
    found = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")] + [str(v) for k, v in output.get("data", {}).items() if k.startswith("text/")]
            for what, pattern in CHURN.items():
                for text in texts:
                    if match := pattern.search(text):
                        found.append(f"cell {index}: {what} ({text[max(0, match.start() - 30) : match.end() + 10]!r})")
    return found


def execute(path: Path, fast: bool, timeout: int) -> nbformat.NotebookNode:
    """The notebook at ``path`` executed in a fresh kernel, its outputs made stable (module notes)."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.cells.insert(0, nbformat.v4.new_code_cell(SETUP))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BRGM_NOTEBOOK_FAST": "1" if fast else "0"}
    env.pop("MPLBACKEND", None)  # the inline backend, so that figures are stored
    if fast:
        env["BRGM_NOTEBOOK_STEPS"] = "3"
    else:
        env.pop("BRGM_NOTEBOOK_STEPS", None)
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    with _environment(env):
        client.execute()
    notebook.cells.pop(0)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.execution_count -= 1
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
            for output in cell.outputs:
                output.get("metadata", {}).pop("execution", None)
    notebook.metadata.pop("widgets", None)
    notebook.metadata["brgm_pyro"] = {
        "executed_by": "scripts/execute_notebooks.py",
        "settings": "fast" if fast else "full",
        "sources_sha256": sources_digest(notebook),
    }
    return notebook


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` set to ``env`` inside the block: the kernel that nbclient starts there inherits it."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="file names in notebooks/ (default: all)")
    parser.add_argument("--fast", action="store_true", help="the tests' settings: a tiny generator, a few steps")
    parser.add_argument("--out", type=Path, help="write the executed notebooks here (default: in place)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args(argv)
    names = args.notebooks or sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    missing = [n for n in names if not (NOTEBOOKS / n).is_file()]
    if missing:
        parser.error(f"no notebook {missing[0]} in {NOTEBOOKS}")
    out = args.out or NOTEBOOKS
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        started = time.perf_counter()
        notebook = execute(NOTEBOOKS / name, args.fast, args.timeout)
        problems = churn(notebook)
        if problems:
            print(f"{name}: not stored, its outputs would change from run to run: {'; '.join(problems[:3])}", file=sys.stderr)
            return 1
        nbformat.write(notebook, out / name)
        size = (out / name).stat().st_size
        print(f"{name}: executed ({'fast' if args.fast else 'full'} settings) in {time.perf_counter() - started:.0f} s, "
              f"{size / 1024:.0f} KiB written to {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
