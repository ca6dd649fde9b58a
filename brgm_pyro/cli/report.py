"""``brgm report DIR``: the static HTML page of a ``brgm reconstruct-dataset`` run (``brgm_pyro.dataset.report``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the browsable HTML report of a reconstruct-dataset run",
        description="Writes DIR/report.html: the run's settings and a table of every image (input, "
        "reconstruction, f of it, std map with a posterior, metrics, seed), sortable by a click on a column "
        "header. The page needs no network; it links the run's own files, so keep it in DIR. Safe to run "
        "while the run goes on: it shows the images done so far.",
    )
    parser.add_argument("dir", type=Path, metavar="DIR", help="the --out folder of brgm reconstruct-dataset")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from brgm_pyro.dataset.report import write_report

    path = write_report(args.dir)
    print(f"brgm: wrote {path}")
    return 0
