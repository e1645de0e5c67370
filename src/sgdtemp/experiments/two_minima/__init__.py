r"""The synthetic two-minima study: SGD vs its SDE vs the exact Fokker–Planck law, in 1-D.

Per-example loss $\ell(\theta; x, \xi) = U(\theta - x) + \xi\theta$ with a two-component
Gaussian-mixture potential $U$ (:class:`~sgdtemp.landscapes.MixturePotential`). For each of two
noise models,

- ``isotropic``: the tilt $\xi$ dominates the per-example gradients, so the gradient noise is
  nearly constant and the classic crossover appears (the deep sharp minimum wins at low $T$, the
  wide one at high $T$);
- ``translation``: the translation $x$ dominates the noise in the sharp basin,
  $C(\theta) \approx U''^2\,\mathrm{Var}(x)$, so the effective potential $\int L'/C$ departs from
  $L$ (the Gibbs-in-$L$ prediction fails measurably, and SGD shows it);

and for a grid of temperatures, each reached by two (lr, B) pairs, it predicts each cell's slowest
relaxation time and runs long enough to cover several (or says up front that a cell cannot
equilibrate within the budget), measures the wide-basin probability from real-minibatch SGD, from
the SDE and from the exact stationary density, checks that chains started in either basin agree,
and decomposes the test loss on a sampling-shift and a domain-shift test set (theory.md §1.3).
SGD draws minibatches with replacement, the i.i.d. noise the Fokker–Planck law is derived for;
SGD reshuffled every epoch runs beside it in the stable cells and is shown, not judged.

Each temperature $T$ is reached by batch sizes $b$ and $2b$ with $b = \max(1,
\mathrm{round}(\eta_0 / T))$ for the configured learning-rate scale $\eta_0$, so that the simulated
SDE time per step ($\eta = TB$) stays comparable across the grid.

Modules: :mod:`~.config` (what defines a study, and why the noise models have their parameters),
:mod:`~.landscape` (one noise model's data and tabulated losses), :mod:`~.plan` (equilibration
planned from the predicted relaxation time), :mod:`~.sampling` (the minibatch sampling judged
and the one shown beside it), :mod:`~.cell` (one cell's simulations and laws), :mod:`~.checks`
(verdicts), :mod:`~.study` (the entry points), :mod:`~.output` (the files).
"""

from __future__ import annotations

from sgdtemp.experiments.two_minima.config import NoiseModelConfig, TwoMinimaConfig, load_config
from sgdtemp.experiments.two_minima.output import OUTPUTS, write_two_minima
from sgdtemp.experiments.two_minima.plan import CellPlan
from sgdtemp.experiments.two_minima.study import (
    TwoMinimaPlan,
    TwoMinimaResult,
    plan_two_minima,
    run_two_minima,
)

__all__ = [
    # configuration
    "NoiseModelConfig",
    "TwoMinimaConfig",
    "load_config",
    # planning and running
    "CellPlan",
    "TwoMinimaPlan",
    "plan_two_minima",
    "TwoMinimaResult",
    "run_two_minima",
    # files
    "OUTPUTS",
    "write_two_minima",
]
