"""Build the report: read the store and the studies beside it, analyze, draw, write."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sgdtemp.analysis import Analysis, Claim, all_claims, analyze
from sgdtemp.errors import UserError
from sgdtemp.files import atomic_write, write_json
from sgdtemp.report._html import Figure, figure_to_data_uri, png_to_data_uri, render_html
from sgdtemp.storage import environment

__all__ = ["ReportResult", "build_report", "find_study", "read_summary", "REPORT_FILES"]

#: What the report writes into its folder.
REPORT_FILES = ("report.html", "analysis.json")

# Figures of the two-minima study (sgdtemp two-minima), in display order, with captions.
_TWO_MINIMA_FIGURES = {
    "landscape": "Train loss and the sampling/domain-shifted test losses; right axis: the "
    "per-example gradient variance C(θ) (the noise model).",
    "densities": "Stationary densities: SGD histograms, the SDE, the exact Fokker–Planck law "
    "and the Gibbs law in L.",
    "p_wide": "Probability of the wide basin vs T from SGD, the SDE (± one standard error; "
    "filled: equilibrated), the exact Fokker–Planck law and the Gibbs law in L. Cells whose "
    "predicted relaxation exceeds the step budget are not simulated. Grey crosses: SGD with "
    "the other minibatch sampling (by default reshuffled every epoch), shown, not judged.",
    "test_loss": "Expected test loss vs T: the decomposition of the exact Fokker–Planck law "
    "(theory §1.3), the law's expectation and SGD's measurement in equilibrated cells.",
    "iso_temperature": "Temperature invariance: SGD densities of the (lr, B) pairs of each T.",
}


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes:
        html: the report page.
        analysis_json: the analysis and the claims as JSON.
        claims: the claim table.
        figures: how many figures the page embeds.
        sweep: the sweep analyzed (None: no training runs).
    """

    html: Path
    analysis_json: Path
    claims: tuple[Claim, ...]
    figures: int
    sweep: str | None


def read_summary(path: Path | None) -> dict[str, Any] | None:
    """A study's ``summary.json`` (``path`` is the file or its folder), or None when absent.

    Raises:
        UserError: if the file exists but is not valid JSON.
    """
    if path is None:
        return None
    file = path / "summary.json" if path.is_dir() else path
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{file}: cannot read the study's summary ({err}); run it again") from err
    return data if isinstance(data, dict) else None


def find_study(explicit: Path | None, db: Path, name: str) -> Path | None:
    """The study folder: ``explicit`` if given (must exist), else ``DB_FOLDER/name`` if present.

    Raises:
        UserError: if ``explicit`` does not exist.
    """
    if explicit is not None:
        if not explicit.exists():
            raise UserError(f"{explicit}: no such folder or file; run the study first")
        return explicit
    candidate = db.parent / name
    return candidate if candidate.exists() else None


def _sweep_figures(analysis: Analysis) -> list[Figure]:
    from sgdtemp.plotting.report import SWEEP_FIGURES

    captions = {
        "fig-heatmap": "Seed-mean test loss at the last epoch per (η, B) cell (a fixed epoch: "
        "shown for orientation, not used by any verdict), the median η·λ_max of the trained "
        "models, and the iso-T lines. Red: cells left out of the scores (diverged, failed, or "
        "η·λ_max ≥ 2).",
        "fig-curves": "Each column one temperature; each curve one batch size (seed mean, band: "
        "range over seeds). Under temperature invariance the curves of a column coincide.",
        "fig-control": "Each column one learning rate; the batch size, hence T, changes along "
        "it, so the curves should differ.",
        "fig-invariance": "Collapse score κ of every line with its 95% CI (filled: collapses, "
        "open: differs). Iso-T lines near 1, control lines far above the dotted threshold.",
        "fig-test-vs-t": "Loss vs T at the comparison point of the verdicts (in a sweep trained "
        "until stationary: each stationary run's expectation E_p[L̃] over its window; else a "
        "train-loss plateau, or matched train loss), mean over seeds with 95% CI; crosses: the "
        "last epoch of the same runs, for reference only.",
        "fig-curvature": "Hessian trace and top eigenvalue of each trained model (grey) and "
        "their means over seeds (95% CI) vs T.",
        "fig-shift": "Test-minus-train gap at the trained weights split into the vertical "
        "shift L̃* − L*, the shift-curvature ½ sᵀH̃s and the remainder (means over runs).",
        "fig-mechanisms": "Per eval set, stacked seed means of the five terms of the expected "
        "eval objective of stationary runs (theory §1.7: vertical, shift-curvature ½ sᵀH̃s, "
        "cross sᵀH̃b, bias-curvature ½ bᵀH̃b, covariance-curvature ½ mean δᵀH̃δ; negative terms "
        "stack below 0), their sum (circles), and beside it the measured mean F̃(θ_j) − F(θ*) "
        "over the run's sampled iterates with its 95% interval (diamonds). Runs whose descents "
        "did not converge are left out (listed below the table).",
    }
    out = []
    for anchor, (title, make) in SWEEP_FIGURES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # matplotlib layout warnings on odd grids
            fig = make(analysis)
        if fig is not None:
            out.append(Figure(anchor, title, figure_to_data_uri(fig), captions.get(anchor, "")))
    return out


def _two_minima_figures(folder: Path | None) -> list[Figure]:
    """The study's PNG figures: the known ones in order with captions, then any others."""
    if folder is None or not folder.is_dir():
        return []
    known = [folder / f"{name}.png" for name in _TWO_MINIMA_FIGURES]
    others = sorted(p for p in folder.glob("*.png") if p not in known)
    out = []
    for png in [p for p in known if p.is_file()] + others:
        name = png.stem
        out.append(
            Figure(
                f"fig-two-minima-{name}",
                f"Two minima: {name.replace('_', ' ')}",
                png_to_data_uri(png.read_bytes()),
                _TWO_MINIMA_FIGURES.get(name, ""),
            )
        )
    return out


def _stationary_figures(summary: Mapping[str, Any] | None) -> list[Figure]:
    if not summary:
        return []
    from sgdtemp.plotting.report import plot_stationary_checks

    fig = plot_stationary_checks(summary)
    if fig is None:
        return []
    return [
        Figure(
            "fig-stationary-p-wide",
            "Stationary law: wide-basin probability vs T",
            figure_to_data_uri(fig),
            "2-D double well: the Fokker–Planck grid law with isotropic noise (equal to the "
            "Gibbs law), Laplace weights with their crossover temperature, and with "
            "curvature-shaped noise from data (where the Gibbs law in L fails).",
        )
    ]


def build_report(
    db: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    sweep: str | None = None,
    two_minima: str | os.PathLike[str] | None = None,
    stationary: str | os.PathLike[str] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
) -> ReportResult:
    """Analyze a store and write ``report.html`` and ``analysis.json`` into ``out``.

    Args:
        db: the results store (must exist).
        out: the output folder (created).
        sweep: the sweep to analyze (default: the one with the most finished runs).
        two_minima: the two-minima output folder (default: ``two_minima/`` beside the store,
            when present).
        stationary: the stationary-law checks folder or ``summary.json`` (default:
            ``stationary/`` beside the store, when present).
        extra_meta: facts listed under the environment (e.g. the profile and wall time).

    Returns:
        The :class:`ReportResult`.

    Raises:
        UserError: for a missing store, an unknown sweep, a missing study folder or an
            unreadable summary (before anything is written).
    """
    db_path, out_path = Path(db), Path(out)
    if not db_path.is_file():
        raise UserError(
            f"--db {db_path}: no such store; run `sgdtemp sweep` or `sgdtemp reproduce` first"
        )
    tm_dir = find_study(None if two_minima is None else Path(two_minima), db_path, "two_minima")
    st_dir = find_study(None if stationary is None else Path(stationary), db_path, "stationary")
    tm_summary = read_summary(tm_dir)
    st_summary = read_summary(st_dir)
    if out_path.exists() and not out_path.is_dir():
        raise UserError(f"--out {out_path} exists and is not a folder; choose another path")
    analysis = analyze(db_path, sweep=sweep)
    has_runs = bool(analysis.runs)
    claims = all_claims(
        analysis if has_runs else None, two_minima=tm_summary, stationary=st_summary
    )
    sweep_figs = _sweep_figures(analysis) if has_runs else []
    tm_figs = _two_minima_figures(tm_dir) if tm_summary is not None else []
    st_figs = _stationary_figures(st_summary)
    meta = {
        "store": str(db_path.resolve()),
        "sweep": analysis.sweep,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "two-minima study": str(tm_dir.resolve()) if tm_summary is not None and tm_dir else None,
        "stationary checks": str(st_dir.resolve()) if st_summary is not None and st_dir else None,
        **(extra_meta or {}),
    }
    page = render_html(
        claims=claims,
        analysis=analysis if has_runs else None,
        sweep_figures=sweep_figs,
        two_minima=tm_summary,
        two_minima_figures=tm_figs,
        stationary=st_summary,
        stationary_figures=st_figs,
        report_env=environment(),
        meta=meta,
    )
    out_path.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_path / REPORT_FILES[0], out_path / REPORT_FILES[1]
    summary = analysis.to_dict()
    payload = {
        "meta": meta,
        "runs_total": summary["runs_total"],
        "runs_stationary": summary["runs_stationary"],
        "decomposition": summary["decomposition"],
        "claims": [c.to_dict() for c in claims],
        "analysis": summary,
        "two_minima_checks": (tm_summary or {}).get("checks"),
        "stationary_checks": (st_summary or {}).get("checks"),
    }
    write_json(json_path, payload)
    atomic_write(html_path, page)
    return ReportResult(
        html=html_path,
        analysis_json=json_path,
        claims=tuple(claims),
        figures=len(sweep_figs) + len(tm_figs) + len(st_figs),
        sweep=analysis.sweep,
    )
