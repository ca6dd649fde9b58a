"""Every path of this repository that the README, docs/ and the notebooks name exists: a reader who follows one
finds the file (a moved module leaves no dangling reference behind)."""

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOP = ("brgm_pyro", "models", "inference", "notebooks", "tests", "benchmarks", "scripts", "docs", "training-state",
       ".ci")
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(map(re.escape, TOP)) + r")/[\w./-]*[\w/])")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted((REPO / "notebooks").glob("*.ipynb")),
            *sorted((REPO / "brgm_pyro" / "priors").glob("*.md"))]


def _text(document: Path) -> str:
    if document.suffix != ".ipynb":
        return document.read_text()
    cells = json.loads(document.read_text())["cells"]
    return "\n".join("".join(cell["source"]) for cell in cells)


def _named_paths(document: Path) -> set[tuple[str, Path]]:
    text = _text(document)
    # a placeholder segment in capitals (brgm_pyro/priors/NAME.json) names a kind of file, not one
    found = {(name, REPO / name) for name in PATH.findall(text) if not re.search(r"/[A-Z_]+(\.|/|$)", name)}
    for target in LINK.findall(text):
        if "://" not in target and not target.startswith("mailto:"):
            found.add((target, (document.parent / target).resolve()))
    return found


@pytest.mark.parametrize("document", _documents(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_path_a_document_names_exists(document):
    missing = sorted(name for name, path in _named_paths(document) if not path.exists())
    assert not missing, f"{document.relative_to(REPO)} names paths that do not exist: {missing}"
