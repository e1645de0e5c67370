r"""A simulation witness for the 2-D Fokker–Planck law: the reflected SDE against its basin masses.

The grid solver (:func:`~sgdtemp.theory.fokker_planck_2d.stationary_2d`) computes the stationary
law of $d\theta = -\nabla L\,dt + \sqrt{TC}\,dW$ in a box whose walls let no probability through,
which is the SDE reflected along the conormal $Dn$. The witness simulates exactly that process
(:func:`~sgdtemp.simulate.run_reflected_sde`, adaptive Euler–Maruyama steps) and estimates the
basin probabilities by **flux balance**: chains start from the solver's law; with $M_{jk}(t)$ the
fraction of the chains started in basin $j$ that are in basin $k$ at time $t$, a stationary law
$P$ satisfies $\sum_j P_jM_{jk}(t) = P_k$ at *every* $t$ when the starts within each basin follow
it (the mass leaving each basin is balanced by the mass coming in). So $P$ is the stationary
vector of $M(t)$, measured well before the basins have mixed: a law with wrong basin masses
but right shapes is caught at once, where the plain occupation of the basins would creep
towards the truth only at the slow inter-basin rate; wrong shapes relax within a basin long
before ``duration``. The estimate is averaged over the record times of the second half of the
run; its standard error comes from a bootstrap over the chains (which are independent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes._base import AbstractLandscape
from sgdtemp.simulate import run_reflected_sde
from sgdtemp.theory.fokker_planck_2d import Stationary2D, stationary_2d

__all__ = ["WitnessResult", "simulation_witness", "sample_law", "basin_labels"]

N_SE = 3.0  # agreement: |simulated - solver| <= N_SE standard errors (every basin)
BOOTSTRAP = 200  # bootstrap resamples of the chains for the standard error


@dataclass(frozen=True)
class WitnessResult:
    r"""The simulated basin probabilities against the solver's (:func:`simulation_witness`).

    Attributes:
        temperature: $T$.
        solver: the solver's basin probabilities (no-flux walls), ``(m,)``.
        solver_projected: the same with projecting walls (the normally reflected SDE), ``(m,)``.
        simulated: the flux-balance estimates from the simulation, ``(m,)``.
        stderr: their standard errors, ``(m,)``.
        occupation: the fraction of the chains in each basin at the end, ``(m,)``.
        agrees: every basin within ``N_SE`` standard errors of the solver.
        chains: chains simulated.
        duration: simulated time per chain.
        mean_steps: mean steps per chain.
        reflection: the walls of the simulation (``"conormal"``: the solver's process).
        box: ``(xmin, xmax, ymin, ymax)``.
    """

    temperature: float
    solver: tuple[float, ...]
    solver_projected: tuple[float, ...]
    simulated: tuple[float, ...]
    stderr: tuple[float, ...]
    occupation: tuple[float, ...]
    agrees: bool
    chains: int
    duration: float
    mean_steps: float
    reflection: str
    box: tuple[float, float, float, float]


def basin_labels(law: Stationary2D, points: np.ndarray) -> np.ndarray:
    """The basin label of the cell holding each of ``points`` ``(n, 2)`` (clamped to the box)."""
    g = law.grid
    i = np.clip(np.floor((points[:, 0] - g.xmin) / g.hx).astype(np.int64), 0, g.nx - 1)
    j = np.clip(np.floor((points[:, 1] - g.ymin) / g.hy).astype(np.int64), 0, g.ny - 1)
    return np.asarray(law.labels[i, j], dtype=np.int64)


def sample_law(law: Stationary2D, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` points from the grid law: a cell by its mass, then uniform in it, ``(n, 2)``."""
    g = law.grid
    w = np.clip(law.density, 0, None).ravel()
    cells = rng.choice(w.size, size=n, p=w / w.sum())
    i, j = np.divmod(cells, g.ny)
    jitter = rng.uniform(-0.5, 0.5, size=(n, 2)) * [g.hx, g.hy]
    return np.stack([g.x[i], g.y[j]], axis=-1) + jitter


def _balance(start: np.ndarray, end: np.ndarray, m: int) -> np.ndarray:
    """Stationary vector of the basin-to-basin fractions ``M[j, k]`` from labels ``(n,)``."""
    counts = np.zeros((m, m))
    np.add.at(counts, (start, end), 1.0)
    moved = counts / counts.sum(axis=1, keepdims=True)
    if m == 2:  # P_0 M_01 = P_1 M_10
        a, b = moved[0, 1], moved[1, 0]
        p0 = b / (a + b) if a + b > 0 else math.nan
        return np.array([p0, 1.0 - p0])
    system = np.vstack([(moved - np.eye(m)).T, np.ones(m)])
    rhs = np.zeros(m + 1)
    rhs[-1] = 1.0
    return np.asarray(np.linalg.lstsq(system, rhs, rcond=None)[0])


def simulation_witness(
    landscape: AbstractLandscape,
    temperature: float,
    *,
    grid: int = 100,
    chains: int = 6000,
    duration: float = 10.0,
    records: int = 8,
    max_dt: float = 2e-3,
    max_move: float = 0.04,
    reflection: str = "conormal",
    seed: int = 0,
    law: Stationary2D | None = None,
) -> WitnessResult:
    r"""Basin probabilities of the reflected SDE by flux balance, against the grid solver's.

    Args:
        landscape: a 2-D landscape with at least two basins.
        temperature: $T > 0$.
        grid: the solver's grid (:func:`stationary_2d`), when ``law`` is not given.
        chains: chains simulated, started from the solver's law.
        duration: simulated time per chain.
        records: record times, evenly spaced up to ``duration``; the second half are averaged.
        max_dt: longest step (:func:`~sgdtemp.simulate.run_reflected_sde`).
        max_move: typical distance a step may move.
        reflection: ``"conormal"`` (the solver's walls) or ``"normal"``.
        seed: seed of the starts, the simulation and the bootstrap.
        law: the solver's law, if already computed (its grid and box are used).

    Returns:
        The :class:`WitnessResult`.

    Raises:
        UserError: on invalid settings, or a law with a single basin or a basin that no chain
            starts in (use more chains).
    """
    require_positive("temperature", temperature)
    require_positive("chains", chains)
    require_positive("duration", duration)
    if records < 2:
        raise UserError(f"records must be at least 2, got {records}")
    st = law if law is not None else stationary_2d(landscape, temperature, grid=grid)
    m = len(st.basins)
    if m < 2:
        raise UserError("the law has a single basin: there is nothing to balance")
    rng = np.random.default_rng(seed)
    start = sample_law(st, rng, int(chains))
    first = basin_labels(st, start)
    if np.bincount(first, minlength=m).min() == 0:
        raise UserError("a basin holds none of the starting chains; use more chains")
    g = st.grid
    times = [duration * (k + 1) / records for k in range(records)]
    run = run_reflected_sde(
        landscape,
        torch.from_numpy(start),
        [(g.xmin, g.xmax), (g.ymin, g.ymax)],
        temperature=temperature,
        times=times,
        max_dt=max_dt,
        max_move=max_move,
        reflection=reflection,
        generator=torch.Generator().manual_seed(seed),
    )
    later = [r for r in range(1, len(run.times)) if float(run.times[r]) >= 0.5 * duration]
    labels = [basin_labels(st, run.thetas[r].numpy()) for r in later]

    def estimate(rows: np.ndarray) -> np.ndarray:
        return np.mean([_balance(first[rows], lab[rows], m) for lab in labels], axis=0)

    every = np.arange(int(chains))
    simulated = estimate(every)
    boot = np.array([estimate(rng.integers(0, int(chains), int(chains))) for _ in range(BOOTSTRAP)])
    stderr = boot.std(axis=0, ddof=1)
    solver = np.array([b.probability for b in st.basins])
    agrees = bool(np.all(np.abs(simulated - solver) <= N_SE * stderr))
    final = labels[-1]
    return WitnessResult(
        temperature=float(temperature),
        solver=tuple(float(v) for v in solver),
        solver_projected=tuple(float(b.probability_projected) for b in st.basins),
        simulated=tuple(float(v) for v in simulated),
        stderr=tuple(float(v) for v in stderr),
        occupation=tuple(float(np.mean(final == k)) for k in range(m)),
        agrees=agrees,
        chains=int(chains),
        duration=float(duration),
        mean_steps=float(run.steps.double().mean()),
        reflection=reflection,
        box=(g.xmin, g.xmax, g.ymin, g.ymax),
    )
