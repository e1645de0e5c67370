"""``sgdtemp download``: fetch a data set's official files, verified by checksum."""

from __future__ import annotations

import argparse
from typing import Any

from sgdtemp.cli._common import emit_json, nonempty_path


def register(subparsers: Any) -> None:
    """Add ``download`` to the CLI."""
    parser = subparsers.add_parser(
        "download",
        help="download fashion-mnist, mnist or cifar10 into the cache (checksums verified)",
        description="Download a data set's official files into the cache folder ($SGDTEMP_DATA, "
        "else $XDG_CACHE_HOME/sgdtemp, else ~/.cache/sgdtemp), verifying size and SHA-256. "
        "Files already there are not fetched again; a failed transfer leaves nothing behind.",
    )
    parser.add_argument("name", help="fashion-mnist, mnist or cifar10")
    parser.add_argument("--root", type=nonempty_path, help="cache folder (default: see above)")
    parser.add_argument("--base-url", help="mirror URL prefix to use instead of the official ones")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Download and print where the files are."""
    from sgdtemp.data import download

    folder = download(args.name, root=args.root, base_url=args.base_url)
    if args.json:
        emit_json({"dataset": args.name, "folder": str(folder)})
    else:
        print(f"{args.name}: files verified in {folder}")
    return 0
