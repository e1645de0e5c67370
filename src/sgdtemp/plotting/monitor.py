r"""Figures of a temperature-monitor log: T, the noise scale, stability and the loss against steps.

Each function takes a :class:`sgdtemp.monitor.MonitorLog` and returns a matplotlib ``Figure``,
or ``None`` when the log holds nothing to draw for it. Values the monitor could not trust are
drawn as such: unresolved noise scales as lower bounds, unconverged $\eta\lambda_{\max}$ as
lower bounds, undefined temperatures not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sgdtemp.monitor.records import MonitorLog  # noqa: E402

__all__ = [
    "plot_temperature",
    "plot_noise_scale",
    "plot_stability",
    "plot_loss",
    "MONITOR_FIGURES",
]

_SIZE = (7.0, 3.2)


def _axes() -> tuple[Figure, Any]:
    fig, ax = plt.subplots(figsize=_SIZE, layout="constrained")
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)
    return fig, ax


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def plot_temperature(log: MonitorLog) -> Figure | None:
    """T against steps (log scale), with the lr on a second axis and T's jumps marked."""
    steps, temps = log.series("temperature")
    temps_positive = [(s, t) for s, t in zip(steps, temps) if t > 0]
    if not temps_positive:
        return None
    fig, ax = _axes()
    ax.plot(
        *zip(*temps_positive), color="C0", drawstyle="steps-post", label="T = lr(1-τ) / (B(1-β))"
    )
    ax.set_yscale("log")
    ax.set_ylabel("temperature T", color="C0")
    lr_steps, lrs = log.series("lr")
    twin = ax.twinx()
    twin.plot(lr_steps, lrs, color="C7", lw=1, ls="--", drawstyle="steps-post", label="lr")
    twin.set_ylabel("learning rate", color="C7")
    jumps = [r["step"] for r in log.records if "temperature changed" in str(r.get("events", ""))]
    for i, step in enumerate(jumps):
        ax.axvline(step, color="C3", lw=0.8, ls=":", label="T jump" if i == 0 else None)
    handles = ax.get_legend_handles_labels()
    twin_handles = twin.get_legend_handles_labels()
    ax.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=8)
    return fig


def plot_noise_scale(log: MonitorLog) -> Figure | None:
    """B_noise with its 95 % interval, lower bounds where unresolved, and the batch size."""
    probes = [r for r in log.probes if _number(r.get("noise_scale_low"))]
    if not probes:
        return None
    fig, ax = _axes()
    resolved = [r for r in probes if _number(r.get("noise_scale"))]
    if resolved:
        steps = [r["step"] for r in resolved]
        values = [r["noise_scale"] for r in resolved]
        lows = [r["noise_scale"] - r["noise_scale_low"] for r in resolved]
        highs = [r["noise_scale_high"] - r["noise_scale"] for r in resolved]
        ax.errorbar(steps, values, yerr=[lows, highs], fmt="o", ms=4, color="C0", capsize=2,
                    label="B_noise (95% interval)")  # fmt: skip
    bounds = [r for r in probes if not _number(r.get("noise_scale"))]
    if bounds:
        ax.plot([r["step"] for r in bounds], [r["noise_scale_low"] for r in bounds], "^",
                color="C1", label="unresolved: B_noise above")  # fmt: skip
    b_steps, batch = log.series("batch_size")
    ax.step(b_steps, batch, where="post", color="C2", label="batch size B")
    ax.set_yscale("log")
    ax.set_ylabel("examples")
    ax.legend(fontsize=8)
    return fig


def plot_stability(log: MonitorLog) -> Figure | None:
    """lr·λ_max against the stability threshold (unconverged values are lower bounds)."""
    probes = [r for r in log.probes if _number(r.get("lr_lambda_max"))]
    if not probes:
        return None
    fig, ax = _axes()
    good = [r for r in probes if r.get("lambda_max_converged")]
    rough = [r for r in probes if not r.get("lambda_max_converged")]
    if good:
        ax.plot([r["step"] for r in good], [r["lr_lambda_max"] for r in good], "o-", ms=4,
                color="C0", label="lr·λ_max (probe)")  # fmt: skip
    if rough:
        ax.plot([r["step"] for r in rough], [r["lr_lambda_max"] for r in rough], "^",
                color="C1", label="not converged: at least")  # fmt: skip
    limits = [(r["step"], r["stability_threshold"]) for r in probes
              if _number(r.get("stability_threshold"))]  # fmt: skip
    if limits:
        ax.step(*zip(*limits), where="post", color="C3", ls="--",
                label="threshold 2(1+β)/(1-τ) (2 without momentum)")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.set_ylabel("lr · λ_max")
    ax.legend(fontsize=8)
    return fig


def plot_loss(log: MonitorLog) -> Figure | None:
    """Training loss (as passed), probe loss and the noise floor (T/4) tr C."""
    train = log.series("loss")
    probe = log.series("probe_loss", probes=True)
    floor = log.series("noise_floor", probes=True)
    if not (train[0] or probe[0]):
        return None
    fig, ax = _axes()
    if train[0]:
        ax.plot(*train, color="C7", lw=1, label="training loss (minibatch)")
    if probe[0]:
        ax.plot(*probe, "o-", ms=3, color="C0", label="probe loss")
    if floor[0]:
        ax.plot(*floor, "s--", ms=3, color="C3", label="noise floor (T/4) tr C")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    return fig


#: anchor -> (title, figure function), in page order
MONITOR_FIGURES: dict[str, tuple[str, Callable[[MonitorLog], Figure | None]]] = {
    "fig-temperature": ("Temperature", plot_temperature),
    "fig-noise-scale": ("Gradient noise scale against the batch size", plot_noise_scale),
    "fig-stability": ("Stability: lr·λ_max against its threshold", plot_stability),
    "fig-loss": ("Loss and noise floor", plot_loss),
}
