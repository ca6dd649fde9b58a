"""The static HTML report of a data-set run: ``write_report(out)`` writes ``OUT/report.html``.

One self-contained page that opens from disk with no network: the run's settings and counts, and a
table of every image (input, reconstruction, f of it, std map when a posterior was sampled, the
metrics and the seed), sortable by a click on any column header. Styles and the sorting script are
inline; the pictures are the run's own files, linked by relative paths, so the page keeps working
when the whole folder is moved or copied.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from brgm_pyro import io
from brgm_pyro.dataset.manifest import Manifest, read_manifest

__all__ = ["REPORT_NAME", "render_report", "write_report"]

REPORT_NAME = "report.html"
THUMBNAIL_PX = 96

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 4px 6px; text-align: left; vertical-align: middle; }
#images th { background: #f2f2f2; cursor: pointer; user-select: none; vertical-align: bottom; }
#images td:first-child, #images td.reason { max-width: 16em; overflow-wrap: anywhere; }
#images th[aria-sort=ascending]::after { content: " \\25B2"; }
#images th[aria-sort=descending]::after { content: " \\25BC"; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { image-rendering: pixelated; display: block; }
tr.failed { background: #fdecea; } tr.pending { color: #888; }
#settings td:first-child { font-family: monospace; }
#settings td { overflow-wrap: anywhere; }
"""

# Sorting by a header: numbers by value (empty cells last), text by its data-value; a second click reverses.
_SCRIPT = """
function sortBy(th) {
  const body = th.closest("table").tBodies[0], column = th.cellIndex;
  const numeric = th.dataset.type === "number";
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  th.parentNode.querySelectorAll("th").forEach(h => h.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const key = row => {
    const value = row.cells[column].dataset.value;
    return numeric ? (value === "" ? NaN : Number(value)) : value;
  };
  const sign = ascending ? 1 : -1;
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = key(a), y = key(b);
    if (!numeric) return sign * x.localeCompare(y);
    if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);
    return sign * (x - y);
  });
  rows.forEach(row => body.appendChild(row));
}
document.querySelectorAll("#images th").forEach(th => th.addEventListener("click", () => sortBy(th)));
"""


def _number(value: Any, digits: int) -> tuple[str, str]:
    """A number's cell text and sort value; empty for anything that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "", ""
    return f"{value:.{digits}f}", repr(value)


def _metric(path: tuple[str, ...], digits: int) -> Callable[[dict[str, Any]], tuple[str, str]]:
    def get(record: dict[str, Any]) -> tuple[str, str]:
        value: Any = record
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return _number(value, digits)

    return get


# Column title -> (cell text and sort value) of a record, for the numeric columns.
_METRICS: dict[str, Callable[[dict[str, Any]], tuple[str, str]]] = {
    "PSNR to y (dB)": _metric(("metrics", "psnr_y"), 2),
    "RMSE to y": _metric(("metrics", "rmse_y"), 4),
    "-log p (MAP)": _metric(("metrics", "losses", "total"), 2),
}
_POSTERIOR_METRICS = {
    "mean std": _metric(("metrics", "posterior", "mean_std"), 4),
    "max std": _metric(("metrics", "posterior", "max_std"), 4),
    "sigma_pixel": _metric(("metrics", "posterior", "sigma_pixel", "mean"), 4),
}
_PICTURES = {"input": "input y", "reconstruction": "reconstruction", "reconstruction_corrupted": "f(reconstruction)"}


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict) and tree:
        return [pair for key, value in tree.items() for pair in _flatten(value, f"{prefix}.{key}" if prefix else key)]
    return [(prefix, tree)]


def _picture(record: dict[str, Any], kind: str, title: str) -> str:
    name = record.get("outputs", {}).get(kind)
    if name is None:
        return "<td></td>"
    alt = html.escape(f"{title} of {record['image']}", quote=True)
    size = f'width="{THUMBNAIL_PX}" height="{THUMBNAIL_PX}"'
    return f'<td><img src="{html.escape(quote(name), quote=True)}" alt="{alt}" {size} loading="lazy"></td>'


def _row(image: str, record: dict[str, Any], posterior: bool) -> str:
    status = record.get("status", "pending")
    reason = record.get("reason", "")
    pictures = dict(_PICTURES, **({"std": "std map"} if posterior else {}))
    metrics = {**_METRICS, **(_POSTERIOR_METRICS if posterior else {})}
    cells = [f'<td data-value="{html.escape(image, quote=True)}">{html.escape(image)}</td>',
             f'<td data-value="{html.escape(status, quote=True)}">{html.escape(status)}</td>',
             f'<td class="reason" data-value="{html.escape(reason, quote=True)}">{html.escape(reason)}</td>']
    cells += [_picture(record, kind, title) for kind, title in pictures.items()]
    for get in metrics.values():
        text, value = get(record)
        cells.append(f'<td class="number" data-value="{value}">{text}</td>')
    seed = record.get("seed")
    seed = str(seed) if type(seed) is int else ""
    cells.append(f'<td class="number" data-value="{seed}">{seed}</td>')
    return f'<tr class="{html.escape(status, quote=True)}">{"".join(cells)}</tr>'


def render_report(manifest: Manifest, title: str) -> str:
    """The report's HTML for a merged manifest (``brgm_pyro.dataset.manifest.read_manifest``)."""
    posterior = manifest.settings.get("posterior") is not None
    images = list(dict.fromkeys([*manifest.planned, *sorted(manifest.images)]))
    headers = [("image", "text"), ("status", "text"), ("reason", "text")]
    headers += [(title_, "none") for title_ in _PICTURES.values()] + ([("std map", "none")] if posterior else [])
    headers += [(name, "number") for name in {**_METRICS, **(_POSTERIOR_METRICS if posterior else {})}]
    headers += [("seed", "number")]
    head = "".join(
        f'<th data-type="{kind}">{html.escape(name)}</th>' if kind != "none" else f"<th>{html.escape(name)}</th>"
        for name, kind in headers
    )
    rows = "\n".join(_row(image, manifest.images.get(image, {}), posterior) for image in images)
    counts = manifest.counts()
    attempts = manifest.attempts
    processes = ", ".join(str(a["world_size"]) for a in attempts)
    settings = "\n".join(
        f"<tr><td>{html.escape(key)}</td><td>{html.escape(json.dumps(value, default=str))}</td></tr>"
        for key, value in _flatten(manifest.settings)
    )
    summary = (
        f"{counts['done']} done, {counts['failed']} failed, {counts['pending']} pending; "
        f"{len(attempts)} attempt(s) with {processes or 'no'} process(es); settings id {manifest.settings_id}."
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p id="summary">{html.escape(summary)}</p>
<p>Click a column header to sort by it; click again to reverse. PSNR and RMSE compare f(reconstruction) with the
input y on its observed pixels. Each std map runs from 0 (black) to that image's max std (yellow).</p>
<table id="images">
<thead><tr>{head}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
<h2>Settings</h2>
<table id="settings">
{settings}
</table>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def write_report(out: str | Path) -> Path:
    """Write ``OUT/report.html`` for the run in ``out`` (atomically); return its path."""
    out = Path(out)
    manifest = read_manifest(out)
    page = render_report(manifest, f"brgm data-set run: {out.resolve().name}")
    return io.atomic_write_text(out / REPORT_NAME, page)
