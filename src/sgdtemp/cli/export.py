"""`sgdtemp export --db FILE --format csv|parquet`: the stored runs as one flat table.

Columns: the run columns (key, sweep, status, dataset, model, lr, batch_size, momentum,
temperature, seed, attempts, times, host, error), every scalar metric flattened with dots
(``metric.final...``), and the config, metrics and environment as JSON text. CSV goes to stdout
without ``--out``; Parquet needs pyarrow (or pandas with a parquet engine) and ``--out``. The
store is opened read-only and never modified.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sgdtemp.cli._common import check_out_file, emit_json, nonempty_path

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``export`` parser."""
    parser = subparsers.add_parser(
        "export",
        help="export the runs of a results store as CSV or Parquet",
        description="Write the runs of a results store (sgdtemp sweep --db) as one flat table.",
    )
    parser.add_argument(
        "--db", type=nonempty_path, required=True, metavar="FILE", help="results store (read only)"
    )
    parser.add_argument(
        "--format", choices=("csv", "parquet"), default="csv", help="table format (default csv)"
    )
    parser.add_argument(
        "--out", type=nonempty_path, metavar="FILE", help="output file (default for CSV: stdout)"
    )
    parser.add_argument("--sweep", metavar="NAME", help="only this sweep's runs")
    parser.add_argument(
        "--json", action="store_true", help='print {"rows", "format", "out"} on stdout'
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Export the table."""
    from sgdtemp.errors import UserError
    from sgdtemp.storage import export_runs

    if args.out is None and (args.format != "csv" or args.json):
        raise UserError(
            f"--format {args.format} with --json needs --out FILE"
            if args.format == "csv"
            else f"--format {args.format} writes a file: give --out FILE.{args.format}"
        )
    if args.out is not None:
        check_out_file(args.out)
    if not args.db.is_file():
        raise UserError(f"--db {args.db}: no such store; run `sgdtemp sweep` to create it")
    out = args.out if args.out is not None else sys.stdout
    rows = export_runs(args.db, out, format=args.format, sweep=args.sweep)
    if args.json:
        emit_json({"rows": rows, "format": args.format, "out": str(args.out)})
    elif args.out is not None:
        print(f"wrote {rows} runs to {args.out}", file=sys.stderr)
    return 0
