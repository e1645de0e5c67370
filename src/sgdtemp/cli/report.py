"""``sgdtemp report --db FILE --out DIR``: one self-contained HTML report of a results store.

Analyzes a sweep of the store (temperature invariance, test loss vs T per evaluation set,
curvature, the shift decomposition), adds the two-minima study and the stationary-law checks
found beside the store (or given by path), and writes ``report.html`` (figures embedded) and
``analysis.json`` with the claim table and its verdicts.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sgdtemp.cli._common import emit_json, ensure_out_dir, nonempty_path

__all__ = ["register", "run", "print_claims"]


def register(subparsers: Any) -> None:
    """Add the ``report`` parser."""
    parser = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report of a results store, with the claim table",
        description="Analyze a sweep of a results store and write DIR/report.html (figures "
        "embedded, no external resources) and DIR/analysis.json: temperature invariance along "
        "iso-T lines vs fixed-lr controls, test loss vs T per evaluation set (in a sweep "
        "trained until stationary: the runs' stationary expectations, non-stationary runs "
        "counted and left out; else at a train-loss plateau or matched train loss, never at a "
        "fixed epoch), curvature, the shift decomposition and the three curvature mechanisms "
        "vs T, the two-minima study, the stationary-law checks, the claims of the paper with "
        "their measured verdicts and where each was compared, and the environment.",
    )
    parser.add_argument(
        "--db", type=nonempty_path, required=True, metavar="FILE", help="results store"
    )
    parser.add_argument(
        "--out", type=nonempty_path, required=True, metavar="DIR", help="output folder"
    )
    parser.add_argument(
        "--sweep", metavar="NAME", help="sweep to analyze (default: the one with most runs)"
    )
    parser.add_argument(
        "--two-minima",
        type=Path,
        metavar="DIR",
        help="output folder of `sgdtemp two-minima` (default: two_minima/ beside the store)",
    )
    parser.add_argument(
        "--stationary",
        type=Path,
        metavar="PATH",
        help="stationary-law checks summary.json or its folder (default: stationary/ beside "
        "the store)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the report paths and the claims on stdout"
    )
    parser.set_defaults(handler=run)


def print_claims(claims: Any) -> None:
    """The claim table as fixed-width text: id, verdict, where it was compared, the claim."""
    width = max((len(c.verdict) for c in claims), default=10)
    at = max((len(c.compared_at or "–") for c in claims), default=1)
    for c in claims:
        print(f"{c.id:<5}{c.verdict:<{width + 2}}{c.compared_at or '–':<{at + 2}}{c.claim}")


def run(args: argparse.Namespace) -> int:
    """Check the inputs, analyze, draw and write the report."""
    from sgdtemp.errors import UserError
    from sgdtemp.report import build_report

    if not args.db.is_file():
        raise UserError(f"--db {args.db}: no such store; run `sgdtemp sweep` first")
    out = ensure_out_dir(args.out)
    result = build_report(
        args.db, out, sweep=args.sweep, two_minima=args.two_minima, stationary=args.stationary
    )
    if args.json:
        emit_json(
            {
                "report": str(result.html),
                "analysis": str(result.analysis_json),
                "sweep": result.sweep,
                "figures": result.figures,
                "claims": [c.to_dict() for c in result.claims],
            }
        )
        return 0
    print_claims(result.claims)
    print(f"\nwrote {result.html} ({result.figures} figures) and {result.analysis_json}")
    return 0
