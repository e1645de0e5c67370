"""Linear-operator plumbing shared by the curvature operators and estimators.

An *operator* here is anything with a ``shape`` ``(d, d)`` and a matrix product ``op @ x`` that
accepts a vector ``(d,)`` or a matrix of columns ``(d, k)``: a dense :class:`torch.Tensor`, one of
the model operators of this package, or a user object. Estimators only use these two things (plus
``dtype`` and ``device`` when the object has them), so they can be tested on matrices with known
spectra.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from sgdtemp.errors import UserError

__all__ = [
    "DEFAULT_SEED",
    "default_generator",
    "LinearOperatorLike",
    "SupportsQuadraticForms",
    "DampedOperator",
    "operator_dim",
    "operator_dtype_device",
    "quadratic_forms",
]


#: The seed of an estimator called without a generator: such a call draws the same probes and
#: start vectors every time (results never depend on torch's global random state).
DEFAULT_SEED = 0


def default_generator(
    generator: torch.Generator | None, device: torch.device | str | None = None
) -> torch.Generator:
    """``generator``, or a fresh one on ``device`` seeded with :data:`DEFAULT_SEED`.

    Example:
        >>> a = torch.randn(3, generator=default_generator(None))
        >>> torch.equal(a, torch.randn(3, generator=default_generator(None)))
        True
    """
    if generator is not None:
        return generator
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(DEFAULT_SEED)


@runtime_checkable
class LinearOperatorLike(Protocol):
    """A square linear operator: ``shape == (d, d)`` and ``op @ x``.

    ``x`` is a vector ``(d,)`` or a matrix of columns ``(d, k)``.
    """

    @property
    def shape(self) -> Any:
        """``(d, d)``."""
        ...

    def __matmul__(self, x: Tensor) -> Tensor:
        """Apply the operator to a vector ``(d,)`` or to the columns of ``(d, k)``."""
        ...


@runtime_checkable
class SupportsQuadraticForms(Protocol):
    r"""An operator that computes $z_j^\top A z_j$ for columns $z_j$ more cheaply than ``A @ Z``."""

    def quadratic_forms(self, z: Tensor) -> Tensor:
        """``(d, m) -> (m,)``: the quadratic form of each column."""
        ...


def quadratic_forms(op: LinearOperatorLike, z: Tensor) -> Tensor:
    r"""$z_j^\top A z_j$ for the columns of ``z`` ``(d, m)``, returned as ``(m,)``.

    Uses the operator's own ``quadratic_forms`` when it declares one (see
    :class:`SupportsQuadraticForms`), else one product ``op @ z``.

    Example:
        >>> quadratic_forms(torch.diag(torch.tensor([1.0, 2.0])), torch.eye(2))
        tensor([1., 2.])
    """
    if isinstance(op, SupportsQuadraticForms):
        return op.quadratic_forms(z)
    return (z * (op @ z)).sum(dim=0)


def operator_dim(op: LinearOperatorLike) -> int:
    """The size ``d`` of a square operator.

    Raises:
        UserError: if the operator is not square.

    Example:
        >>> operator_dim(torch.eye(3))
        3
    """
    shape = tuple(op.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise UserError(f"operator must be square (d, d), got shape {shape}")
    return int(shape[0])


def operator_dtype_device(op: LinearOperatorLike) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of probe vectors for ``op``.

    Taken from the operator's ``dtype`` and ``device`` attributes when it has them (tensors and the
    operators of this package do), else the default dtype on the CPU.
    """
    dtype = getattr(op, "dtype", None)
    device = getattr(op, "device", None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return dtype, torch.device(device) if device is not None else torch.device("cpu")


class DampedOperator:
    r"""The operator $A + \delta I$ for a square operator $A$ and a scalar damping $\delta$.

    Args:
        op: the operator $A$, ``(d, d)``.
        damping: $\delta$.

    Example:
        >>> damped = DampedOperator(torch.eye(2), 0.5)
        >>> damped @ torch.ones(2)
        tensor([1.5000, 1.5000])
    """

    def __init__(self, op: LinearOperatorLike, damping: float) -> None:
        self.op = op
        self.damping = float(damping)
        d = operator_dim(op)
        self.shape = (d, d)
        self.dtype, self.device = operator_dtype_device(op)

    def __matmul__(self, x: Tensor) -> Tensor:
        out = self.op @ x
        return out + self.damping * x if self.damping != 0.0 else out
