"""``sgdtemp reproduce [--profile quick|full|smoke] --out DIR``: the paper end to end.

Runs the two-minima study, the stationary-law checks, the profile's Fashion-MNIST (``quick``) or
CIFAR-10 (``full``) sweep with curvature and shift per run, and writes the report. Rerunning the
same command resumes: finished runs are skipped and finished studies reused.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from sgdtemp.cli._common import emit_json, ensure_out_dir, nonempty_path, progress_enabled

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``reproduce`` parser."""
    from sgdtemp.experiments.reproduce import PROFILES

    profiles = "; ".join(f"{name}: {p.description}" for name, p in PROFILES.items())
    parser = subparsers.add_parser(
        "reproduce",
        help="run all of the paper's experiments at a profile's scale, then the report",
        description="Run the synthetic two-minima study, the stationary-law checks, an "
        "iso-temperature sweep of a real model (curvature and shift per run) and write "
        f"DIR/report.html. Profiles: {profiles}. Resumable: rerun the same command after an "
        "interruption.",
    )
    parser.add_argument(
        "--profile", choices=tuple(PROFILES), default="quick", help="scale (default: quick)"
    )
    parser.add_argument(
        "--out", type=nonempty_path, required=True, metavar="DIR", help="output folder"
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="parallel training runs (default: the CPUs)"
    )
    parser.add_argument(
        "--fuse",
        default="auto",
        metavar="K|auto|off",
        help="train up to K runs of one batch size together (default auto; off: one by one)",
    )
    parser.add_argument(
        "--data-root",
        metavar="PATH",
        help="folder with the data set's files (required by --profile full: CIFAR-10)",
    )
    parser.add_argument(
        "--device", metavar="DEV", help="training device: cpu, cuda, auto (default: the profile's)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the paths, stage times and claims on stdout"
    )
    parser.set_defaults(handler=run)


class _Bar:
    """A tqdm bar over the runs of the current sweep (stderr, terminals only)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, progress: Any) -> None:
        from tqdm import tqdm

        total = progress.total - progress.skipped
        if self.bar is None or self.bar.total != total:
            self.close()
            self.bar = tqdm(total=total, desc="runs", unit="run", file=sys.stderr)
        self.bar.update(progress.done - self.bar.n)
        self.bar.set_postfix(running=progress.running, failed=progress.failed, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run(args: argparse.Namespace) -> int:
    """Validate the inputs, then run every stage and write the report."""
    from sgdtemp.cli.report import print_claims
    from sgdtemp.errors import UserError
    from sgdtemp.experiments.reproduce import reproduce
    from sgdtemp.experiments.sweep import parse_fuse
    from sgdtemp.resources import require_device

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be a positive integer, got {args.workers}")
    fuse = parse_fuse(args.fuse)
    if args.data_root is not None and not Path(args.data_root).exists():
        raise UserError(f"--data-root {args.data_root}: no such folder")
    if args.device is not None:
        require_device(args.device)
    out = ensure_out_dir(args.out, keep_files=True)  # a failed rerun keeps the finished work
    verbose = not args.json
    started = time.perf_counter()

    def stage(label: str) -> None:
        if verbose:
            print(f"[{time.perf_counter() - started:7.1f} s] {label}", file=sys.stderr, flush=True)

    with contextlib.ExitStack() as stack:
        bar = (
            stack.enter_context(contextlib.closing(_Bar())) if progress_enabled(args.json) else None
        )
        result = reproduce(
            args.profile,
            out,
            workers=args.workers,
            data_root=args.data_root,
            device=args.device,
            stage=stage,
            progress=bar,
            fuse=fuse,
        )
    wall = time.perf_counter() - started
    counts = result.sweep.counts()
    if args.json:
        emit_json(
            {
                "profile": args.profile,
                "report": str(result.report),
                "db": str(result.db),
                "seconds": {**result.seconds, "total": wall},
                "sweep": counts,
                "reused": list(result.reused),
                "claims": [c.to_dict() for c in result.claims],
            }
        )
        return 0 if counts["failed"] == 0 else 1
    print()
    print_claims(result.claims)
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    reused = f"; reused: {', '.join(result.reused)}" if result.reused else ""
    print(
        f"\nsweep: {counts['ok']} ok, {counts['diverged']} diverged, {counts['failed']} failed, "
        f"{counts['unstable']} unstable, {counts['skipped']} already done{reused}"
    )
    print(f"wrote {result.report} in {wall:.0f} s ({stages})")
    return 0 if counts["failed"] == 0 else 1
