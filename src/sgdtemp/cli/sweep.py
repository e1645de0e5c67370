"""`sgdtemp sweep SPEC.toml --db FILE`: run an η × B grid of training runs into a results store.

The spec (see :mod:`sgdtemp.experiments.spec`) is checked and the data loaded before any run
starts; an unreachable ``--address`` fails before any work too. Rerunning the same command skips
finished runs and finishes every other one, however often an earlier invocation was killed. Exit
code 0 when every run of the sweep finished (``ok``, ``diverged`` or ``unstable``), 1 when some
are recorded failed (by this invocation or an earlier one: the message says how many and how to
retry them), 2 for bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from sgdtemp.cli._common import emit_json, nonempty_path, progress_enabled

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``sweep`` parser."""
    parser = subparsers.add_parser(
        "sweep",
        help="run an lr x batch-size grid of training runs into a results store",
        description="Run the grid of a sweep spec (TOML) through a local process pool, a Ray "
        "cluster or a Dask cluster; every run is recorded once in the SQLite store --db, and a "
        "rerun skips finished runs.",
    )
    parser.add_argument("spec", type=Path, metavar="SPEC.toml", help="the sweep spec")
    parser.add_argument(
        "--db", type=nonempty_path, required=True, metavar="FILE", help="results store"
    )
    parser.add_argument(
        "--executor",
        choices=("local", "ray", "dask"),
        default="local",
        help="where runs execute (default: local process pool)",
    )
    parser.add_argument(
        "--address",
        metavar="ADDR",
        help="a running Ray (HOST:PORT) or Dask (tcp://HOST:PORT) cluster; default: start a "
        "local one for the duration of the command",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="parallel runs (default: the CPUs of this machine or of the cluster)",
    )
    parser.add_argument(
        "--fuse",
        default="auto",
        metavar="K|auto|off",
        help="train up to K runs of one batch size together in one worker (auto: a rule from "
        "the workers, the groups and the memory; off: one run per worker task)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        metavar="K",
        help="tries of a run whose worker died before it is recorded failed (default 3)",
    )
    parser.add_argument(
        "--retry-failed", action="store_true", help="run again the runs recorded failed"
    )
    parser.add_argument(
        "--driver-writes",
        action="store_true",
        help="workers send results back and this process writes them (for Ray/Dask workers on "
        "other machines: SQLite's WAL needs every writer on the store's machine)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"total", "ok", "diverged", "failed", "unstable", "skipped", '
        '"failed_earlier"} on stdout',
    )
    parser.set_defaults(handler=run)


class _Bar:
    """A tqdm bar over the runs to do, with running / failed counts (stderr, terminals only)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, progress: Any) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=progress.total - progress.skipped, desc="sweep", unit="run", file=sys.stderr
            )
        self.bar.update(progress.done - self.bar.n)
        self.bar.set_postfix(running=progress.running, failed=progress.failed, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    """Check the spec, the data and the cluster, then run the sweep."""
    from sgdtemp.errors import UserError
    from sgdtemp.executors import make_executor
    from sgdtemp.experiments.spec import load_spec
    from sgdtemp.experiments.sweep import (
        TRAIN_PRELOAD,
        execute,
        fuse_size,
        parse_fuse,
        prepare_spec,
        worker_count,
    )

    if args.max_attempts < 1:
        raise UserError(f"--max-attempts must be at least 1, got {args.max_attempts}")
    if args.address is not None and args.executor == "local":
        raise UserError("--address needs --executor ray or dask")
    fuse = parse_fuse(args.fuse)
    spec = load_spec(args.spec)
    db_path: Path = args.db
    with contextlib.ExitStack() as stack:
        executor: Any = args.executor  # a local pool starts once there is work for it
        if args.executor != "local":  # joins the cluster: an unreachable one fails here
            executor = stack.enter_context(
                make_executor(args.executor, address=args.address, workers=args.workers)
            )
        jobs = prepare_spec(spec, artifacts=db_path.parent / f"{db_path.stem}.artifacts")
        fuse_k = fuse_size(jobs, workers=worker_count(executor, args.workers), fuse=fuse)
        bar = (
            stack.enter_context(contextlib.closing(_Bar())) if progress_enabled(args.json) else None
        )
        summary = execute(
            jobs,
            store=db_path,
            sweep=spec.name,
            executor=executor,
            workers=args.workers,
            max_attempts=args.max_attempts,
            retry_failed=args.retry_failed,
            worker_writes=not args.driver_writes,
            spec=spec.to_dict(),
            progress=bar,
            preload=TRAIN_PRELOAD,
            fuse=fuse_k,
        )
    counts = summary.counts()
    if args.json:
        emit_json(counts)
    else:
        earlier = f" ({summary.failed_earlier} of them failed)" if summary.failed_earlier else ""
        print(
            f"sweep {spec.name}: {counts['ok']} ok, {counts['diverged']} diverged, "
            f"{counts['failed']} failed, {counts['unstable']} unstable, {counts['skipped']} "
            f"already done{earlier}, of {counts['total']} runs ({summary.seconds:.1f} s); "
            f"store {db_path}"
        )
    if summary.left_failed:
        earlier = f" ({summary.failed_earlier} by an earlier run)" if summary.failed_earlier else ""
        print(
            f"sgdtemp sweep: {summary.left_failed} of {summary.total} runs are recorded failed"
            f"{earlier}; see their error column (sgdtemp export --db {db_path}) and rerun this "
            "command with --retry-failed to run them again",
            file=sys.stderr,
        )
        return 1
    return 0
