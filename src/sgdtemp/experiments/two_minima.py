r"""The synthetic two-minima study: SGD vs its SDE vs the exact Fokker–Planck law, in 1-D.

Per-example loss $\ell(\theta; x, \xi) = U(\theta - x) + \xi\theta$ with a two-component
Gaussian-mixture potential $U$ (:class:`~sgdtemp.landscapes.MixturePotential`). For each of two
noise models,

- ``isotropic``: the tilt $\xi$ dominates the per-example gradients, so the gradient noise is
  nearly constant and the classic crossover appears (the deep sharp minimum wins at low $T$, the
  wide one at high $T$);
- ``translation``: the translation $x$ dominates, so $C(\theta) \approx U''^2\,\mathrm{Var}(x)$ is
  largest in the sharp basin and the effective potential $\int L'/C$ departs from $L$ (the
  Gibbs-in-$L$ prediction fails measurably);

and for a grid of temperatures, each reached by two (lr, B) pairs, it measures the wide-basin
probability from real-minibatch SGD, from the SDE and from the exact stationary density, checks that
chains started in either basin agree (equilibration), and decomposes the test loss on a
sampling-shift and a domain-shift test set (theory.md §1.3).

Each temperature $T$ is reached by batch sizes $b$ and $2b$ with $b = \max(1,
\mathrm{round}(\eta_0 / T))$ for the configured learning-rate scale $\eta_0$, so that the simulated
SDE time per step ($\eta = TB$) stays comparable across the grid.

This module computes and returns results; the CLI decides what is written where.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes import MixturePotential, TwoMinimaLoss, sample_two_minima_data
from sgdtemp.simulate import Tabulated1D, Trajectory, run_sde, run_sgd
from sgdtemp.theory import (
    Stationary1D,
    basin_probability,
    decompose_test_loss,
    gibbs_density_1d,
    lr_for_temperature,
    mix_decompositions,
    stationary_density_1d,
    temperature,
    without_replacement_factor,
)

__all__ = [
    "NoiseModelConfig",
    "TwoMinimaConfig",
    "TwoMinimaResult",
    "load_config",
    "run_two_minima",
]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class NoiseModelConfig:
    r"""Data law of one noise model: $x \sim N(0, \tau^2)$, $\xi \sim N(0, \sigma^2)$.

    Attributes:
        translation_std: spread $\tau$ of the translations $x$.
        tilt_std: spread $\sigma$ of the tilts $\xi$.
        temperatures: the temperature grid $T = \eta/B$ for this noise model.
    """

    translation_std: float
    tilt_std: float
    temperatures: tuple[float, ...]


def _default_noise_models() -> dict[str, NoiseModelConfig]:
    return {
        # Tilt-dominated, near-constant noise C ~ tilt_std^2: the textbook crossover.
        "isotropic": NoiseModelConfig(
            translation_std=0.02,
            tilt_std=8.0,
            temperatures=(0.005, 0.01, 0.02, 0.04),
        ),
        # Translation-dominated noise C ~ U''^2 Var(x): largest in the sharp basin.
        # A small tilt keeps C > 0 at the barrier, where U'' = 0 would otherwise stop all crossings.
        "translation": NoiseModelConfig(
            translation_std=0.3,
            tilt_std=1.0,
            temperatures=(0.01, 0.02, 0.04, 0.08),
        ),
    }


@dataclass(frozen=True)
class TwoMinimaConfig:
    r"""Everything that defines a two-minima study (all defaults are the published defaults).

    Attributes:
        m: means of the two mixture components (minimum locations before translation).
        w: widths; the wide minimum is the component with the larger width.
        pi: mixture weights (sum to 1).
        noise_models: the noise models to run, by name.
        n_train: number of training pairs $(x_n, \xi_n)$.
        n_test: number of pairs in each test set.
        domain_shift: mean translation $\delta$ of the domain-shift test set.
        lr_scale: learning-rate scale $\eta_0$; each $T$ uses $B \in \{b, 2b\}$ with
            $b = \max(1, \mathrm{round}(\eta_0/T))$.
        n_chains: SGD / SDE chains per cell (half start in each basin).
        n_steps: steps per chain.
        record_every: keep every k-th iterate.
        burn_in: fraction of the run discarded before averaging.
        equilibration_tol: chains started in either basin must agree within this to count as
            equilibrated.
        grid_points: points of the Fokker–Planck grid.
        antithetic_tilts: draw the training tilts in $\pm$ pairs, so that their mean is exactly
            zero. The tilts still make real per-example gradient noise, but the train loss's
            depth gap is then the potential's own: an i.i.d. draw shifts it by
            $\bar\xi\,\Delta\theta \sim \sigma\Delta\theta/\sqrt N$, as large as the gap
            itself at the defaults, and would move the crossover with the seed. Test sets are
            always i.i.d., so sampling shift keeps its tilt component.
        seed: master seed (data and chains).
    """

    m: tuple[float, float] = (-1.0, 1.5)
    w: tuple[float, float] = (0.35, 1.2)
    pi: tuple[float, float] = (0.3, 0.7)
    noise_models: Mapping[str, NoiseModelConfig] = field(default_factory=_default_noise_models)
    n_train: int = 4096
    n_test: int = 4096
    domain_shift: float = 1.0
    lr_scale: float = 0.02
    n_chains: int = 2048
    n_steps: int = 20000
    record_every: int = 10
    burn_in: float = 0.5
    equilibration_tol: float = 0.03
    grid_points: int = 4001
    antithetic_tilts: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        """Validate every field; raises UserError naming the key."""
        for key in ("n_train", "n_test", "n_chains", "n_steps", "record_every", "grid_points"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{key} must be a positive integer, got {value!r}")
        if self.n_chains < 2 or self.n_chains % 2:
            raise UserError(
                f"n_chains must be even and >= 2 (half start in each basin), got {self.n_chains}"
            )
        require_positive("lr_scale", self.lr_scale)
        require_positive("equilibration_tol", self.equilibration_tol)
        if not 0.0 <= self.burn_in < 1.0:
            raise UserError(f"burn_in must lie in [0, 1), got {self.burn_in}")
        if self.n_steps * (1.0 - self.burn_in) < 2 * self.record_every:
            raise UserError("n_steps is too short: fewer than 2 records remain after burn_in")
        if not self.noise_models:
            raise UserError("noise_models is empty: give at least one of isotropic, translation")
        for name, nm in self.noise_models.items():
            if name not in ("isotropic", "translation"):
                raise UserError(f"unknown noise model {name!r}; use 'isotropic' or 'translation'")
            if nm.translation_std < 0 or nm.tilt_std < 0:
                raise UserError(f"noise_models.{name}: translation_std and tilt_std must be >= 0")
            if not nm.temperatures:
                raise UserError(f"noise_models.{name}.temperatures is empty")
            for t in nm.temperatures:
                require_positive(f"noise_models.{name}.temperatures", t)
        MixturePotential(m=self.m, w=self.w, pi=self.pi)  # validates m, w, pi

    def batch_sizes(self, temp: float) -> tuple[int, int]:
        """The iso-T pair of batch sizes used for temperature ``temp``.

        Example:
            >>> TwoMinimaConfig().batch_sizes(0.002)
            (10, 20)
        """
        b = max(1, round(self.lr_scale / temp))
        if 2 * b > self.n_train:
            raise UserError(
                f"temperature {temp} needs batch size {2 * b} > n_train={self.n_train}; "
                "raise the temperature or lower lr_scale"
            )
        return b, 2 * b

    @classmethod
    def quick(cls) -> TwoMinimaConfig:
        """A reduced study for a demonstration (about a minute on 2 cores)."""
        base = cls()
        return dataclasses.replace(
            base,
            n_chains=256,
            n_steps=8000,
            grid_points=2001,
        )


def load_config(path: Path, *, quick: bool = False) -> TwoMinimaConfig:
    """Read a TOML config; unknown keys and bad values raise UserError naming file and key.

    The file holds any of :class:`TwoMinimaConfig`'s fields at top level and one table per noise
    model under ``[noise_models.NAME]``; fields not given keep their defaults (quick or full).
    """
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise UserError(f"config file {path} does not exist") from err
    except OSError as err:
        raise UserError(f"config file {path} cannot be read ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"config file {path} is not valid TOML: {err}") from err
    base = TwoMinimaConfig.quick() if quick else TwoMinimaConfig()
    fields = {f.name for f in dataclasses.fields(TwoMinimaConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise UserError(
            f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "noise_models":
            kwargs[key] = _parse_noise_models(path, value, base.noise_models)
        elif key in ("m", "w", "pi"):
            if not (isinstance(value, list) and len(value) == 2):
                raise UserError(f"{path}: key {key!r} must be a list of two numbers")
            kwargs[key] = (float(value[0]), float(value[1]))
        else:
            expected = type(getattr(base, key))
            if expected is float and isinstance(value, int):
                value = float(value)
            if not isinstance(value, expected) or (
                isinstance(value, bool) and expected is not bool
            ):
                raise UserError(f"{path}: key {key!r} must be a {expected.__name__}, got {value!r}")
            kwargs[key] = value
    try:
        return dataclasses.replace(base, **kwargs)
    except UserError as err:
        raise UserError(f"{path}: {err}") from err


def _parse_noise_models(
    path: Path, raw: Any, defaults: Mapping[str, NoiseModelConfig]
) -> dict[str, NoiseModelConfig]:
    if not isinstance(raw, dict):
        raise UserError(f"{path}: noise_models must be a table of [noise_models.NAME] tables")
    out = {}
    keys = {f.name for f in dataclasses.fields(NoiseModelConfig)}
    for name, table in raw.items():
        if name not in ("isotropic", "translation"):
            raise UserError(f"{path}: unknown noise model {name!r}; use isotropic or translation")
        if not isinstance(table, dict):
            raise UserError(f"{path}: noise_models.{name} must be a table")
        bad = sorted(set(table) - keys)
        if bad:
            raise UserError(
                f"{path}: unknown key noise_models.{name}.{bad[0]}; valid: {sorted(keys)}"
            )
        base = defaults.get(name, _default_noise_models()[name])
        try:
            out[name] = NoiseModelConfig(
                translation_std=float(table.get("translation_std", base.translation_std)),
                tilt_std=float(table.get("tilt_std", base.tilt_std)),
                temperatures=tuple(float(t) for t in table.get("temperatures", base.temperatures)),
            )
        except (TypeError, ValueError) as err:
            raise UserError(f"{path}: noise_models.{name}: values must be numbers ({err})") from err
    return out


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwoMinimaResult:
    """Outcome of :func:`run_two_minima`.

    Attributes:
        summary: the JSON-ready summary (``summary.json`` contract: ``landscape``, ``cells``,
            ``noise_models``, ``checks``).
        arrays: named NumPy arrays for ``data.npz`` (train/test pairs, density grids, histograms).
    """

    summary: dict[str, Any]
    arrays: dict[str, np.ndarray]


@dataclass(frozen=True)
class _Basins:
    """Geometry of one data-defined landscape, in the order (left, right)."""

    minimizers: np.ndarray  # (2,)
    barrier: float
    wide: int  # index of the wide basin (0 = left, 1 = right)

    def wide_mask(self, theta: np.ndarray) -> np.ndarray:
        """True where theta lies on the wide minimum's side of the barrier."""
        return theta > self.barrier if self.wide == 1 else theta < self.barrier


def _t(x: np.ndarray | float) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(-1, 1)


def _eval(fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray | float) -> np.ndarray:
    return fn(_t(x)).reshape(-1).numpy()


def _basins(loss: TwoMinimaLoss, wide: int) -> _Basins:
    mins = loss.minimizers().reshape(-1).numpy()
    return _Basins(minimizers=mins, barrier=float(loss.barrier().reshape(-1)[0]), wide=wide)


def _test_minima(test: TwoMinimaLoss, basins: _Basins) -> np.ndarray:
    """Minimizers of a test loss, paired with the train minimizers (left, right)."""
    mins = test.minimizers().reshape(-1).numpy()
    if mins.shape[0] != 2:  # pragma: no cover - guarded by TwoMinimaLoss itself
        raise UserError("a test set destroyed one of the two minima; lower domain_shift")
    return mins


def _wide_fraction(
    traj: Trajectory, basins: _Basins, burn_in: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-chain fraction of recorded post-burn-in time in the wide basin, and the samples."""
    thetas = traj.thetas[..., 0].numpy()  # (R, chains)
    keep = thetas[int(round(burn_in * thetas.shape[0])) :]
    frac = basins.wide_mask(keep).mean(axis=0)  # (chains,)
    return frac, keep.reshape(-1)


def _sim_stats(frac: np.ndarray, starts_wide: np.ndarray, tol: float) -> dict[str, Any]:
    p_from_wide = float(frac[starts_wide].mean())
    p_from_sharp = float(frac[~starts_wide].mean())
    return {
        "p_wide": float(frac.mean()),
        "stderr": float(frac.std(ddof=1) / math.sqrt(frac.size)),
        "p_wide_from_wide_start": p_from_wide,
        "p_wide_from_sharp_start": p_from_sharp,
        "equilibrated": abs(p_from_wide - p_from_sharp) <= tol,
    }


@dataclass(frozen=True)
class _TestSet:
    """A test loss tabulated on the study grid, with its minimizers paired to the train ones."""

    loss_on_grid: np.ndarray  # (n_grid,)
    minimizers: np.ndarray  # (2,) left, right
    hessians: np.ndarray  # (2,) L~'' at its minimizers
    depths: np.ndarray  # (2,) L~ at its minimizers

    @classmethod
    def build(cls, test: TwoMinimaLoss, basins: _Basins, grid: np.ndarray) -> _TestSet:
        mins = _test_minima(test, basins)
        return cls(
            loss_on_grid=_eval(test.loss, grid),
            minimizers=mins,
            hessians=_eval(test.hessian, mins),
            depths=_eval(test.loss, mins),
        )


def _on_grid(values: np.ndarray, grid: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """A smooth function known on the fine study grid, at arbitrary points (linear interpolation).

    The expected losses below average over millions of SGD samples; evaluating the exact loss at
    each (N examples per point) would cost billions of evaluations, while the grid spacing keeps
    the interpolation error at h^2 |L''| / 8 (about 1e-5 on the default grid).
    """
    return np.interp(theta, grid, values)


def _decomposition(
    samples: np.ndarray,
    basins: _Basins,
    train_depths: np.ndarray,
    test: _TestSet,
    grid: np.ndarray,
) -> dict[str, Any]:
    """Test-loss decomposition per basin, mixed by the samples' basin probabilities."""
    in_right = samples > basins.barrier
    parts, probs = [], []
    per_basin = {}
    for k, mask in enumerate((~in_right, in_right)):
        label = "wide" if k == basins.wide else "sharp"
        prob = float(mask.mean())
        if mask.sum() < 2:
            per_basin[label] = {"probability": prob}
            continue
        theta_k = samples[mask]
        d = decompose_test_loss(
            train_min=float(basins.minimizers[k]),
            test_min=float(test.minimizers[k]),
            test_hessian=float(test.hessians[k]),
            mean=float(theta_k.mean()),
            cov=float(theta_k.var()),
            train_depth=float(train_depths[k]),
            test_depth=float(test.depths[k]),
        )
        measured = float(_on_grid(test.loss_on_grid, grid, theta_k).mean())
        per_basin[label] = {"probability": prob, **_decomp_dict(d), "measured_test_loss": measured}
        parts.append(d)
        probs.append(prob)
    mixed = mix_decompositions(parts, np.asarray(probs) / sum(probs)) if parts else None
    return {
        "per_basin": per_basin,
        "mixed": _decomp_dict(mixed) if mixed is not None else None,
        "measured_test_loss": float(_on_grid(test.loss_on_grid, grid, samples).mean()),
    }


def _decomp_dict(d: Any) -> dict[str, float]:
    keys = (
        "vertical",
        "shift_curvature",
        "cross",
        "bias_curvature",
        "covariance_curvature",
        "predicted_test_loss",
    )
    return {k: float(np.asarray(getattr(d, k)).reshape(-1)[0]) for k in keys}


def _fp(grid: np.ndarray, dl: np.ndarray, c: np.ndarray, temp: float) -> Stationary1D:
    return stationary_density_1d(grid, dl, c, temp)


def _p_wide(stat: Stationary1D, basins: _Basins, lo: float, hi: float) -> float:
    if basins.wide == 1:
        return float(basin_probability(stat, basins.barrier, hi))
    return float(basin_probability(stat, lo, basins.barrier))


def run_two_minima(config: TwoMinimaConfig, *, progress: Progress | None = None) -> TwoMinimaResult:
    """Run the two-minima study.

    Args:
        config: the study's parameters.
        progress: called with a short label after each finished cell (for a progress bar).

    Returns:
        The summary (see :class:`TwoMinimaResult`) and the arrays for ``data.npz``.
    """
    potential = MixturePotential(m=config.m, w=config.w, pi=config.pi)
    cells: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    models: dict[str, Any] = {}
    for model_index, (name, nm) in enumerate(config.noise_models.items()):
        gen = torch.Generator().manual_seed(config.seed * 1000 + model_index)

        def draw(
            n: int, shift: float, nm: NoiseModelConfig = nm, gen: torch.Generator = gen
        ) -> tuple[torch.Tensor, ...]:
            return sample_two_minima_data(
                n,
                translation_std=nm.translation_std,
                tilt_std=nm.tilt_std,
                shift=shift,
                generator=gen,
            )

        x, xi = draw(config.n_train, 0.0)
        if config.antithetic_tilts:
            half = xi[: config.n_train // 2]
            xi = torch.cat([half, -half, xi[2 * half.numel() :] * 0.0])
        xt, xit = draw(config.n_test, 0.0)
        xd, xid = draw(config.n_test, config.domain_shift)
        train = TwoMinimaLoss(potential, x, xi)
        test_losses = {
            "sampling": TwoMinimaLoss(potential, xt, xit),
            "domain": TwoMinimaLoss(potential, xd, xid),
        }
        wide = int(train.wide)
        basins = _basins(train, wide)
        sharp_min = float(basins.minimizers[1 - wide])
        wide_min = float(basins.minimizers[wide])
        lo = float(min(config.m) - 5 * max(config.w) - 3 * abs(config.domain_shift))
        hi = float(max(config.m) + 5 * max(config.w) + 3 * abs(config.domain_shift))
        grid = np.linspace(lo, hi, config.grid_points)
        tests = {k: _TestSet.build(v, basins, grid) for k, v in test_losses.items()}
        loss_g = _eval(train.loss, grid)
        dl_g = _eval(train.grad, grid)
        c_g = _eval(train.noise_cov, grid)
        h_min = _eval(train.hessian, basins.minimizers)
        c_min = _eval(train.noise_cov, basins.minimizers)
        gibbs_noise = float(c_min.mean())
        train_depths = _eval(train.loss, basins.minimizers)
        table = Tabulated1D.from_landscape(train, lo, hi, config.grid_points)
        arrays.update(
            {
                f"{name}_train_x": x.numpy(),
                f"{name}_train_xi": xi.numpy(),
                f"{name}_test_x": xt.numpy(),
                f"{name}_test_xi": xit.numpy(),
                f"{name}_domain_x": xd.numpy(),
                f"{name}_domain_xi": xid.numpy(),
                f"{name}_grid": grid,
                f"{name}_train_loss": loss_g,
                f"{name}_train_grad": dl_g,
                f"{name}_noise_var": c_g,
                f"{name}_sampling_test_loss": tests["sampling"].loss_on_grid,
                f"{name}_domain_test_loss": tests["domain"].loss_on_grid,
            }
        )
        models[name] = {
            "translation_std": nm.translation_std,
            "tilt_std": nm.tilt_std,
            "minimizers": basins.minimizers.tolist(),
            "barrier": basins.barrier,
            "wide_minimum": wide_min,
            "sharp_minimum": sharp_min,
            "depths": train_depths.tolist(),
            "curvatures": h_min.tolist(),
            "noise_var_at_minima": c_min.tolist(),
            "gibbs_noise_var": gibbs_noise,
            "test_minimizers": {k: v.minimizers.tolist() for k, v in tests.items()},
            "test_depths": {k: v.depths.tolist() for k, v in tests.items()},
            "test_curvatures": {k: v.hessians.tolist() for k, v in tests.items()},
        }
        edges = np.linspace(lo, hi, 241)
        for t_index, temp in enumerate(nm.temperatures):
            gibbs = gibbs_density_1d(grid, loss_g, temp, gibbs_noise)
            arrays[f"{name}_T{t_index}_gibbs_density"] = gibbs.density
            for batch_size in config.batch_sizes(temp):
                lr = lr_for_temperature(temp, batch_size)
                cell = _run_cell(
                    config,
                    name=name,
                    temp=temp,
                    lr=lr,
                    batch_size=batch_size,
                    train=train,
                    train_depths=train_depths,
                    loss_g=loss_g,
                    table=table,
                    tests=tests,
                    basins=basins,
                    grid=grid,
                    dl_g=dl_g,
                    c_g=c_g,
                    gibbs=gibbs,
                    h_max=float(h_min.max()),
                    edges=edges,
                    arrays=arrays,
                    key=f"{name}_T{t_index}_B{batch_size}",
                    seed=config.seed * 1_000_003 + model_index * 7919 + t_index * 131 + batch_size,
                )
                cells.append(cell)
                if progress is not None:
                    progress(f"{name} T={temp:g} B={batch_size}")
        arrays[f"{name}_hist_edges"] = edges
    summary = {
        "landscape": {
            "family": "two-minima",
            "m": list(config.m),
            "w": list(config.w),
            "pi": list(config.pi),
            "wide_component": int(potential.wide),
            "n_train": config.n_train,
            "n_test": config.n_test,
            "domain_shift": config.domain_shift,
        },
        "config": _config_dict(config),
        "noise_models": models,
        "cells": cells,
    }
    summary["iso_temperature"] = _iso_temperature(cells)
    summary["checks"] = _checks(summary, config)
    return TwoMinimaResult(summary=summary, arrays=arrays)


def _config_dict(config: TwoMinimaConfig) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    out["noise_models"] = {k: dataclasses.asdict(v) for k, v in config.noise_models.items()}
    return out


def _run_cell(
    config: TwoMinimaConfig,
    *,
    name: str,
    temp: float,
    lr: float,
    batch_size: int,
    train: TwoMinimaLoss,
    train_depths: np.ndarray,
    loss_g: np.ndarray,
    table: Tabulated1D,
    tests: dict[str, _TestSet],
    basins: _Basins,
    grid: np.ndarray,
    dl_g: np.ndarray,
    c_g: np.ndarray,
    gibbs: Stationary1D,
    h_max: float,
    edges: np.ndarray,
    arrays: dict[str, np.ndarray],
    key: str,
    seed: int,
) -> dict[str, Any]:
    """One (noise model, T, B) cell: SGD, SDE, Fokker–Planck and the test-loss decomposition."""
    # Sampling without replacement scales the minibatch noise by (N - B)/(N - 1); the SDE and
    # the Fokker–Planck law use that effective temperature so all three describe the same SGD.
    t_eff = temp * without_replacement_factor(config.n_train, batch_size)
    stat = _fp(grid, dl_g, c_g, t_eff)
    lo, hi = float(grid[0]), float(grid[-1])
    half = config.n_chains // 2
    starts_wide = np.arange(config.n_chains) < half
    theta0 = np.where(
        starts_wide, basins.minimizers[basins.wide], basins.minimizers[1 - basins.wide]
    )
    theta0_t = torch.as_tensor(theta0, dtype=torch.float64).reshape(-1, 1)
    sgd = run_sgd(
        train,
        theta0_t,
        lr=lr,
        batch_size=batch_size,
        n_steps=config.n_steps,
        record_every=config.record_every,
        generator=torch.Generator().manual_seed(seed),
    )
    sde = run_sde(
        table,
        theta0_t,
        temperature=t_eff,
        dt=lr,
        n_steps=config.n_steps,
        record_every=config.record_every,
        generator=torch.Generator().manual_seed(seed + 1),
    )
    frac_sgd, samples = _wide_fraction(sgd, basins, config.burn_in)
    frac_sde, samples_sde = _wide_fraction(sde, basins, config.burn_in)
    stats_sgd = _sim_stats(frac_sgd, starts_wide, config.equilibration_tol)
    stats_sde = _sim_stats(frac_sde, starts_wide, config.equilibration_tol)
    p_fp = _p_wide(stat, basins, lo, hi)
    p_gibbs = _p_wide(gibbs, basins, lo, hi)
    lr_sharpness = lr * h_max
    arrays[f"{key}_fp_density"] = stat.density
    arrays[f"{key}_effective_potential"] = stat.effective_potential
    arrays[f"{key}_sgd_hist"] = np.histogram(samples, bins=edges, density=True)[0]
    arrays[f"{key}_sde_hist"] = np.histogram(samples_sde, bins=edges, density=True)[0]
    test_loss = {k: float(_on_grid(v.loss_on_grid, grid, samples).mean()) for k, v in tests.items()}
    test_loss_fp = {
        k: float(np.trapezoid(stat.density * v.loss_on_grid, grid)) for k, v in tests.items()
    }
    comparable = stats_sgd["equilibrated"] and stats_sde["equilibrated"] and lr_sharpness <= 0.3
    return {
        "noise": name,
        "T": temp,
        "T_from_lr_and_batch": temperature(lr, batch_size),
        "T_effective": t_eff,
        "lr": lr,
        "batch_size": batch_size,
        "p_wide_sgd": stats_sgd["p_wide"],
        "p_wide_sde": stats_sde["p_wide"],
        "p_wide_fp": p_fp,
        "p_wide_gibbs": p_gibbs,
        "equilibrated": bool(stats_sgd["equilibrated"]),
        "sgd": stats_sgd,
        "sde": stats_sde,
        "lr_sharpness": lr_sharpness,
        "train_loss": float(_on_grid(loss_g, grid, samples).mean()),
        "train_loss_fp": float(np.trapezoid(stat.density * loss_g, grid)),
        "test_loss": test_loss,
        "test_loss_fp": test_loss_fp,
        "decomposition": {
            k: _decomposition(samples, basins, train_depths, v, grid) for k, v in tests.items()
        },
        "agreement": {
            "comparable": bool(comparable),
            "sgd_vs_fp": abs(stats_sgd["p_wide"] - p_fp),
            "sde_vs_fp": abs(stats_sde["p_wide"] - p_fp),
            "sgd_vs_fp_ok": bool(abs(stats_sgd["p_wide"] - p_fp) <= 0.05) if comparable else None,
            "sde_vs_fp_ok": bool(abs(stats_sde["p_wide"] - p_fp) <= 0.03) if comparable else None,
        },
    }


def _iso_temperature(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each (noise, T), the spread of SGD's wide-basin probability across its (lr, B) pairs."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["noise"], c["T"]), []).append(c)
    out = []
    for (noise, temp), group in groups.items():
        ps = [c["p_wide_sgd"] for c in group]
        eq = all(c["equilibrated"] for c in group)
        spread = max(ps) - min(ps)
        out.append(
            {
                "noise": noise,
                "T": temp,
                "batch_sizes": [c["batch_size"] for c in group],
                "lrs": [c["lr"] for c in group],
                "p_wide_sgd": ps,
                "spread": spread,
                "equilibrated": eq,
                "agree_within_0.05": bool(spread <= 0.05) if eq else None,
            }
        )
    return out


def _checks(summary: dict[str, Any], config: TwoMinimaConfig) -> list[dict[str, Any]]:
    """Verdicts on what the study is meant to show, each computed from the cells."""
    cells = summary["cells"]
    checks: list[dict[str, Any]] = []
    max_ls = max(c["lr_sharpness"] for c in cells)
    checks.append(
        {
            "claim": "every cell is stable: lr * lambda_max < 1",
            "holds": bool(max_ls < 1.0),
            "detail": f"max lr*lambda_max = {max_ls:.3g}",
        }
    )
    by_noise: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        by_noise.setdefault(c["noise"], []).append(c)
    iso = by_noise.get("isotropic", [])
    if iso:
        temps = sorted({c["T"] for c in iso})
        p_fp = [np.mean([c["p_wide_fp"] for c in iso if c["T"] == t]) for t in temps]
        p_sgd = [np.mean([c["p_wide_sgd"] for c in iso if c["T"] == t]) for t in temps]
        checks.append(
            {
                "claim": "isotropic: higher T moves mass to the wide minimum "
                "(Fokker-Planck p_wide rises from < 0.2 to > 0.5 across the grid)",
                "holds": bool(p_fp[0] < 0.2 and max(p_fp) > 0.5),
                "detail": "p_wide_fp by T: "
                + ", ".join(f"{p:.3f}" for p in p_fp)
                + "; p_wide_sgd by T: "
                + ", ".join(f"{p:.3f}" for p in p_sgd),
            }
        )
        # The paper's point (c): the improvement with T is driven by the domain shift. A pure
        # sampling shift shrinks with curvature (theory.md §1.5), so no improvement is implied
        # for it: its series is shown beside the claim, not judged.
        losses = {
            kind: [np.mean([c["test_loss"][kind] for c in iso if c["T"] == t]) for t in temps]
            for kind in ("domain", "sampling")
        }
        series = {
            kind: f"{kind} test loss (SGD) by T: "
            + ", ".join(f"{v:.4f}" for v in values)
            + f" (lowest at T = {temps[int(np.argmin(values))]:g})"
            for kind, values in losses.items()
        }
        domain = losses["domain"]
        improves = bool(domain[1] < domain[0]) if len(domain) > 1 else None
        checks.append(
            {
                "claim": "isotropic: the domain-shift test loss improves as T rises from the "
                "lowest grid value (the sampling-shift one, which theory does not predict to "
                "improve, is shown beside it)",
                "holds": improves,
                "detail": f"{series['domain']}; {series['sampling']}",
            }
        )
    trans = by_noise.get("translation", [])
    if trans:
        gaps = [abs(c["p_wide_fp"] - c["p_wide_gibbs"]) for c in trans]
        checks.append(
            {
                "claim": "translation: the effective potential departs from L "
                "(Gibbs-in-L basin probability misses the Fokker-Planck one by > 0.1)",
                "holds": bool(max(gaps) > 0.1),
                "detail": f"max |p_wide_fp - p_wide_gibbs| = {max(gaps):.3f}",
            }
        )
    comparable = [c for c in cells if c["agreement"]["comparable"]]
    if comparable:
        ok_fp = sum(bool(c["agreement"]["sgd_vs_fp_ok"]) for c in comparable)
        ok_sde = sum(bool(c["agreement"]["sde_vs_fp_ok"]) for c in comparable)
        worst_fp = max(c["agreement"]["sgd_vs_fp"] for c in comparable)
        worst_sde = max(c["agreement"]["sde_vs_fp"] for c in comparable)
        checks.append(
            {
                "claim": "equilibrated cells with lr*lambda_max <= 0.3: SGD within 0.05 and the "
                "SDE within 0.03 of Fokker-Planck",
                "holds": bool(ok_fp == len(comparable) and ok_sde == len(comparable)),
                "detail": f"{len(comparable)} comparable cells; SGD ok {ok_fp}, SDE ok {ok_sde}; "
                f"worst |SGD-FP| {worst_fp:.3f}, worst |SDE-FP| {worst_sde:.3f}",
            }
        )
    else:
        checks.append(
            {
                "claim": "equilibrated cells with lr*lambda_max <= 0.3: SGD within 0.05 and the "
                "SDE within 0.03 of Fokker-Planck",
                "holds": None,
                "detail": "no cell equilibrated within the simulated time: run longer (n_steps)",
            }
        )
    iso_t = [g for g in summary["iso_temperature"] if g["equilibrated"]]
    checks.append(
        {
            "claim": "temperature invariance: iso-T pairs agree within 0.05 (equilibrated cells)",
            "holds": bool(all(g["agree_within_0.05"] for g in iso_t)) if iso_t else None,
            "detail": f"{len(iso_t)} equilibrated iso-T groups; max spread "
            + (f"{max(g['spread'] for g in iso_t):.3f}" if iso_t else "n/a"),
        }
    )
    not_eq = [c for c in cells if not c["equilibrated"]]
    checks.append(
        {
            "claim": "chains started in either basin agree (equilibrated)",
            "holds": not not_eq,
            "detail": f"{len(cells) - len(not_eq)} of {len(cells)} cells equilibrated"
            + (
                "; not equilibrated: "
                + ", ".join(f"{c['noise']} T={c['T']:g} B={c['batch_size']}" for c in not_eq)
                if not_eq
                else ""
            ),
        }
    )
    return checks
