r"""Lanczos iteration with full reorthogonalization, top eigenpairs and spectral density (SLQ).

All functions take any symmetric operator with ``shape`` and ``@`` (a dense tensor included).
Vectors are kept in the operator's dtype; the small tridiagonal problems are solved in float64 by
LAPACK's tridiagonal solver (``scipy.linalg.eigh_tridiagonal``), which avoids the thread start-up
cost of a dense ``torch.linalg.eigh`` on a tiny matrix.

References:
    C. Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
    differential and integral operators", J. Res. Nat. Bur. Standards 45, 1950.

    G. H. Golub and G. Meurant, "Matrices, Moments and Quadrature with Applications", Princeton
    University Press, 2010 (stochastic Lanczos quadrature).

    B. Ghorbani, S. Krishnan, Y. Xiao, "An Investigation into Neural Net Optimization via Hessian
    Eigenvalue Density", ICML 2019 (SLQ for network Hessians).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from sgdtemp.curvature._base import (
    LinearOperatorLike,
    default_generator,
    operator_dim,
    operator_dtype_device,
)
from sgdtemp.curvature.trace import random_probes
from sgdtemp.errors import UserError

__all__ = [
    "LanczosResult",
    "Eigenpairs",
    "SpectralDensity",
    "lanczos",
    "top_eigenvalues",
    "spectral_density",
]


@dataclass(frozen=True)
class LanczosResult:
    r"""A Lanczos decomposition $A Q = Q T + \beta_m q_{m+1} e_m^\top$.

    Attributes:
        alphas: diagonal of $T$, ``(m,)`` (float64).
        betas: off-diagonal of $T$, ``(m - 1,)`` (float64); a zero marks a restart after an
            invariant subspace was found.
        basis: orthonormal Lanczos vectors $Q$ as columns, ``(d, m)``.
        last_beta: $\beta_m$, the norm of the residual after the last step (0 when the Krylov space
            is invariant).
    """

    alphas: Tensor
    betas: Tensor
    basis: Tensor
    last_beta: float

    def tridiagonal(self) -> Tensor:
        """$T$ as a dense ``(m, m)`` float64 matrix."""
        return torch.diag(self.alphas) + torch.diag(self.betas, 1) + torch.diag(self.betas, -1)

    def eigh(self) -> tuple[Tensor, Tensor]:
        """Eigenvalues (ascending, ``(m,)``) and eigenvectors (columns, ``(m, m)``) of $T$."""
        return _eigh_tridiagonal(self.alphas, self.betas)


def _eigh_tridiagonal(alphas: Tensor, betas: Tensor) -> tuple[Tensor, Tensor]:
    if alphas.numel() == 1:
        return alphas.clone(), torch.ones(1, 1, dtype=torch.float64)
    theta, s = scipy.linalg.eigh_tridiagonal(
        np.asarray(alphas, dtype=np.float64), np.asarray(betas, dtype=np.float64)
    )
    return torch.from_numpy(theta), torch.from_numpy(s)


@dataclass(frozen=True)
class Eigenpairs:
    r"""Leading eigenpairs of a symmetric operator.

    Attributes:
        values: eigenvalues in descending order, ``(k,)``.
        vectors: unit eigenvectors as columns, ``(d, k)``; column ``i`` belongs to ``values[i]``.
        residual_norms: Ritz residual bounds $\|A y_i - \theta_i y_i\|$, ``(k,)``.
        num_matvecs: operator-vector products spent.
        converged: whether every residual met the tolerance.
    """

    values: Tensor
    vectors: Tensor
    residual_norms: Tensor
    num_matvecs: int
    converged: bool


class _Lanczos:
    """Incremental Lanczos process with full (twice-applied) Gram–Schmidt reorthogonalization."""

    def __init__(
        self,
        op: LinearOperatorLike,
        v0: Tensor | None,
        generator: torch.Generator | None,
        *,
        restart: bool,
    ) -> None:
        self.op = op
        self.dim = operator_dim(op)
        self.dtype, self.device = operator_dtype_device(op)
        self.generator = default_generator(generator, self.device)
        self.restart = restart
        start = (
            self._random_vector()
            if v0 is None
            else v0.to(device=self.device, dtype=self.dtype).reshape(-1)
        )
        if start.numel() != self.dim:
            raise UserError(f"start vector must have {self.dim} entries, got {start.numel()}")
        norm = torch.linalg.vector_norm(start)
        if float(norm) == 0.0:
            raise UserError("start vector must be non-zero")
        self._basis = torch.empty(self.dim, 16, dtype=self.dtype, device=self.device)
        self._basis[:, 0] = start / norm
        self.size = 1  # number of basis vectors stored
        self.alphas: list[float] = []
        self.betas: list[float] = []  # beta_j couples q_j and q_{j+1}
        self.matvecs = 0
        self.exhausted = False
        self.scale = 0.0

    def _random_vector(self) -> Tensor:
        return random_probes(
            self.dim,
            1,
            distribution="normal",
            dtype=self.dtype,
            device=self.device,
            generator=self.generator,
        )[:, 0]

    def _orthogonalize(self, w: Tensor, basis: Tensor) -> Tensor:
        for _ in range(2):  # "twice is enough" (Kahan, Parlett)
            w = w - basis @ (basis.T @ w)
        return w

    @property
    def basis(self) -> Tensor:
        """The stored orthonormal vectors, ``(d, size)``."""
        return self._basis[:, : self.size]

    def _append(self, w: Tensor) -> None:
        if self.size == self._basis.shape[1]:
            grown = torch.empty(
                self.dim, min(2 * self.size, self.dim + 1), dtype=self.dtype, device=self.device
            )
            grown[:, : self.size] = self._basis
            self._basis = grown
        self._basis[:, self.size] = w
        self.size += 1

    def step(self) -> bool:
        """One Lanczos step; False when no further step is possible."""
        j = len(self.alphas)
        if self.exhausted or j >= self.dim:
            return False
        qj = self._basis[:, j]
        w = (self.op @ qj.unsqueeze(1))[:, 0]
        self.matvecs += 1
        alpha = float(torch.dot(qj, w))
        self.alphas.append(alpha)
        self.scale = max(self.scale, abs(alpha), *(abs(b) for b in self.betas[-1:]))
        if j + 1 >= self.dim:
            self.betas.append(0.0)
            return True
        basis = self.basis  # (d, j+1)
        w = self._orthogonalize(w, basis)
        beta = float(torch.linalg.vector_norm(w))
        tiny = 1e3 * torch.finfo(self.dtype).eps * max(self.scale, 1e-300)
        if beta <= tiny:
            # Invariant subspace: restart with a fresh direction orthogonal to the basis.
            beta = 0.0
            if not self.restart:
                self.betas.append(0.0)
                self.exhausted = True
                return True
            w = self._orthogonalize(self._random_vector(), basis)
            norm = float(torch.linalg.vector_norm(w))
            if norm == 0.0:
                self.betas.append(0.0)
                self.exhausted = True
                return True
            w = w / norm
        else:
            w = w / beta
        self.betas.append(beta)
        self._append(w)
        return True

    def result(self) -> LanczosResult:
        m = len(self.alphas)
        return LanczosResult(
            alphas=torch.tensor(self.alphas, dtype=torch.float64),
            betas=torch.tensor(self.betas[: m - 1], dtype=torch.float64),
            basis=self._basis[:, :m].clone(),
            last_beta=self.betas[m - 1] if len(self.betas) >= m else 0.0,
        )


def lanczos(
    op: LinearOperatorLike,
    num_iters: int,
    *,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> LanczosResult:
    r"""Run ``num_iters`` steps of Lanczos with full reorthogonalization on a symmetric ``op``.

    Builds an orthonormal basis $Q$ of the Krylov space $\mathcal K_m(A, v_0)$ and the
    tridiagonal $T = Q^\top A Q$. When the Krylov space becomes invariant, the process restarts
    with a random direction orthogonal to $Q$ (a zero off-diagonal in $T$), so repeated
    eigenvalues are found too.

    Args:
        op: symmetric operator ``(d, d)``.
        num_iters: number of steps $m$, at most $d$.
        v0: start vector ``(d,)`` (default: a random normal vector).
        generator: source of randomness for the start vector and restarts (default: seeded
            with ``DEFAULT_SEED``).

    Returns:
        The decomposition.

    Raises:
        UserError: if ``num_iters`` is not in ``[1, d]`` or ``v0`` has the wrong size.

    Example:
        >>> A = torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))
        >>> res = lanczos(A, 5, generator=torch.Generator().manual_seed(0))
        >>> torch.linalg.eigvalsh(res.tridiagonal()).round(decimals=6)
        tensor([1., 2., 3., 4., 5.], dtype=torch.float64)
    """
    dim = operator_dim(op)
    if not isinstance(num_iters, int) or not 1 <= num_iters <= dim:
        raise UserError(f"num_iters must be an integer in [1, {dim}], got {num_iters!r}")
    proc = _Lanczos(op, v0, generator, restart=True)
    while len(proc.alphas) < num_iters and proc.step():
        pass
    return proc.result()


def _ritz(proc: _Lanczos, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``k`` Ritz values (descending), their vectors in the Krylov basis, residual bounds."""
    res = proc.result()
    theta, s = res.eigh()
    order = torch.argsort(theta, descending=True)[:k]
    residuals = (res.last_beta * s[-1, order]).abs()
    return theta[order], s[:, order], residuals


def top_eigenvalues(
    op: LinearOperatorLike,
    k: int,
    *,
    tol: float = 1e-4,
    max_iters: int | None = None,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Eigenpairs:
    r"""The ``k`` largest (algebraic) eigenvalues of a symmetric operator and their eigenvectors.

    Lanczos with full reorthogonalization grows the Krylov space until every one of the top-``k``
    Ritz pairs has a residual $\|A y_i - \theta_i y_i\| = |\beta_m s_{m i}|$ below
    ``tol`` times the largest Ritz magnitude, or until ``max_iters`` products. For a symmetric
    matrix the eigenvalue error is at most that residual (and, with a gap, its square over the gap).

    Args:
        op: symmetric operator ``(d, d)``.
        k: number of eigenpairs, $1 \le k \le d$.
        tol: relative residual tolerance.
        max_iters: budget of products (default ``min(d, max(20 k, 100))``).
        v0: start vector ``(d,)`` (default: random). A warm start from a nearby operator's
            eigenvector (a monitor following training) converges in a few products, so with
            ``v0`` convergence is checked after every product from the ``k + 2``-th on.
        generator: source of randomness for the start vector and restarts (default: seeded
            with ``DEFAULT_SEED``).

    Returns:
        Eigenvalues descending with eigenvectors, residuals and a convergence flag.

    Raises:
        UserError: if ``k`` is not in ``[1, d]``.

    Example:
        >>> A = torch.diag(torch.tensor([3.0, -1.0, 2.0, 0.5], dtype=torch.float64))
        >>> pairs = top_eigenvalues(A, 2, generator=torch.Generator().manual_seed(0))
        >>> pairs.values.round(decimals=8)
        tensor([3., 2.], dtype=torch.float64)
    """
    dim = operator_dim(op)
    if not isinstance(k, int) or not 1 <= k <= dim:
        raise UserError(
            f"k must be an integer between 1 and the number of parameters ({dim}), got {k!r}"
        )
    budget = min(dim, max_iters if max_iters is not None else max(20 * k, 100))
    budget = max(budget, k)
    proc = _Lanczos(op, v0, generator, restart=True)
    target = min(budget, max(2 * k + 10, 20) if v0 is None else k + 2)
    while True:
        while len(proc.alphas) < target and proc.step():
            pass
        m = len(proc.alphas)
        theta, s, residuals = _ritz(proc, min(k, m))
        scale = max(float(theta.abs().max()), 1e-300)
        done = m >= dim or bool((residuals <= tol * scale).all())
        if done or m >= budget or proc.exhausted:
            break
        target = min(budget, m + max(k + 10, m // 2) if v0 is None else m + 1)
    basis = proc.basis[:, :m]
    # the Ritz problem is solved on the CPU (scipy); the results live where the operator does
    vectors = basis @ s.to(device=basis.device, dtype=basis.dtype)
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=0, keepdim=True)
    converged = m >= dim or bool((residuals <= tol * scale).all())
    return Eigenpairs(
        values=theta.to(device=basis.device, dtype=basis.dtype),
        vectors=vectors,
        residual_norms=residuals.to(basis.device),
        num_matvecs=proc.matvecs,
        converged=converged and theta.numel() == k,
    )


@dataclass(frozen=True)
class SpectralDensity:
    r"""Stochastic Lanczos quadrature of the density $\frac1d\sum_i\delta(\lambda-\lambda_i)$.

    Probe $p$ gives a Gauss quadrature rule (nodes $\theta_{pj}$, weights $w_{pj}$, summing to 1)
    with $\sum_j w_{pj}\, f(\theta_{pj}) \approx v_p^\top f(A) v_p$, exact for polynomials $f$ of
    degree below $2m$; averaging over unit probes estimates $\frac1d\mathrm{tr} f(A)$.

    Attributes:
        nodes: quadrature nodes ``(num_probes, m)`` (float64).
        weights: quadrature weights ``(num_probes, m)``, each row summing to 1 (float64); rows of
            probes whose Krylov space became invariant early are padded with zero weights.
        dim: the operator size $d$.
        num_matvecs: operator-vector products spent.
    """

    nodes: Tensor
    weights: Tensor
    dim: int
    num_matvecs: int

    def moment(self, power: int) -> float:
        r"""Estimate of $\frac1d\mathrm{tr}(A^p)$: the density's ``power``-th moment."""
        return float((self.weights * self.nodes**power).sum(dim=1).mean())

    def moment_per_probe(self, power: int) -> Tensor:
        """Per-probe quadrature estimates of the ``power``-th moment, ``(num_probes,)``."""
        return (self.weights * self.nodes**power).sum(dim=1)

    def density(self, grid: Tensor, *, sigma: float) -> Tensor:
        r"""The density smoothed by a Gaussian of width ``sigma``, evaluated on ``grid`` ``(g,)``.

        Returns ``(g,)``; it integrates to 1 over the real line.
        """
        grid = grid.to(torch.float64)
        z = (grid[:, None, None] - self.nodes[None]) / sigma  # (g, p, m)
        kernel = torch.exp(-0.5 * z**2) / (sigma * math.sqrt(2 * math.pi))
        return (kernel * self.weights[None]).sum(dim=2).mean(dim=1)


def spectral_density(
    op: LinearOperatorLike,
    *,
    num_iters: int = 64,
    num_probes: int = 4,
    generator: torch.Generator | None = None,
) -> SpectralDensity:
    r"""Spectral density of a symmetric operator by stochastic Lanczos quadrature.

    For each of ``num_probes`` unit Rademacher probes $v$, ``num_iters`` Lanczos steps give
    $T = S\,\mathrm{diag}(\theta)\,S^\top$; the nodes are $\theta_j$ and the weights
    $S_{0j}^2$ (squared first components, as corrected in PyHessian PR #23).

    Args:
        op: symmetric operator ``(d, d)``.
        num_iters: Lanczos steps per probe (capped at $d$).
        num_probes: number of probes.
        generator: source of randomness (default: seeded with ``DEFAULT_SEED``).

    Returns:
        The quadrature nodes and weights.

    Raises:
        UserError: on a non-positive number of steps or probes.

    Example:
        >>> A = torch.diag(torch.tensor([1.0, 1.0, 4.0], dtype=torch.float64))
        >>> sd = spectral_density(A, num_iters=3, num_probes=2, generator=torch.Generator())
        >>> round(sd.moment(1), 6)  # unit Rademacher probes: v^T A v = tr(A)/d here
        2.0
    """
    dim = operator_dim(op)
    if not isinstance(num_iters, int) or num_iters < 1:
        raise UserError(f"num_iters must be a positive integer, got {num_iters!r}")
    if not isinstance(num_probes, int) or num_probes < 1:
        raise UserError(f"num_probes must be a positive integer, got {num_probes!r}")
    m = min(num_iters, dim)
    dtype, device = operator_dtype_device(op)
    generator = default_generator(generator, device)
    probes = random_probes(dim, num_probes, dtype=dtype, device=device, generator=generator)
    nodes = torch.zeros(num_probes, m, dtype=torch.float64)
    weights = torch.zeros(num_probes, m, dtype=torch.float64)
    matvecs = 0
    for p in range(num_probes):
        proc = _Lanczos(op, probes[:, p], generator, restart=False)
        while len(proc.alphas) < m and proc.step():
            pass
        matvecs += proc.matvecs
        theta, s = proc.result().eigh()
        size = theta.numel()
        nodes[p, :size] = theta
        weights[p, :size] = s[0] ** 2
        if size < m:
            nodes[p, size:] = theta[-1]
    return SpectralDensity(nodes=nodes, weights=weights, dim=dim, num_matvecs=matvecs)
