"""The uniform cell-centred grid that the 2-D Fokker–Planck solver works on."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sgdtemp.errors import UserError

__all__ = ["Grid2D", "MIN_GRID", "FloatArray", "IntArray", "PointFn"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
PointFn = Callable[[FloatArray], FloatArray]

MIN_GRID = 8  # fewest cells per axis


@dataclass(frozen=True)
class Grid2D:
    """A uniform cell-centred grid on ``[xmin, xmax] x [ymin, ymax]`` with ``nx x ny`` cells.

    Arrays on the grid have shape ``(nx, ny)`` (``ij`` indexing: axis 0 is ``x``); the flat
    index of cell ``(i, j)`` is ``i * ny + j``.

    Raises:
        UserError: on an empty or non-finite domain, or fewer than ``MIN_GRID`` cells per axis.

    Example:
        >>> grid = Grid2D(-1.0, 1.0, 0.0, 4.0, 8, 8)
        >>> grid.x[:2], grid.hy
        (array([-0.875, -0.625]), 0.5)
    """

    xmin: float
    xmax: float
    ymin: float
    ymax: float
    nx: int
    ny: int

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.xmin, self.xmax, self.ymin, self.ymax)):
            raise UserError("the grid's domain must be finite")
        if not (self.xmax > self.xmin and self.ymax > self.ymin):
            raise UserError(
                f"empty domain [{self.xmin}, {self.xmax}] x [{self.ymin}, {self.ymax}]; "
                "give xmin < xmax and ymin < ymax"
            )
        if min(self.nx, self.ny) < MIN_GRID:
            raise UserError(
                f"grid {self.nx} x {self.ny} is too small; use at least {MIN_GRID} cells per axis"
            )

    @property
    def hx(self) -> float:
        """Cell width in ``x``."""
        return (self.xmax - self.xmin) / self.nx

    @property
    def hy(self) -> float:
        """Cell width in ``y``."""
        return (self.ymax - self.ymin) / self.ny

    @property
    def cell_area(self) -> float:
        """``hx * hy``."""
        return self.hx * self.hy

    @property
    def x(self) -> FloatArray:
        """Cell centres in ``x``, ``(nx,)``."""
        return np.asarray(self.xmin + (np.arange(self.nx) + 0.5) * self.hx, dtype=np.float64)

    @property
    def y(self) -> FloatArray:
        """Cell centres in ``y``, ``(ny,)``."""
        return np.asarray(self.ymin + (np.arange(self.ny) + 0.5) * self.hy, dtype=np.float64)

    def points(self) -> FloatArray:
        """Cell centres, ``(nx, ny, 2)``."""
        xx, yy = np.meshgrid(self.x, self.y, indexing="ij")
        return np.stack([xx, yy], axis=-1)

    def cell_of(self, point: FloatArray) -> tuple[int, int] | None:
        """Index ``(i, j)`` of the cell containing ``point`` ``(2,)``, or None if outside."""
        i = math.floor((float(point[0]) - self.xmin) / self.hx)
        j = math.floor((float(point[1]) - self.ymin) / self.hy)
        if 0 <= i < self.nx and 0 <= j < self.ny:
            return i, j
        return None
