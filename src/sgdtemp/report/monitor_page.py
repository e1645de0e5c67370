"""The training-time page of a monitor log: T, B_noise, lr·λ_max against its threshold, loss.

:func:`build_monitor_page` reads a JSONL log of :class:`sgdtemp.monitor.TemperatureMonitor`,
draws :mod:`sgdtemp.plotting.monitor`'s figures (written as PNG files too) and writes one
self-contained ``monitor.html`` in the report's style (the report's CSS and table/figure helpers)
and ``monitor.json`` with the last probe's verdicts.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgdtemp.files import atomic_write, write_json
from sgdtemp.monitor.records import MonitorLog, read_log
from sgdtemp.report._html import _CSS, Figure, _e, _figure, _num, _table, png_to_data_uri

__all__ = ["MonitorPage", "build_monitor_page", "MONITOR_FILES"]

MONITOR_FILES = ("monitor.html", "monitor.json")

_CAPTIONS = {
    "fig-temperature": "T = lr(1−τ)/(B(1−β)) at every logged step (the lr of each update, read "
    "from the optimizer's parameter groups), the lr dashed; dotted lines: steps where T jumped.",
    "fig-noise-scale": "Gradient noise scale B_noise = tr C/‖G‖² on the fixed probe with its "
    "95% (Fieller) interval; triangles: the signal was not resolved on the probe, B_noise is "
    "above the mark. Far above B_noise, more examples per step buy little (McCandlish et al.).",
    "fig-stability": "lr·λ_max of the probe loss (with weight decay) against the largest stable "
    "value; at and above it the sharpest direction oscillates (the edge of stability).",
    "fig-loss": "Minibatch training loss (when the loop passed it), the probe's loss and the "
    "noise floor (T/4) tr C: the stationary excess loss the noise keeps (theory §2.5).",
}


@dataclass(frozen=True)
class MonitorPage:
    """What :func:`build_monitor_page` wrote.

    Attributes:
        html: the page.
        summary_json: the summary.
        figures: PNG files written.
        records: step records read.
        probes: probe records read.
        summary: the summary's content.
    """

    html: Path
    summary_json: Path
    figures: list[Path]
    records: int
    probes: int
    summary: dict[str, Any]


def _summary(log: MonitorLog) -> dict[str, Any]:
    last = log.records[-1]
    probes = [p for p in log.probes if "probe_seconds" in p]
    probe = probes[-1] if probes else {}
    events = [{"step": r["step"], "event": e} for r in log.records for e in (r.get("events") or [])]
    return {
        "steps": last["step"],
        "records": len(log.records),
        "probes": len(log.probes),
        "skipped_lines": log.skipped,
        "temperature": last.get("temperature"),
        "temperature_note": last.get("temperature_note"),
        "lr": last.get("lr"),
        "batch_size": last.get("batch_size"),
        "sde_time": last.get("sde_time"),
        "last_probe": {
            k: probe.get(k)
            for k in (
                "step",
                "noise_scale",
                "noise_scale_stderr",
                "noise_scale_low",
                "noise_scale_high",
                "critical_batch",
                "lambda_max",
                "lr_lambda_max",
                "lambda_max_converged",
                "stability_threshold",
                "stability_ratio",
                "noise_floor",
                "noise_floor_stderr",
                "probe_loss",
            )
        },
        "events": events,
        "meta": log.meta,
    }


def _interval(p: Mapping[str, Any]) -> str:
    value, low, high = p.get("noise_scale"), p.get("noise_scale_low"), p.get("noise_scale_high")
    if value is None:
        return "unresolved" if low is None else f"above {_num(low)}"
    return f"{_num(value)} (95%: {_num(low)} to {_num(high) if high is not None else '∞'})"


def _verdict_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    p = summary["last_probe"]
    ratio = p.get("stability_ratio")
    stable = "–" if ratio is None else ("unstable" if ratio >= 1 else "stable")
    temp = summary.get("temperature")
    rows = [
        [
            "temperature T",
            _num(temp) if temp is not None else _e(summary.get("temperature_note") or "–"),
            f"lr {_num(summary.get('lr'))}, B {_num(summary.get('batch_size'))}",
        ],
        ["SDE time Σ lr(1−τ)/(1−β)", _num(summary.get("sde_time")), ""],
        [
            "noise scale B_noise",
            _e(_interval(p)),
            f"B against it: <b>{_e(p.get('critical_batch') or '–')}</b>",
        ],
        [
            "lr·λ_max / threshold",
            f"{_num(p.get('lr_lambda_max'))} / {_num(p.get('stability_threshold'))}"
            + ("" if p.get("lambda_max_converged", True) else " (not converged: at least)"),
            f"<b>{stable}</b>",
        ],
        [
            "noise floor (T/4) tr C",
            _num(p.get("noise_floor")),
            f"± {_num(p.get('noise_floor_stderr'))}; probe loss {_num(p.get('probe_loss'))}",
        ],
    ]
    return rows


def _render(log: MonitorLog, summary: Mapping[str, Any], figures: list[Figure], name: str) -> str:
    title = f"sgdtemp monitor: {name}"
    meta = " · ".join(
        _e(f"{k}: {v}") for k, v in log.meta.items() if v is not None and not isinstance(v, dict)
    )
    events = summary["events"]
    event_rows = [[str(e["step"]), _e(e["event"])] for e in events[:200]]
    more = f"<p class='small'>{len(events) - 200} more in the log.</p>" if len(events) > 200 else ""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f"<p class='meta'>{meta}</p>",
        f"<p>{summary['steps']} optimizer steps, {summary['records']} records, "
        f"{summary['probes']} probes"
        + (f", {summary['skipped_lines']} unreadable lines skipped" if log.skipped else "")
        + ".</p>",
        "<section id='now'><h2>At the last probe</h2>",
        _table(["quantity", "value", "verdict"], _verdict_rows(summary)),
        "</section><section id='figures'><h2>During training</h2>",
        *(_figure(f) for f in figures),
        "</section><section id='events'><h2>Events</h2>",
        _table(["step", "event"], event_rows) + more if events else "<p>None.</p>",
        "</section></body></html>",
    ]
    return "\n".join(parts)


def build_monitor_page(log_path: str | Path, out: str | Path) -> MonitorPage:
    """Read a monitor log, draw its figures and write ``monitor.html`` and ``monitor.json``.

    Args:
        log_path: the JSONL log.
        out: the output folder (must exist).

    Returns:
        What was written.

    Raises:
        UserError: for a missing or unreadable log, or one without records.
    """
    import matplotlib.pyplot as plt

    from sgdtemp.plotting.monitor import MONITOR_FIGURES

    log = read_log(log_path)
    out = Path(out)
    figures, files = [], []
    for anchor, (title, make) in MONITOR_FIGURES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # matplotlib layout notices on odd data
            fig = make(log)
        if fig is None:
            continue
        png = out / f"{anchor.removeprefix('fig-').replace('-', '_')}.png"
        fig.savefig(png, dpi=96)
        plt.close(fig)
        files.append(png)
        uri = png_to_data_uri(png.read_bytes())
        figures.append(Figure(anchor, title, uri, _CAPTIONS.get(anchor, "")))
    summary = _summary(log)
    html_path, json_path = out / MONITOR_FILES[0], out / MONITOR_FILES[1]
    atomic_write(html_path, _render(log, summary, figures, Path(log_path).name))
    write_json(json_path, summary)
    return MonitorPage(
        html=html_path,
        summary_json=json_path,
        figures=files,
        records=len(log.records),
        probes=len(log.probes),
        summary=dict(summary),
    )
