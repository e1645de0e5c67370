r"""Fokker–Planck equation of SGD in 2-D with a full, state-dependent diffusion tensor.

Modules: :mod:`.grid` (the grid), :mod:`.stencils` (Selling's stencils), :mod:`.jumps` (the
chain's rates and walls), :mod:`.linalg` (GTH and elimination order), :mod:`.operator` (the
operator and its solves), :mod:`.domain` (box and grid for a landscape), :mod:`.basins` (basins,
Gibbs reference, effective potential), :mod:`.stationary` (the entry point :func:`stationary_2d`).

The SDE $d\theta = b(\theta)\,dt + \sqrt{T\,C(\theta)}\,dW$ with $b = -\nabla L$ (design.md) has the
Fokker–Planck equation, with diffusion tensor $D = \tfrac T2 C$,

$$\partial_t p = -\nabla\cdot J,\qquad J_i = b_i\,p - \sum_j \partial_j(D_{ij}\,p),$$

i.e. $\partial_t p = \nabla\cdot(p\nabla L) + \tfrac T2\sum_{ij}\partial_i\partial_j(C_{ij}p)$.

**Discretization.** Cell-centred finite volumes on a uniform $n_x\times n_y$ grid with reflecting
walls, written as the master equation of a continuous-time Markov chain on the cells:
$\dot p = A p$ with $A = Q^\top$, where $Q_{kl} \ge 0$ is the jump rate from cell $k$ to cell $l$
and $Q_{kk} = -\sum_{l\ne k} Q_{kl}$. The columns of $A$ sum to zero, so **mass is conserved
exactly** (to round-off); jumps that would leave the box are dropped (no flux through the walls:
the SDE reflected along the conormal $Dn$), or, on request, sent to the nearest cell inside (the
SDE projected back along the normal); :func:`stationary_2d` solves both and reports how much the
basin probabilities depend on the walls.

1. *Diffusion: Selling's decomposition.* In grid units ($u = x/h_x$, $v = y/h_y$) the tensor is
   $D' = S D S$, $S = \operatorname{diag}(1/h_x, 1/h_y)$. Selling's algorithm turns the superbase
   $((1,0),(0,1),(-1,-1))$ into a $D'$-obtuse one $(e_1, e_2, e_3)$, and then
   $D' = \sum_i \rho_i\, f_if_i^\top$ with $\rho_i = -\langle e_j, D'e_k\rangle \ge 0$ and
   $f_i = e_i^\perp$ integer offsets (Fehrenbach & Mirebeau, "Sparse non-negative stencils for
   anisotropic diffusion", J. Math. Imaging Vis. 49, 2014). Each cell jumps to $k\pm f_i$ at rate
   $\rho_i$: **non-negative weights for every positive semi-definite $D$**, and the stencil is the
   usual five-point one for diagonal $D$ and Kushner's seven-point one when
   $|D'_{xy}| \le \min(D'_{xx}, D'_{yy})$. Stronger anisotropy relative to the cell aspect ratio
   widens the stencil (offsets like $(2, 1)$).
2. *Drift: exponential fitting along each stencil edge.* The rate from $k$ to $l = k + f$ is
   $\rho\,B(-z_{kl})$ with $B(z) = z/(e^z - 1) > 0$ and
   $z_{kl} = s^\top\bar D^{-1}\bar b = -z_{lk}$, $s = \theta_l - \theta_k$, bars denoting the mean
   of the two cells. Since $B(-z) - B(z) = z$, the first moment of the jumps is
   $\sum_i\rho_i z_i f_i = S^{-1}b$: the drift is exact, for any Péclet number, with positive
   rates (a Scharfetter–Gummel flux per edge). With a potential, $s\cdot\bar b$ is replaced by the
   difference $-(L_l - L_k)$, so for constant isotropic $D$ the chain satisfies detailed balance
   *exactly* with $p_k \propto e^{-L_k/D}$: the Gibbs law on the nodes and no spurious current.

**Positivity.** Every rate is non-negative, so $A$ is a generator and the stationary density is
non-negative, positive where the chain is irreducible (Perron–Frobenius): **positivity is
guaranteed for every PSD diffusion tensor**, cross terms included. The price is stencil width:
where the scaled tensor $D'$ is so anisotropic that Selling's offsets would exceed
``max_width`` cells (or the algorithm does not converge, $D$ nearly singular), the cell falls back
to the seven-point stencil with its cross-diffusion $|D'_{xy}|$ *limited* to
$\min(D'_{xx}, D'_{yy})$. That keeps positivity but is inconsistent there; such cells are
counted (``limited_cells``) and their stationary mass and the stationary flux through them are
reported. Refining one axis (changing $h_y/h_x$ towards $\sqrt{D_{yy}/D_{xx}}$) removes them.

**Accuracy.** Second order in the grid spacing for smooth coefficients: Selling's second
differences are exact on quadratics and the exponential fitting perturbs the second moment by
$O(z^2) = O(h^2)$. Checked on manufactured stationary solutions with full, state-dependent $D$ in
``tests/theory/test_fokker_planck_2d.py``.

**Solvers.** The stationary density is computed so that it is non-negative *in floating point*
and accurate relative to each cell's own value, also where it is $10^{-30}$ of its peak or a
basin holds $10^{-10}$ of the mass. Pinning one cell and eliminating the rest by plain LU is
not: with two metastable basins $A$ has a second eigenvalue $\sim e^{-\Delta L/D}$, and an
elimination that sweeps uphill out of a basin without a pinned cell multiplies the rounding
error of each pivot (a difference $a_{jj} - \sum l_{jk}u_{kj}$) from cell to cell, until the
basin's total mass is noise and can come out negative. So: (1) every *sink* of the chain (a
cell all of whose jumps go against the drift: the local minima of the potential) is pinned;
(2) the other cells are eliminated by sparse LU (SuperLU, a geometric nested-dissection order,
no pivoting, stable for this column diagonally dominant M-matrix $M = -A_{ff}$), whose factors
then have non-positive off-diagonals and positive pivots, so every solve with a non-negative
right-hand side only adds; (3) the factorization is *certified*: $M^\top\mathbf 1$ is the
vector of rates into the pins, so solving $M^\top v = $ that vector must give $v = \mathbf 1$
to $10^{-8}$; where it does not, a trap without a pin was found, its lowest cell is pinned and
the elimination repeated; (4) with $h_k$ the solution for $p = 1$ on pin $k$ and 0 on the
others, the chain censored on the pins has rates $A_{jk} + \sum_l A_{jl}h_k[l] \ge 0$ (sums of
non-negative terms), whose stationary vector $c$ the GTH algorithm computes with small relative
error (Grassmann, Taksar & Heyman 1985; O'Cinneide 1993); (5) $p = \sum_k c_kh_k$, a sum of
non-negative terms. Against the exact discrete Gibbs law (isotropic noise), the relative error
is about $10^{-9}$ in every cell down to $10^{-290}$ of the peak (the part of $D$'s regularizing
floor). The other solves have the same trap and the same cure (``_eliminate``: sinks pinned,
certified no-pivot LU of the rest, then a small system on the pins whose pivots are formed
GTH-style, as sums of rates and leaks, by ``_gth_factor``):
:meth:`FokkerPlanck2D.mean_first_passage_time` (target absorbing; $\tau$ to ~1e-10 relative
up to $\tau\sim10^{17}$), backward Euler in :meth:`FokkerPlanck2D.propagate`, solved as
$(sI - A)p' = sp$ with $s = 1/dt$ so that the identity is never rounded away against $dt\,A$
(non-negative and mass-conserving to ~1e-13 per step for any ``dt``; ``expm_multiply`` is the
exact-in-time alternative), and the shift-invert resolvent of
:meth:`FokkerPlanck2D.relaxation_rates` (rates to ~1e-9 relative down to ~1e-13 of the
largest rate; below that the shift's round-off floor takes over, ~1e-6 relative at 1e-17).
Plain LU lost ~$e^{\Delta L/D}\times$round-off in all three: MFPT and slowest rates wrong
in every digit and backward-Euler densities negative at $\Delta L/D = 40$
(``tests/theory/test_fokker_planck_2d_mfpt.py``).
"""

from __future__ import annotations

from sgdtemp.theory.fokker_planck_2d.basins import (
    Basin2D,
    effective_potential,
    gibbs_density_2d,
    steepest_descent_basins,
)
from sgdtemp.theory.fokker_planck_2d.domain import (
    auto_domain,
    fokker_planck_from_landscape,
    shaped_grid,
)
from sgdtemp.theory.fokker_planck_2d.grid import MIN_GRID, Grid2D
from sgdtemp.theory.fokker_planck_2d.jumps import WALLS
from sgdtemp.theory.fokker_planck_2d.operator import FokkerPlanck2D, Propagation
from sgdtemp.theory.fokker_planck_2d.stationary import Stationary2D, stationary_2d
from sgdtemp.theory.fokker_planck_2d.stencils import MAX_WIDTH, selling_decomposition

__all__ = [
    # the grid and the operator
    "Grid2D",
    "FokkerPlanck2D",
    "Propagation",
    "selling_decomposition",
    "MIN_GRID",
    "MAX_WIDTH",
    "WALLS",
    # a landscape's stationary law
    "Stationary2D",
    "Basin2D",
    "stationary_2d",
    "fokker_planck_from_landscape",
    "auto_domain",
    "shaped_grid",
    "steepest_descent_basins",
    "effective_potential",
    "gibbs_density_2d",
]
