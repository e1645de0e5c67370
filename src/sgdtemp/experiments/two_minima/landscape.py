"""The landscape of one noise model: drawn data, train and test losses, basins, the study grid."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sgdtemp.errors import UserError
from sgdtemp.experiments.two_minima.config import NoiseModelConfig, TwoMinimaConfig
from sgdtemp.landscapes import MixturePotential, TwoMinimaLoss, sample_two_minima_data
from sgdtemp.simulate import Tabulated1D

__all__ = ["Basins", "TestSet", "NoiseModelLandscape", "build_landscape", "on_grid"]


@dataclass(frozen=True)
class Basins:
    """Geometry of one data-defined landscape, in the order (left, right).

    Attributes:
        minimizers: the two minimizers of the train loss, ``(2,)``.
        barrier: the local maximum between them.
        wide: index of the wide basin (0 = left, 1 = right).
    """

    minimizers: np.ndarray
    barrier: float
    wide: int

    def wide_mask(self, theta: np.ndarray) -> np.ndarray:
        """True where theta lies on the wide minimum's side of the barrier."""
        return theta > self.barrier if self.wide == 1 else theta < self.barrier


def _t(x: np.ndarray | float) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64)).reshape(-1, 1)


def evaluate(fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray | float) -> np.ndarray:
    """A landscape method (``(..., 1)`` in) at NumPy points, flattened."""
    return fn(_t(x)).reshape(-1).numpy()


def on_grid(values: np.ndarray, grid: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """A smooth function known on the fine study grid, at arbitrary points (linear interpolation).

    The expected losses average over millions of SGD samples; evaluating the exact loss at each
    (N examples per point) would cost billions of evaluations, while the grid spacing keeps the
    interpolation error at h^2 |L''| / 8 (about 1e-5 on the default grid).
    """
    return np.interp(theta, grid, values)


@dataclass(frozen=True)
class TestSet:
    r"""A test loss tabulated on the study grid, with its minimizers paired to the train ones.

    Attributes:
        loss_on_grid: the test loss on the grid, ``(n_grid,)``.
        minimizers: its two minimizers (left, right), ``(2,)``.
        hessians: $\tilde L''$ at them, ``(2,)``.
        depths: $\tilde L$ at them, ``(2,)``.
    """

    __test__ = False  # not a pytest class

    loss_on_grid: np.ndarray
    minimizers: np.ndarray
    hessians: np.ndarray
    depths: np.ndarray

    @classmethod
    def build(cls, test: TwoMinimaLoss, grid: np.ndarray) -> TestSet:
        """Tabulate ``test`` on ``grid``."""
        mins = test.minimizers().reshape(-1).numpy()
        if mins.shape[0] != 2:  # pragma: no cover - guarded by TwoMinimaLoss itself
            raise UserError("a test set destroyed one of the two minima; lower domain_shift")
        return cls(
            loss_on_grid=evaluate(test.loss, grid),
            minimizers=mins,
            hessians=evaluate(test.hessian, mins),
            depths=evaluate(test.loss, mins),
        )


@dataclass(frozen=True)
class NoiseModelLandscape:
    """Everything a cell of one noise model needs, computed once.

    Attributes:
        name: the noise model's name.
        train: the train loss.
        tests: the ``sampling`` and ``domain`` test sets.
        basins: the train loss's basins.
        grid: the study grid, ``(n_grid,)``.
        loss: $L$ on the grid.
        grad: $L'$ on the grid.
        noise: $C$ on the grid.
        table: $L$, $L'$, $L''$, $C$ tabulated for the SDE.
        curvatures: $L''$ at the two minimizers.
        depths: $L$ at the two minimizers.
        noise_at_minima: $C$ at the two minimizers.
        summary: JSON-ready description (``summary.json``'s ``noise_models.NAME``).
        arrays: the data and grid arrays for ``data.npz``.
    """

    name: str
    train: TwoMinimaLoss
    tests: dict[str, TestSet]
    basins: Basins
    grid: np.ndarray
    loss: np.ndarray
    grad: np.ndarray
    noise: np.ndarray
    table: Tabulated1D
    curvatures: np.ndarray
    depths: np.ndarray
    noise_at_minima: np.ndarray
    summary: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def gibbs_noise(self) -> float:
        """The constant noise of the Gibbs law in $L$: the mean of $C$ at the two minima."""
        return float(self.noise_at_minima.mean())

    @property
    def lambda_max(self) -> float:
        r"""$\lambda_{\max}$: the larger curvature of the two minima."""
        return float(self.curvatures.max())


def build_landscape(
    config: TwoMinimaConfig, name: str, model_index: int, nm: NoiseModelConfig
) -> NoiseModelLandscape:
    """Draw the data of noise model ``name`` and tabulate its landscape on the study grid."""
    potential = MixturePotential(m=config.m, w=config.w, pi=config.pi)
    gen = torch.Generator().manual_seed(config.seed * 1000 + model_index)

    def draw(n: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
        return sample_two_minima_data(
            n, translation_std=nm.translation_std, tilt_std=nm.tilt_std, shift=shift, generator=gen
        )

    x, xi = draw(config.n_train, 0.0)
    if config.antithetic_tilts:
        half = xi[: config.n_train // 2]
        xi = torch.cat([half, -half, xi[2 * half.numel() :] * 0.0])
    xt, xit = draw(config.n_test, 0.0)
    xd, xid = draw(config.n_test, config.domain_shift)
    train = TwoMinimaLoss(potential, x, xi)
    basins = Basins(
        minimizers=train.minimizers().reshape(-1).numpy(),
        barrier=float(train.barrier().reshape(-1)[0]),
        wide=int(train.wide),
    )
    lo = float(min(config.m) - 5 * max(config.w) - 3 * abs(config.domain_shift))
    hi = float(max(config.m) + 5 * max(config.w) + 3 * abs(config.domain_shift))
    # One pass over (grid point, example) pairs for L', L'' and C, one for L: the SDE's table and
    # the Fokker-Planck law use the same values.
    grid_t = torch.linspace(lo, hi, config.grid_points, dtype=torch.float64).unsqueeze(1)
    grad_t, hess_t, noise_t = train.grad_hessian_noise(grid_t)
    loss_t = train.loss(grid_t)
    table = Tabulated1D(
        lo, hi, loss_t, grad_t[:, 0], hess_t[:, 0, 0], noise_t[:, 0, 0].clamp_min(0.0)
    )
    grid = grid_t[:, 0].numpy()
    loss_g, dl_g, c_g = loss_t.numpy(), grad_t[:, 0].numpy(), noise_t[:, 0, 0].numpy()
    tests = {
        "sampling": TestSet.build(TwoMinimaLoss(potential, xt, xit), grid),
        "domain": TestSet.build(TwoMinimaLoss(potential, xd, xid), grid),
    }
    mins = basins.minimizers
    h_min = evaluate(train.hessian, mins)
    c_min = evaluate(train.noise_cov, mins)
    depths = evaluate(train.loss, mins)
    tilt_var = float(xi.var(unbiased=False))
    summary = {
        "translation_std": nm.translation_std,
        "tilt_std": nm.tilt_std,
        "minimizers": mins.tolist(),
        "barrier": basins.barrier,
        "wide_minimum": float(mins[basins.wide]),
        "sharp_minimum": float(mins[1 - basins.wide]),
        "depths": depths.tolist(),
        "curvatures": h_min.tolist(),
        "noise_var_at_minima": c_min.tolist(),
        # The tilts' own variance, and the share of C at each minimum it does not explain (the
        # translations' part): what makes the stationary law depart from the Gibbs law in L.
        "tilt_var": tilt_var,
        "translation_share_at_minima": [max(0.0, 1.0 - tilt_var / c) for c in c_min.tolist()],
        "gibbs_noise_var": float(c_min.mean()),
        "test_minimizers": {k: v.minimizers.tolist() for k, v in tests.items()},
        "test_depths": {k: v.depths.tolist() for k, v in tests.items()},
        "test_curvatures": {k: v.hessians.tolist() for k, v in tests.items()},
    }
    arrays = {
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
    return NoiseModelLandscape(
        name=name,
        train=train,
        tests=tests,
        basins=basins,
        grid=grid,
        loss=loss_g,
        grad=dl_g,
        noise=c_g,
        table=table,
        curvatures=h_min,
        depths=depths,
        noise_at_minima=c_min,
        summary=summary,
        arrays=arrays,
    )
