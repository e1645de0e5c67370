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
    return metrics


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
            config = {
                "synthetic": True,
                "lr": lr,
                "batch_size": b,
                "seed": s,
                "epochs": sweep.epochs,
                "n_train": sweep.n_train,
            }
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
