r"""A simulated sweep with known truth, written to a real store: for tests, demos and docs.

Each run's loss curves follow the SDE picture exactly unless told otherwise: the train loss
depends on $(\eta, B)$ only through the temperature, via the SDE time $t = eNT$,

$$L_{\rm train}(e) = f(T) + (L_0 - f(T))\,e^{-t/\tau},\qquad f(T) = f_0\,T/T_0,$$

and each evaluation set adds a gap that changes by ``-trend`` per doubling of $T$ (plus, for
corrupted sets, a domain part that changes by ``-domain_trend`` per doubling and grows with the
severity). Seeds add a shared offset (what one initialization does to every cell) and per-epoch
noise. ``break_invariance`` adds a batch-size term that makes iso-T lines differ. Curvature
falls as $T^{-\text{curvature\_power}}$; the shift decomposition has a shift-curvature term that
falls with $T$ like the gap. Runs are written through :class:`~sgdtemp.storage.Store` with the
record layout of :class:`sgdtemp.train.TrainResult` (plus ``curvature`` and ``shift``).

With ``stationary=True`` the runs are trained "until stationary" (a ``stop`` config and weight
decay): each records ``stationary`` (reached, except in the ``not_stationary`` cells),
stationary expectations whose gap changes by ``-stationary_trend`` per doubling of $T$ (so a
test can tell them from the epoch curves), and with ``mechanisms=True`` the decomposition of
theory.md §1.7 with the orders in $T$ of §1.6: a shift-curvature that falls with $T$, cross and
covariance-curvature $\propto T$, bias-curvature $\propto T^2$, and a measured side equal to
their sum times ``1 + decomposition_error``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sgdtemp.storage import NewRun, Store, run_key
from sgdtemp.theory.temperature import lr_for_temperature

__all__ = ["SyntheticSweep", "write_synthetic_sweep"]


@dataclass(frozen=True)
class SyntheticSweep:
    """The truth of a simulated sweep.

    Attributes:
        temperatures: iso-T lines.
        batch_sizes: batch sizes of every line.
        seeds: seeds per cell.
        epochs: epochs per run.
        n_train: training examples N.
        eval_sets: evaluation sets besides ``train``.
        tau: SDE time constant τ of the train loss.
        trend: decrease of every evaluation set's gap per doubling of T.
        domain_trend: extra decrease of the corrupted sets' gap per doubling of T.
        break_invariance: loss added per doubling of B (times the untrained fraction).
        curvature_power: trace and λ_max scale as T to minus this power.
        seed_noise: standard deviation of a seed's shared offset.
        epoch_noise: standard deviation of the per-epoch noise.
        diverge: cells ``(lr, batch_size)`` whose runs diverge at epoch 2.
        shift: whether to store a shift measurement per run.
        sweep: the sweep name.
        stationary: whether the runs were trained until stationary (``stop`` config).
        not_stationary: cells ``(lr, batch_size)`` whose runs did not become stationary.
        stationary_trend: decrease of every evaluation set's stationary expectation per
            doubling of T (default: ``trend``).
        weight_decay: λ of stationary runs.
        mechanisms: whether stationary runs record the decomposition (``mechanisms``).
        mechanism_seeds: the seeds whose decomposition is measured (None: all; others are
            recorded ``skipped``).
        covariance_curvature: the covariance-curvature at the smallest T (it grows ∝ T; the
            shift-curvature there is 0.04).
        decomposition_error: the measured side is the sum of the terms times 1 + this.
        not_converged: ``(lr, batch_size, name)``: runs whose descent did not converge, on the
            eval set ``name``, or on the train minimum for ``name == "train"``.
    """

    temperatures: Sequence[float] = (1 / 2048, 1 / 1024, 1 / 512, 1 / 256)
    batch_sizes: Sequence[int] = (16, 32, 64, 128)
    seeds: Sequence[int] = (0, 1, 2)
    epochs: int = 8
    n_train: int = 8000
    eval_sets: Sequence[str] = (
        "heldout",
        "test",
        "corrupt:gaussian_noise:2",
        "corrupt:gaussian_noise:5",
    )
    tau: float = 40.0
    trend: float = 0.02
    domain_trend: float = 0.01
    break_invariance: float = 0.0
    curvature_power: float = 0.5
    seed_noise: float = 0.01
    epoch_noise: float = 0.004
    diverge: Sequence[tuple[float, int]] = field(default_factory=tuple)
    shift: bool = True
    sweep: str = "synthetic"
    stationary: bool = False
    not_stationary: Sequence[tuple[float, int]] = field(default_factory=tuple)
    stationary_trend: float | None = None
    weight_decay: float = 0.01
    mechanisms: bool = False
    mechanism_seeds: Sequence[int] | None = None
    covariance_curvature: float = 0.01
    decomposition_error: float = 0.02
    not_converged: Sequence[tuple[float, int, str]] = field(default_factory=tuple)


def _gap(sweep: SyntheticSweep, name: str, temp: float) -> tuple[float, float]:
    """(sampling part, domain part) of an evaluation set's gap at temperature ``temp``."""
    doublings = math.log2(temp / min(sweep.temperatures))
    sampling = 0.12 - sweep.trend * doublings
    domain = 0.0
    if name.startswith("corrupt:"):
        severity = int(name.rsplit(":", 1)[1])
        domain = 0.05 * severity - sweep.domain_trend * doublings
    return sampling, domain


def _record(sweep: SyntheticSweep, lr: float, b: int, temp: float, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, b, int(round(1e6 * temp))])
    shared = np.random.default_rng([seed]).normal(0.0, sweep.seed_noise)
    e = np.arange(sweep.epochs + 1, dtype=np.float64)
    t = e * sweep.n_train * temp
    floor = 0.1 * temp / min(sweep.temperatures)
    untrained = np.exp(-t / sweep.tau)
    train = floor + (2.3 - floor) * untrained
    train = train + sweep.break_invariance * math.log2(b / min(sweep.batch_sizes)) * untrained
    train = train + (shared + rng.normal(0.0, sweep.epoch_noise, e.size)) * (e > 0)
    steps = sweep.n_train // b
    diverged = (float(f"{lr:.6g}"), b) in {(float(f"{a:.6g}"), c) for a, c in sweep.diverge}
    last = 2 if diverged else sweep.epochs
    epochs = []
    for i in range(last + 1):
        rec: dict[str, Any] = {
            "epoch": i,
            "step": i * steps,
            "train": {"loss": float(train[i]), "acc": float(1 - train[i] / 2.5)},
        }
        for name in sweep.eval_sets:
            samp, dom = _gap(sweep, name, temp)
            grow = 1.0 - untrained[i]
            value = float(train[i] + (samp + dom) * grow + rng.normal(0, sweep.epoch_noise))
            entry = {"loss": value, "acc": float(1 - value / 2.5)}
            prefix, sep, rest = name.partition(":")
            if sep:
                rec.setdefault(prefix, {})[rest] = entry
            else:
                rec[name] = entry
        epochs.append(rec)
    if diverged:
        epochs[-1]["train"]["loss"] = None
    metrics: dict[str, Any] = {
        "status": "diverged" if diverged else "ok",
        "reason": "loss is not finite at step 20" if diverged else None,
        "temperature": temp,
        "lr": lr,
        "batch_size": b,
        "momentum": 0.0,
        "seed": seed,
        "steps": last * steps,
        "epochs": epochs,
    }
    if diverged:
        return metrics
    scale = (temp / min(sweep.temperatures)) ** (-sweep.curvature_power)
    lam = float(12.0 * scale * math.exp(rng.normal(0, 0.05)))
    metrics["curvature"] = {
        "status": "ok",
        "trace": float(80.0 * scale * math.exp(rng.normal(0, 0.05))),
        "trace_stderr": 2.0,
        "top_eigenvalues": [lam],
        "lr_lambda_max": lr * lam,
    }
    if sweep.shift:
        shift = {}
        for name in sweep.eval_sets:
            samp, dom = _gap(sweep, name, temp)
            gap = samp + dom
            quad = 0.6 * gap * math.exp(rng.normal(0, 0.05))
            shift[name] = {
                "gap": gap,
                "vertical": 0.3 * gap,
                "shift_curvature": quad,
                "drop": quad * math.exp(rng.normal(0, 0.1)),
                "shift_norm": math.sqrt(abs(quad)),
            }
        metrics["shift"] = shift
    if sweep.stationary:
        metrics.update(_stationary_metrics(sweep, lr, b, temp, seed, rng))
    return metrics


def _cell_in(lr: float, b: int, cells: Sequence[tuple[Any, ...]]) -> bool:
    return (float(f"{lr:.6g}"), b) in {(float(f"{c[0]:.6g}"), c[1]) for c in cells}


#: The ``stop`` config of synthetic stationary runs (as a sweep spec's ``[stop]`` stores it).
_STOP = {
    "max_sde_time": 60.0,
    "probe_every": 0.25,
    "probe_examples": 1024,
    "window_fraction": 0.5,
    "reservoir": 8,
    "expectation_examples": 2000,
    "rule": {"window": 0.5, "batches": 16, "alpha": 0.05, "kappa": 0.1, "capacity": 128},
}


def _stationary_metrics(
    sweep: SyntheticSweep,
    lr: float,
    b: int,
    temp: float,
    seed: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """``weight_decay``, ``stationary``, expectations and mechanisms of a stationary run.

    The stationary train loss is 0.1 at every T, so the eval sets' expectations follow their
    gaps: ``-stationary_trend`` per doubling of T.
    """
    reached = not _cell_in(lr, b, sweep.not_stationary)
    t_run = sweep.epochs * sweep.n_train * temp
    out: dict[str, Any] = {
        "weight_decay": sweep.weight_decay,
        "stationary": {
            "reached": reached,
            "sde_time": 0.5 * t_run if reached else None,
            "epoch": 0.5 * sweep.epochs if reached else None,
            "max_sde_time": _STOP["max_sde_time"],
            "sde_time_run": t_run,
            "probe_every": _STOP["probe_every"],
            "probe_examples": _STOP["probe_examples"],
            "rule": {"reached": reached},
        },
    }
    if not reached:
        if sweep.mechanisms:
            out["mechanisms"] = {"status": "skipped", "reason": "the run did not become stationary"}
        return out
    trend = sweep.trend if sweep.stationary_trend is None else sweep.stationary_trend
    doublings = math.log2(temp / min(sweep.temperatures))
    floor = 0.1 + float(rng.normal(0, sweep.epoch_noise))
    expect = {"train": floor}
    for name in sweep.eval_sets:
        samp, dom = _gap(sweep, name, temp)
        samp += (sweep.trend - trend) * doublings  # the stationary trend replaces the epoch one
        expect[name] = float(floor + samp + dom + rng.normal(0, sweep.epoch_noise))
    out["stationary"]["window"] = {"start": 0.5 * t_run, "end": t_run, "probes": 64, "reservoir": 8}
    out["expectations"] = expect
    out["expectations_stderr"] = {k: 0.002 for k in expect}
    out["at_mean"] = {k: v - 0.001 for k, v in expect.items()}
    if sweep.mechanisms:
        if sweep.mechanism_seeds is not None and seed not in sweep.mechanism_seeds:
            out["mechanisms"] = {
                "status": "skipped",
                "reason": f"seed {seed} is not in measure.mechanisms.seeds",
            }
        else:
            out["mechanisms"] = _mechanisms(sweep, lr, b, doublings, expect, rng)
    return out


def _mechanisms(
    sweep: SyntheticSweep,
    lr: float,
    b: int,
    doublings: float,
    expect: dict[str, float],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """A ``mechanisms`` record with the orders in T of theory.md §1.6."""
    failed = {c[2] for c in sweep.not_converged if _cell_in(lr, b, [c])}
    evals = {}
    for name in sweep.eval_sets:
        samp, dom = _gap(sweep, name, min(sweep.temperatures))
        terms = {
            "vertical": 0.3 * (samp + dom),
            "shift_curvature": 0.04 * (1.0 - 0.1 * doublings) * math.exp(rng.normal(0, 0.02)),
            "cross": 0.002 * 2.0**doublings,
            "bias_curvature": 0.0005 * 4.0**doublings,
            "covariance_curvature": sweep.covariance_curvature * 2.0**doublings,
        }
        total = sum(terms.values())
        measured = total * (1.0 + sweep.decomposition_error) + rng.normal(0, 1e-4)
        ok = name not in failed
        evals[name] = {
            **terms,
            "covariance_curvature_se": 0.05 * terms["covariance_curvature"],
            "sampling_term": 0.0,
            "total": total,
            "sum": total,
            "measured": measured,
            "measured_se": 0.002,
            "remainder": measured - total,
            "eval_loss_mean": expect[name],
            "converged": ok,
            "message": "converged" if ok else "max_iters",
        }
    train_ok = "train" not in failed
    return {
        "status": "ok",
        "examples": 500,
        "weight_decay": sweep.weight_decay,
        "converged": train_ok,
        "all_converged": train_ok and all(e["converged"] for e in evals.values()),
        "message": "converged" if train_ok else "trust radius collapsed",
        "evals": evals,
    }


def write_synthetic_sweep(
    store: Store | str | os.PathLike[str], sweep: SyntheticSweep | None = None
) -> list[str]:
    """Write a simulated sweep into a store (real SQLite, through the store API).

    Args:
        store: an open store or its file.
        sweep: the truth (default :class:`SyntheticSweep()`).

    Returns:
        The run keys, in grid order (temperature, batch size, seed).

    Example:
        >>> import tempfile, pathlib
        >>> db = pathlib.Path(tempfile.mkdtemp()) / "runs.db"
        >>> keys = write_synthetic_sweep(db, SyntheticSweep(seeds=(0, 1), epochs=3))
        >>> with Store(db) as s:
        ...     len(keys), s.counts()["ok"]
        (32, 32)
    """
    sweep = sweep or SyntheticSweep()
    own = not isinstance(store, Store)
    db = Store(store) if not isinstance(store, Store) else store
    try:
        grid = [
            (lr_for_temperature(t, b), b, t, s)
            for t in sweep.temperatures
            for b in sweep.batch_sizes
            for s in sweep.seeds
        ]
        news = []
        for lr, b, t, s in grid:
            config: dict[str, Any] = {
                "synthetic": True,
                "lr": lr,
                "batch_size": b,
                "seed": s,
                "epochs": sweep.epochs,
                "n_train": sweep.n_train,
            }
            if sweep.stationary:
                config["stop"] = _STOP
                config["weight_decay"] = sweep.weight_decay
            news.append(
                NewRun(
                    run_key(config),
                    config,
                    dataset="synthetic",
                    model="synthetic",
                    lr=lr,
                    batch_size=b,
                    momentum=0.0,
                    temperature=t,
                    seed=s,
                )
            )
        db.register(sweep.sweep, news)
        env = {"python": "synthetic", "packages": {"sgdtemp": "synthetic"}, "device": "cpu"}
        for new, (lr, b, t, s) in zip(news, grid):
            claim = db.claim(new.key, max_attempts=1)
            if claim is None:
                continue
            metrics = _record(sweep, lr, b, t, s)
            db.start(new.key, claim.token, pid=os.getpid(), host="synthetic", environment=env)
            db.finish(new.key, claim.token, status=metrics["status"], metrics=metrics)
        return [n.key for n in news]
    finally:
        if own:
            db.close()
