r"""Escape over a barrier with anisotropic, state-dependent noise, and SGD in discrete time.

**Eyring–Kramers–Langer rate.** For $d\theta = -\nabla L\,dt + \sqrt{T\,C(\theta)}\,dW$ the rate
of escape from a minimum $m$ over a saddle $s$ is, for small $T$,

$$k = \frac{\lambda_+}{2\pi}\sqrt{\frac{|\det S_s|}{\det S_m}}\;
\frac{c_\tau(m)}{c_\tau(s)}\;e^{-\Delta V/T},$$

* $\lambda_+ = -\lambda_{\min}(H_s)$, the unstable growth rate at the saddle;
* $S$ solves the Lyapunov equation $HS + SH = C$ at $m$ and at $s$ (at the minimum
  $TS_m$ is the stationary covariance; $S^{-1}$ is the Hessian of the quasi-potential at both
  points, Langer 1969);
* $\Delta V = 2\int_m^s \frac{\nabla L\cdot d\theta}{c_\tau}$ along the minimum-energy path, with
  $c_\tau = \tau^\top C\tau$ the noise along the path's unit tangent $\tau$ (the quasi-potential
  of the path's 1-D reduction), and $c_\tau(m)/c_\tau(s)$ its prefactor ($p \propto 1/c$ in 1-D).

Checks: $C = \sigma^2I$ gives Kramers' $\frac{|\lambda_s|}{2\pi}\sqrt{\det H_m/|\det H_s|}\,
e^{-2\Delta L/(T\sigma^2)}$; in 1-D it is the exact small-$T$ limit of the mean first-passage
time with state-dependent $C$. In general it is exact to leading order when the path is a
symmetry axis of $L$ and $C$ and the dynamics is reversible; with anisotropic noise a
non-reversible correction (Bouchet & Reygner, "Generalisation of the Eyring–Kramers transition
rate formula to irreversible diffusion processes", Ann. Henri Poincaré 17, 2016) is left out.
:meth:`~sgdtemp.theory.fokker_planck_2d.FokkerPlanck2D.mean_first_passage_time` and
:func:`two_state_rates` give numerically exact references for the same SDE.

**First passage in simulations.** :func:`first_passage_times` advances chains (SGD or SDE) in
chunks and records when each first enters a target set; :func:`exponential_rate` is the
maximum-likelihood rate with right-censoring.

**Discrete time.** SGD with learning rate $\eta$ on a quadratic has the exact stationary
covariance $H\Sigma + \Sigma H - \eta H\Sigma H = TC$ (1-D: $\eta\sigma^2/(Bh(2-\eta h))$), the SDE
$H\Sigma + \Sigma H = TC$; :func:`discrete_time_covariances` tabulates both along an iso-$T$ line,
where they separate as $\eta\lambda_{\max} \to 2$.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import solve_ivp
from scipy.interpolate import CubicSpline
from torch import Tensor

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes._base import AbstractLandscape
from sgdtemp.theory.first_passage import (  # re-exported: they lived here
    FirstPassage,
    exponential_rate,
    first_passage_times,
    two_state_rates,
)
from sgdtemp.theory.lyapunov import lyapunov_continuous, lyapunov_discrete

__all__ = [
    "MinimumEnergyPath",
    "minimum_energy_path",
    "find_saddle",
    "EscapeRate",
    "eyring_kramers_rate",
    "two_state_rates",
    "FirstPassage",
    "first_passage_times",
    "exponential_rate",
    "DiscreteCovariances",
    "discrete_time_covariances",
]

FloatArray = NDArray[np.float64]

STRING_TOL = 1e-9  # string method: stop when no image moves more than this per iteration
NEWTON_TOL = 1e-12  # saddle search: stop when the gradient norm is below this
STRAIGHT_TOL = 1e-3  # a path is straight when no image is farther than this * length from the chord
N_TRANSPORT = 2001  # points on the path where the transport coefficients are tabulated
TRANSPORT_EPS = 1e-4  # the transport ODE starts and stops this fraction of the path from the ends


def _t(x: ArrayLike) -> Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


# ----------------------------------------------------------------------------- path and saddle


@dataclass(frozen=True)
class MinimumEnergyPath:
    """A minimum-energy path between two minima through a saddle.

    Attributes:
        images: points from ``start`` to ``end`` at equal arc length, ``(n, d)``; the image
            closest to the saddle is replaced by the exact saddle.
        saddle: the saddle point (index 1), ``(d,)``.
        saddle_index: row of ``images`` holding the saddle.
        losses: $L$ at the images, ``(n,)``.
    """

    images: FloatArray
    saddle: FloatArray
    saddle_index: int
    losses: FloatArray


def find_saddle(
    landscape: AbstractLandscape, guess: ArrayLike, *, max_iter: int = 100
) -> FloatArray:
    r"""Newton's method on $\nabla L = 0$ from ``guess``; checks one negative Hessian eigenvalue.

    Args:
        landscape: the landscape.
        guess: starting point, ``(d,)``.
        max_iter: Newton steps at most.

    Returns:
        The saddle, ``(d,)`` float64.

    Raises:
        UserError: if Newton does not converge or the point is not an index-1 saddle.

    Example:
        >>> from sgdtemp.landscapes.double_well_2d import DoubleWell2D
        >>> (find_saddle(DoubleWell2D(), [0.1, 0.05]).round(4) + 0.0).tolist()
        [-0.025, 0.0]
    """
    theta = _t(guess).clone()
    with torch.no_grad():
        for _ in range(max_iter):
            grad = landscape.grad(theta)
            if float(grad.norm()) < NEWTON_TOL:
                break
            theta = theta - torch.linalg.solve(landscape.hessian(theta), grad)
        eig = torch.linalg.eigvalsh(landscape.hessian(theta))
        ok = float(landscape.grad(theta).norm()) < 1e-8 and int((eig < 0).sum()) == 1
    if not ok:
        raise UserError(f"no index-1 saddle found near {np.asarray(guess).tolist()}")
    return theta.numpy()


def _reparametrize(images: Tensor) -> Tensor:
    """Redistribute images at equal arc length by linear interpolation."""
    seg = (images[1:] - images[:-1]).norm(dim=-1)
    s = torch.cat([torch.zeros(1, dtype=images.dtype), seg.cumsum(0)])
    target = torch.linspace(0.0, float(s[-1]), images.shape[0], dtype=images.dtype)
    idx = torch.searchsorted(s, target).clamp(1, images.shape[0] - 1)
    w = ((target - s[idx - 1]) / (s[idx] - s[idx - 1]).clamp_min(1e-300)).unsqueeze(-1)
    return images[idx - 1] + w * (images[idx] - images[idx - 1])


def minimum_energy_path(
    landscape: AbstractLandscape,
    start: ArrayLike,
    end: ArrayLike,
    *,
    n_images: int = 129,
    max_iter: int = 5000,
) -> MinimumEnergyPath:
    r"""Minimum-energy path between two minima by the simplified string method.

    Weinan E, Ren & Vanden-Eijnden, "Simplified and improved string method for computing the
    minimum energy paths in barrier-crossing events", J. Chem. Phys. 126, 164103 (2007): images
    descend $L$ by explicit Euler steps and are redistributed at equal arc length; the highest
    image is then refined to the saddle by :func:`find_saddle`.

    Args:
        landscape: the landscape.
        start: the first minimum, ``(d,)``.
        end: the second minimum, ``(d,)``.
        n_images: images on the string, at least 5.
        max_iter: string iterations at most.

    Returns:
        The :class:`MinimumEnergyPath`.

    Raises:
        UserError: if ``n_images < 5`` or the highest image does not refine to a saddle.

    Example:
        >>> from sgdtemp.landscapes.double_well_2d import DoubleWell2D
        >>> land = DoubleWell2D()
        >>> path = minimum_energy_path(land, *land.minimizers())
        >>> (path.saddle.round(4) + 0.0).tolist()
        [-0.025, 0.0]
    """
    if n_images < 5:
        raise UserError(f"n_images must be at least 5, got {n_images}")
    a, b = _t(start), _t(end)
    frac = torch.linspace(0.0, 1.0, n_images, dtype=torch.float64).unsqueeze(-1)
    images = a + frac * (b - a)
    with torch.no_grad():
        lam = float(torch.linalg.eigvalsh(landscape.hessian(images)).abs().max())
        step = 0.2 / max(lam, 1e-12)
        for _ in range(max_iter):
            moved = images.clone()
            moved[1:-1] -= step * landscape.grad(images[1:-1])
            moved = _reparametrize(moved)
            change = float((moved - images).abs().max())
            images = moved
            if change < STRING_TOL:
                break
        losses = landscape.loss(images)
    k = int(losses.argmax())
    saddle = find_saddle(landscape, images[k].numpy())
    out = images.numpy().copy()
    out[k] = saddle
    with torch.no_grad():
        values = landscape.loss(_t(out)).numpy()
    return MinimumEnergyPath(images=out, saddle=saddle, saddle_index=k, losses=values)


# ----------------------------------------------------------------------------- Eyring–Kramers


@dataclass(frozen=True)
class EscapeRate:
    r"""An Eyring–Kramers–Langer escape rate (module docstring).

    Attributes:
        rate: $k$ per unit SDE time (steps $\cdot\,\eta$).
        exponent: $\Delta V/T$.
        quasi_potential_barrier: $\Delta V$ (for $C = \sigma^2I$: $2\Delta L/\sigma^2$).
        loss_barrier: $\Delta L = L(s) - L(m)$.
        prefactor: $k\,e^{\Delta V/T}$.
        unstable_eigenvalue: $\lambda_+$.
        transverse_factor: the non-reversible WKB prefactor correction along a straight path
            (1 for reversible dynamics; 1 when the path is not straight and it is not computed).
        straight_path: whether the minimum-energy path is straight (then the rate includes
            ``transverse_factor``).
        minimum: $m$, ``(d,)``.
        saddle: $s$, ``(d,)``.
    """

    rate: float
    exponent: float
    quasi_potential_barrier: float
    loss_barrier: float
    prefactor: float
    unstable_eigenvalue: float
    transverse_factor: float
    straight_path: bool
    minimum: FloatArray
    saddle: FloatArray

    @property
    def mean_escape_time(self) -> float:
        """$1/k$."""
        return 1.0 / self.rate if self.rate > 0 else math.inf


def eyring_kramers_rate(
    landscape: AbstractLandscape,
    temperature: float,
    *,
    start: int,
    path: MinimumEnergyPath | None = None,
) -> EscapeRate:
    r"""Eyring–Kramers–Langer rate of escape from minimizer ``start`` with the landscape's noise.

    Args:
        landscape: a landscape with two minimizers; ``noise_cov`` gives $C(\theta)$.
        temperature: $T = \eta/B > 0$.
        start: row of ``landscape.minimizers()`` to escape from (0 or 1).
        path: a minimum-energy path between the two minimizers (computed when None).

    Returns:
        The :class:`EscapeRate`.

    Raises:
        UserError: on $T \le 0$, a landscape without two minimizers, a bad ``start``, or noise
            that vanishes along the path.

    Example:
        >>> from sgdtemp.landscapes.double_well_2d import DoubleWell2D
        >>> esc = eyring_kramers_rate(DoubleWell2D(sigma=1.0), 0.2, start=0)
        >>> round(esc.quasi_potential_barrier / (2 * esc.loss_barrier), 12)  # = 1 / sigma^2
        1.0
    """
    require_positive("temperature", temperature)
    mins = landscape.minimizers().to(torch.float64)
    if mins.shape[0] != 2:
        raise UserError(f"need a landscape with two minimizers, got {mins.shape[0]}")
    if start not in (0, 1):
        raise UserError(f"start must be 0 or 1 (a row of minimizers()), got {start}")
    if path is None:
        path = minimum_energy_path(landscape, mins[0].numpy(), mins[1].numpy())
    pts = path.images[: path.saddle_index + 1]
    if start == 1:
        pts = path.images[path.saddle_index :][::-1]
    pts = np.ascontiguousarray(pts)
    m, s = pts[0], pts[-1]
    with torch.no_grad():
        tp = _t(pts)
        loss = landscape.loss(tp).numpy()
        cov = landscape.noise_cov(tp).numpy()
        h_m = landscape.hessian(_t(m)).numpy()
        h_s = landscape.hessian(_t(s)).numpy()
    tangent = np.diff(pts, axis=0)
    tangent /= np.linalg.norm(tangent, axis=-1, keepdims=True)
    # noise along the path: c_tau at each segment's two ends
    c_lo = np.einsum("ni,nij,nj->n", tangent, cov[:-1], tangent)
    c_hi = np.einsum("ni,nij,nj->n", tangent, cov[1:], tangent)
    if min(c_lo.min(), c_hi.min()) <= 0:
        raise UserError("the noise vanishes along the escape path; no finite escape rate")
    barrier = float(np.sum(np.diff(loss) * (1.0 / c_lo + 1.0 / c_hi)))  # 2 * int dL / c
    eig_s, vec_s = np.linalg.eigh(h_s)
    unstable = -float(eig_s[0])
    u = vec_s[:, 0]
    c_m_tau = float(c_lo[0])
    c_s_tau = float(u @ cov[-1] @ u)
    s_m = np.asarray(lyapunov_continuous(h_m, cov[0], 1.0))
    s_s = _saddle_lyapunov(h_s, cov[-1])
    det_m, det_s = float(np.linalg.det(s_m)), abs(float(np.linalg.det(s_s)))
    transverse = 1.0
    chord = s - m
    length = float(np.linalg.norm(chord))
    offset = pts - m - np.outer((pts - m) @ chord / length**2, chord)
    straight = pts.shape[1] == 2 and float(np.abs(offset).max()) <= STRAIGHT_TOL * length
    if straight:
        transverse = _transverse_factor(landscape, m, s)
    prefactor = (
        unstable / (2 * math.pi) * math.sqrt(det_s / det_m) * (c_m_tau / c_s_tau) * transverse
    )
    exponent = barrier / temperature
    return EscapeRate(
        rate=prefactor * math.exp(-exponent),
        exponent=exponent,
        quasi_potential_barrier=barrier,
        loss_barrier=float(loss[-1] - loss[0]),
        prefactor=prefactor,
        unstable_eigenvalue=unstable,
        transverse_factor=transverse,
        straight_path=straight,
        minimum=m.copy(),
        saddle=s.copy(),
    )


def _transverse_factor(landscape: AbstractLandscape, m: FloatArray, s: FloatArray) -> float:
    r"""WKB prefactor transport $\exp\int(\dots)$ along a straight 2-D escape path.

    Coordinates: $u$ along the path from $m$ to $s$ (unit $\tau$), $v$ across it (unit $n$). With
    $p \approx z\,e^{-V/T}$ and $V = V_0(u) + \tfrac12 q(u)v^2 + O(v^3)$ the O(1) order of the
    stationary equation gives, on the path (symmetric in $v$),

    $$(\log z)' = -\frac{C_{uu}'}{C_{uu}} - \frac{2\kappa}{C_{uu}}
    + \frac{L_{vv} - \tfrac12 C_{vv}q}{L_u},\qquad \kappa = \partial_vC_{uv},$$

    where $q$ solves the Riccati equation from the $O(v^2)$ order of the Hamilton–Jacobi equation
    $\nabla V\cdot\nabla L = \tfrac12\nabla V^\top C\nabla V$:

    $$q' = \frac2{C_{uu}}\Big(L_{vv}' - \frac{c_2L_u}{C_{uu}} - 2\kappa q\Big)
    + \frac{q\,(2L_{vv} - C_{vv}q)}{L_u},\qquad c_2 = \partial_v^2C_{uu},$$

    from $q(m) = 2L_{vv}/C_{vv}$ along its smooth branch. The first term of $(\log z)'$ is the
    1-D factor $c_\tau(m)/c_\tau(s)$ applied separately; this returns $\exp$ of the integral of
    the other two (1 when the dynamics is reversible, e.g. $C = c(\theta)I$).
    """
    tau = (s - m) / np.linalg.norm(s - m)
    nrm = np.array([-tau[1], tau[0]])
    length = float(np.linalg.norm(s - m))
    u = np.linspace(0.0, length, N_TRANSPORT)
    base = m + np.outer(u, tau)
    delta = 1e-4 * length
    with torch.no_grad():
        g0 = landscape.grad(_t(base)).numpy()
        h0 = landscape.hessian(_t(base)).numpy()
        c0 = landscape.noise_cov(_t(base)).numpy()
        cp = landscape.noise_cov(_t(base + delta * nrm)).numpy()
        cm = landscape.noise_cov(_t(base - delta * nrm)).numpy()

    def proj(c: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
        return np.einsum("i,nij,j->n", a, c, b)

    l_u = g0 @ tau
    l_vv = proj(h0, nrm, nrm)
    c_uu, c_vv = proj(c0, tau, tau), proj(c0, nrm, nrm)
    kappa = (proj(cp, tau, nrm) - proj(cm, tau, nrm)) / (2 * delta)
    c2 = (proj(cp, tau, tau) - 2 * c_uu + proj(cm, tau, tau)) / delta**2
    fields = {
        name: CubicSpline(u, values)
        for name, values in (
            ("l_u", l_u),
            ("l_vv", l_vv),
            ("c_uu", c_uu),
            ("c_vv", c_vv),
            ("kappa", kappa),
            ("c2", c2),
        )
    }
    f = {k: v for k, v in fields.items()}
    dl_vv = f["l_vv"].derivative()

    def rhs(x: float, y: FloatArray) -> list[float]:
        q = y[0]
        lu, lvv, cuu, cvv, kap = (float(f[k](x)) for k in ("l_u", "l_vv", "c_uu", "c_vv", "kappa"))
        smooth = 2.0 / cuu * (float(dl_vv(x)) - float(f["c2"](x)) * lu / cuu - 2 * kap * q)
        dq = smooth + q * (2 * lvv - cvv * q) / lu
        dw = (lvv - 0.5 * cvv * q) / lu - 2 * kap / cuu
        return [dq, dw]

    # smooth branch at the minimum: q = q_m + q1 u, q1 = N_u / (h - N_q), N = L_u q'
    h_m = float(f["l_u"].derivative()(0.0))
    q_m = 2 * float(f["l_vv"](0.0)) / float(f["c_vv"](0.0))
    n_u = q_m * (2 * float(dl_vv(0.0)) - float(f["c_vv"].derivative()(0.0)) * q_m) + (
        2 * h_m / float(f["c_uu"](0.0))
    ) * (float(dl_vv(0.0)) - 2 * float(f["kappa"](0.0)) * q_m)
    n_q = -2 * float(f["l_vv"](0.0))
    q1 = n_u / (h_m - n_q)
    eps = TRANSPORT_EPS * length
    sol = solve_ivp(
        rhs, (eps, length - eps), [q_m + q1 * eps, 0.0], method="Radau", rtol=1e-10, atol=1e-12
    )
    if not sol.success:
        return 1.0
    return math.exp(float(sol.y[1, -1]))


def _saddle_lyapunov(h: FloatArray, c: FloatArray) -> FloatArray:
    r"""Solve $HS + SH = C$ for a symmetric indefinite $H$ in its eigenbasis.

    $S'_{ij} = C'_{ij}/(\lambda_i + \lambda_j)$. A pair with $\lambda_i + \lambda_j = 0$ (a
    saddle as steep down as up) is fine when $C'_{ij} = 0$ there (e.g. isotropic noise) and
    leaves the quasi-potential degenerate otherwise.

    Raises:
        UserError: in the degenerate case.
    """
    lam, vec = np.linalg.eigh(h)
    cp = vec.T @ c @ vec
    denom = lam[:, None] + lam[None, :]
    tiny = np.abs(denom) <= 1e-10 * np.abs(lam).max()
    if np.any(np.abs(cp[tiny]) > 1e-10 * np.abs(cp).max()):
        raise UserError(
            "the saddle's Hessian has eigenvalues of opposite sign and equal size and the noise "
            "couples them: the Eyring–Kramers prefactor is degenerate"
        )
    sp_ = np.where(tiny, 0.0, cp / np.where(tiny, 1.0, denom))
    return vec @ sp_ @ vec.T


@dataclass(frozen=True)
class DiscreteCovariances:
    r"""Stationary covariances of SGD and of its SDE along an iso-temperature line.

    Attributes:
        temperature: $T$.
        lrs: learning rates, ``(K,)``; batch sizes are $\eta/T$.
        lr_lambda_max: $\eta\lambda_{\max}(H)$, ``(K,)`` (SGD is unstable from 2 on).
        sgd: exact discrete-time covariances, ``(K, d, d)`` (NaN where unstable).
        sde: the SDE's covariance, the same for every $\eta$, ``(d, d)``.
        trace_ratio: $\operatorname{tr}\Sigma_{\rm SGD}/\operatorname{tr}\Sigma_{\rm SDE}$,
            ``(K,)``.
    """

    temperature: float
    lrs: FloatArray
    lr_lambda_max: FloatArray
    sgd: FloatArray
    sde: FloatArray
    trace_ratio: FloatArray


def discrete_time_covariances(
    H: ArrayLike, C: ArrayLike, temperature: float, lrs: ArrayLike
) -> DiscreteCovariances:
    r"""Exact SGD stationary covariance vs the SDE's along the iso-$T$ line ``lrs``.

    SGD: $H\Sigma + \Sigma H - \eta H\Sigma H = TC$
    (:func:`~sgdtemp.theory.lyapunov.lyapunov_discrete`); SDE: $H\Sigma + \Sigma H = TC$. Equal
    $T$ means equal SDE, so any difference between the learning rates is the failure of
    temperature invariance; in 1-D the ratio is $1/(1 - \eta h/2)$.

    Args:
        H: symmetric positive definite Hessian, ``(d, d)`` or a scalar.
        C: per-example gradient covariance, same shape.
        temperature: $T > 0$.
        lrs: learning rates $> 0$, ``(K,)``.

    Returns:
        The :class:`DiscreteCovariances`.

    Raises:
        UserError: on malformed ``H`` or ``C``, $T \le 0$ or a non-positive learning rate.

    Example:
        >>> tab = discrete_time_covariances(4.0, 1.0, 0.01, [0.01, 0.25, 0.5])
        >>> tab.trace_ratio.round(3).tolist(), tab.lr_lambda_max.tolist()
        ([1.02, 2.0, nan], [0.04, 1.0, 2.0])
    """
    h = np.atleast_2d(np.asarray(H, dtype=np.float64))
    c = np.atleast_2d(np.asarray(C, dtype=np.float64))
    sde = np.atleast_2d(np.asarray(lyapunov_continuous(h, c, temperature)))
    lam_max = float(np.linalg.eigvalsh(h)[-1])
    lr = np.atleast_1d(np.asarray(lrs, dtype=np.float64))
    for v in lr:
        require_positive("lr", float(v))
    sgd = np.full((lr.size, *sde.shape), np.nan)
    for k, eta in enumerate(lr):
        if eta * lam_max < 2.0:
            sgd[k] = np.atleast_2d(np.asarray(lyapunov_discrete(h, c, temperature, float(eta))))
    ratio = np.trace(sgd, axis1=1, axis2=2) / np.trace(sde)
    return DiscreteCovariances(
        temperature=float(temperature),
        lrs=lr,
        lr_lambda_max=lr * lam_max,
        sgd=sgd,
        sde=sde,
        trace_ratio=ratio,
    )
