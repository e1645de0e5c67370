r"""Local minimizers that stay in the basin: trust-region Newton–CG (Steihaug) and L-BFGS.

Both work on a flat parameter vector with callbacks for the objective, its gradient and (Newton)
Hessian-vector products, and stop on the gradient norm
$\|\nabla F\| \le \max(\texttt{grad\_tol}, \texttt{rel\_grad\_tol}\cdot\|\nabla F(x_0)\|)$.

References:
    T. Steihaug, "The conjugate gradient method and trust regions in large scale optimization",
    SIAM J. Numer. Anal. 20(3), 1983.

    J. Nocedal and S. J. Wright, "Numerical Optimization", 2nd ed., Springer 2006, Alg. 4.1, 7.2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MinimizeResult", "newton_cg_minimize", "lbfgs_minimize", "SOLVERS"]

_TINY = 1e-30  # floor of |F| in the rounding level of the objective

ValueAndGrad = Callable[[Tensor], tuple[float, Tensor]]
Value = Callable[[Tensor], float]
Hvp = Callable[[Tensor, Tensor], Tensor]  # (x (d,), p (d,)) -> H(x) p (d,)
Callback = Callable[[int, float, float], None]  # (iteration, objective, gradient norm)


@dataclass(frozen=True)
class MinimizeResult:
    r"""Outcome of a local minimization.

    Attributes:
        x: the final point ``(d,)``.
        value: the objective there.
        grad_norm: $\|\nabla F\|$ there.
        initial_grad_norm: $\|\nabla F(x_0)\|$.
        converged: whether the gradient criterion was met.
        iterations: outer iterations.
        num_hvps: Hessian-vector products (Newton–CG only).
        num_grads: gradient evaluations.
        message: why it stopped.
    """

    x: Tensor
    value: float
    grad_norm: float
    initial_grad_norm: float
    converged: bool
    iterations: int
    num_hvps: int
    num_grads: int
    message: str


def _dot(a: Tensor, b: Tensor) -> float:
    """Inner product accumulated in float64 (float32 sums over many parameters lose digits)."""
    return float(torch.dot(a.double(), b.double()))


def _to_boundary(z: Tensor, d: Tensor, radius: float) -> float:
    """The tau >= 0 with ||z + tau d|| = radius."""
    a = _dot(d, d)
    b = 2.0 * _dot(z, d)
    c = _dot(z, z) - radius**2
    return (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)


def _steihaug(
    g: Tensor,
    hvp: Callable[[Tensor], Tensor],
    radius: float,
    tol: float,
    max_iters: int,
    deadline: float = math.inf,
) -> tuple[Tensor, float, int, str]:
    r"""Approximately minimize $m(p) = g^\top p + \frac12 p^\top B p$ over $\|p\| \le \Delta$.

    Returns the step, the model value $m(p)$, the number of products and how it ended.
    """
    z = torch.zeros_like(g)
    bz = torch.zeros_like(g)
    r = g.clone()
    d = -r
    rr = _dot(r, r)
    n = 0

    def model_value(p: Tensor, bp: Tensor) -> float:
        return _dot(g, p) + 0.5 * _dot(p, bp)

    for _ in range(max_iters):
        bd = hvp(d)
        n += 1
        dbd = _dot(d, bd)
        if dbd <= 0:
            tau = _to_boundary(z, d, radius)
            p, bp = z + tau * d, bz + tau * bd
            return p, model_value(p, bp), n, "negative curvature"
        alpha = rr / dbd
        z_new = z + alpha * d
        if float(torch.linalg.vector_norm(z_new)) >= radius:
            tau = _to_boundary(z, d, radius)
            p, bp = z + tau * d, bz + tau * bd
            return p, model_value(p, bp), n, "boundary"
        bz = bz + alpha * bd
        z = z_new
        r = r + alpha * bd
        rr_new = _dot(r, r)
        if math.sqrt(rr_new) <= tol:
            return z, model_value(z, bz), n, "converged"
        d = -r + (rr_new / rr) * d
        rr = rr_new
        if time.perf_counter() > deadline:
            return z, model_value(z, bz), n, "time limit"
    return z, model_value(z, bz), n, "max_cg_iters"


def newton_cg_minimize(
    value_and_grad: ValueAndGrad,
    value: Value,
    hvp: Hvp,
    x0: Tensor,
    *,
    grad_tol: float = 1e-6,
    rel_grad_tol: float = 1e-4,
    max_iters: int = 100,
    max_cg_iters: int = 50,
    initial_radius: float | None = None,
    max_radius: float = math.inf,
    max_seconds: float = math.inf,
    callback: Callback | None = None,
) -> MinimizeResult:
    r"""Trust-region Newton–CG from ``x0``.

    Each iteration solves the trust-region subproblem with Steihaug's truncated CG (forcing term
    $\min(0.5, \sqrt{\|g\|})\|g\|$), which follows negative curvature only up to the radius, so the
    iterates stay in the neighbourhood the quadratic model describes. Steps are accepted when the
    actual decrease is at least $10^{-4}$ of the predicted one; when the predicted decrease falls
    below the objective's rounding level $100\,\epsilon|F|$, a step is accepted if it lowers the
    gradient norm. The descent gives up ("trust radius collapsed") only when the radius falls below
    $10\,\epsilon\max(\|x\|, 1)$, where a step no longer changes $x$. Inner products are
    accumulated in float64, so float32 parameters do not turn CG's curvature tests into noise.

    Args:
        value_and_grad: ``x -> (F(x), grad F(x))``.
        value: ``x -> F(x)``.
        hvp: ``(x, p) -> H(x) p``.
        x0: start ``(d,)``.
        grad_tol: absolute gradient-norm tolerance.
        rel_grad_tol: tolerance relative to the initial gradient norm.
        max_iters: outer iterations.
        max_cg_iters: CG iterations per subproblem (a truncated Newton step).
        initial_radius: first trust radius (default $0.1\max(\|x_0\|, 1)$).
        max_radius: largest trust radius.
        max_seconds: stop (unconverged, ``message="time limit"``) after this wall time.
        callback: called after every iteration with (iteration, objective, gradient norm).

    Returns:
        The result; ``converged`` tells whether the gradient criterion was met.
    """
    deadline = time.perf_counter() + max_seconds
    x = x0.clone()
    f, g = value_and_grad(x)
    gnorm0 = gnorm = float(torch.linalg.vector_norm(g))
    target = max(grad_tol, rel_grad_tol * gnorm0)
    radius = initial_radius or 0.1 * max(float(torch.linalg.vector_norm(x0)), 1.0)
    radius = min(radius, max_radius)
    eps = torch.finfo(x.dtype).eps
    hvps = grads = 0
    grads = 1
    it = 0
    message = "max_iters"
    for it in range(1, max_iters + 1):
        if gnorm <= target:
            message = "converged"
            it -= 1
            break
        forcing = min(0.5, math.sqrt(gnorm)) * gnorm

        def product(d: Tensor, x: Tensor = x) -> Tensor:
            return hvp(x, d)

        p, m_p, n, _ = _steihaug(g, product, radius, forcing, max_cg_iters, deadline)
        hvps += n
        pnorm = float(torch.linalg.vector_norm(p))
        predicted = -m_p
        trial = x + p
        if predicted <= 100 * eps * max(abs(f), _TINY):
            f_new, g_new = value_and_grad(trial)
            grads += 1
            accept = float(torch.linalg.vector_norm(g_new)) < gnorm
            rho = 1.0 if accept else 0.0
        else:
            f_new = value(trial)
            rho = (f - f_new) / predicted
            accept = rho > 1e-4
            g_new = None
        if rho < 0.25:
            radius = 0.25 * pnorm
        elif rho > 0.75 and pnorm >= 0.99 * radius:
            radius = min(2.0 * radius, max_radius)
        if accept:
            x = trial
            if g_new is None:
                f_new, g_new = value_and_grad(x)
                grads += 1
            f, g = f_new, g_new
            gnorm = float(torch.linalg.vector_norm(g))
        if callback is not None:
            callback(it, f, gnorm)
        if radius < 10 * eps * max(float(torch.linalg.vector_norm(x)), 1.0):
            message = "trust radius collapsed"
            break
        if time.perf_counter() > deadline and gnorm > target:
            message = "time limit"
            break
    else:
        if gnorm <= target:
            message = "converged"
    return MinimizeResult(
        x=x,
        value=f,
        grad_norm=gnorm,
        initial_grad_norm=gnorm0,
        converged=gnorm <= target,
        iterations=it,
        num_hvps=hvps,
        num_grads=grads,
        message=message,
    )


def lbfgs_minimize(
    value_and_grad: ValueAndGrad,
    value: Value,
    hvp: Hvp | None,
    x0: Tensor,
    *,
    grad_tol: float = 1e-6,
    rel_grad_tol: float = 1e-4,
    max_iters: int = 500,
    history: int = 20,
    max_seconds: float = math.inf,
    callback: Callback | None = None,
    **_: object,
) -> MinimizeResult:
    """L-BFGS with a strong-Wolfe line search (``torch.optim.LBFGS``) from ``x0``.

    Same stopping rule, time limit and callback as :func:`newton_cg_minimize`; ``hvp`` is
    ignored. The callback runs at every objective evaluation (iteration = evaluation count).
    """
    deadline = time.perf_counter() + max_seconds
    f0, g0 = value_and_grad(x0)
    gnorm0 = float(torch.linalg.vector_norm(g0))
    target = max(grad_tol, rel_grad_tol * gnorm0)
    x = x0.clone().requires_grad_(True)
    count = {"grads": 1}
    opt = torch.optim.LBFGS(
        [x],
        lr=1.0,
        max_iter=max_iters,
        max_eval=2 * max_iters,
        tolerance_grad=target / math.sqrt(x.numel()),  # LBFGS tests the max-norm
        tolerance_change=0.0,
        history_size=history,
        line_search_fn="strong_wolfe",
    )

    class _TimeUp(Exception):
        pass

    best: dict[str, object] = {"f": math.inf, "x": x0.clone()}

    def closure() -> Tensor:
        if time.perf_counter() > deadline:
            raise _TimeUp
        f, g = value_and_grad(x.detach())
        count["grads"] += 1
        if f < best["f"]:  # type: ignore[operator]
            best["f"], best["x"] = f, x.detach().clone()
        if callback is not None:
            callback(count["grads"], f, float(torch.linalg.vector_norm(g)))
        x.grad = g
        return torch.tensor(f, dtype=x.dtype)

    timed_out = False
    try:
        opt.step(closure)
    except _TimeUp:  # stopped mid line search: return the best point evaluated
        timed_out = True
    state = opt.state[x]
    xf = best["x"] if timed_out else x.detach()
    assert isinstance(xf, Tensor)
    f, g = value_and_grad(xf)
    gnorm = float(torch.linalg.vector_norm(g))
    return MinimizeResult(
        x=xf,
        value=f,
        grad_norm=gnorm,
        initial_grad_norm=gnorm0,
        converged=gnorm <= target,
        iterations=int(state.get("n_iter", 0)),
        num_hvps=0,
        num_grads=count["grads"] + 1,
        message="converged" if gnorm <= target else ("time limit" if timed_out else "stopped"),
    )


SOLVERS: dict[str, Callable[..., MinimizeResult]] = {
    "newton_cg": newton_cg_minimize,
    "lbfgs": lbfgs_minimize,
}
