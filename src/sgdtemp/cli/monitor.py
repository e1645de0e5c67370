"""``sgdtemp monitor LOG.jsonl --out DIR``: the training-time page of a temperature-monitor log."""

from __future__ import annotations

import argparse
from typing import Any

from sgdtemp.cli._common import check_out_dir, emit_json, ensure_out_dir, nonempty_path

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``monitor`` parser."""
    parser = subparsers.add_parser(
        "monitor",
        help="draw a temperature-monitor log: T, noise scale, stability, loss (HTML page)",
        description="Read a JSONL log written by sgdtemp.monitor.TemperatureMonitor (or its "
        "Lightning / transformers callbacks) and write DIR/monitor.html (self-contained, "
        "figures embedded), the figures as PNG files and DIR/monitor.json: the temperature at "
        "every step, the gradient noise scale with its 95%% interval against the batch size, "
        "lr*lambda_max against its stability threshold, the loss and the noise floor.",
    )
    parser.add_argument(
        "log", type=nonempty_path, metavar="LOG.jsonl", help="the monitor's JSONL log"
    )
    parser.add_argument(
        "--out", type=nonempty_path, required=True, metavar="DIR", help="output folder"
    )
    parser.add_argument("--json", action="store_true", help="print the summary on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Check the log, then draw and write the page."""
    from sgdtemp.monitor import read_log
    from sgdtemp.report.monitor_page import build_monitor_page

    read_log(args.log)  # a bad log is a one-line error before the output folder is made
    check_out_dir(args.out)
    out = ensure_out_dir(args.out)
    page = build_monitor_page(args.log, out)
    if args.json:
        emit_json({"html": page.html, "summary": page.summary_json, **page.summary})
        return 0
    probe = page.summary["last_probe"]
    temp = page.summary["temperature"]
    print(
        f"{page.summary['steps']} steps, {page.probes} probes; last T = "
        + (f"{temp:.4g}" if temp is not None else str(page.summary["temperature_note"]))
    )
    if probe.get("step") is not None:
        ns = probe.get("noise_scale")
        print(
            f"at step {probe['step']}: B_noise "
            + (f"{ns:.4g}" if ns is not None else "unresolved")
            + f" (batch {probe.get('critical_batch')}), lr*lambda_max / threshold = "
            + (
                f"{probe['stability_ratio']:.3g}"
                if probe.get("stability_ratio") is not None
                else "undefined"
            )
        )
    print(f"wrote {page.html} ({len(page.figures)} figures) and {page.summary_json}")
    return 0
