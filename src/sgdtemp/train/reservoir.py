r"""Stationary expectations from a run: a float64 running mean and a uniform reservoir of iterates.

Over a stationary window, :class:`RunningMean` keeps $\bar\theta = \frac1n\sum_{i\le n}\theta_i$
(or the time average of any tensor or scalar, e.g. a loss) in float64 by Welford's update
$\bar x_n = \bar x_{n-1} + (x_n - \bar x_{n-1})/n$, which stays accurate where a float32 sum of
many iterates would lose digits; :class:`Reservoir` keeps a uniform random sample of ``size``
iterates out of all those offered (reservoir sampling, Vitter's Algorithm R: the $i$-th item,
$i > k$, replaces a uniformly chosen slot with probability $k/i$), so every iterate of the window
ends in the sample with the same probability $k/n$, in $O(k\,d)$ memory however long the window.
The iterates $\theta_j$ and the mean $\bar\theta$ feed the covariance-curvature
$\frac12\,\overline{(\theta_j-\bar\theta)^\top\tilde H(\theta_j-\bar\theta)}$ of
:func:`sgdtemp.shift.measure_mechanisms`.

The reservoir draws from its own seeded NumPy generator, so it never disturbs the training's
random stream, and both objects have a :meth:`state_dict` for resuming a run.

Reference:
    J. S. Vitter, "Random sampling with a reservoir", ACM Trans. Math. Softw. 11(1), 1985.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sgdtemp.errors import UserError

__all__ = ["RunningMean", "Reservoir", "ReservoirSample"]


class RunningMean:
    r"""Running mean of tensors (or floats) of a fixed shape, accumulated in float64.

    Example:
        >>> m = RunningMean()
        >>> for x in (1.0, 2.0, 6.0):
        ...     m.update(x)
        >>> m.count, m.value
        (3, 3.0)
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: Tensor | None = None

    def update(self, x: Tensor | float) -> None:
        """Add one observation (its shape must match the first one's).

        Raises:
            UserError: on a shape different from the first observation's.
        """
        if isinstance(x, Tensor):
            value = x.detach().to(dtype=torch.float64)
        else:  # a Python number: straight to float64 (as_tensor would round it to float32)
            value = torch.tensor(float(x), dtype=torch.float64)
        if self._mean is None:
            self._mean = value.clone()
            self.count = 1
            return
        if value.shape != self._mean.shape:
            raise UserError(
                f"running mean: got shape {tuple(value.shape)} after {tuple(self._mean.shape)}"
            )
        self.count += 1
        self._mean += (value.to(self._mean.device) - self._mean) / self.count

    @property
    def mean(self) -> Tensor:
        """The mean so far, float64 (raises before the first update).

        Raises:
            UserError: before any update.
        """
        if self._mean is None:
            raise UserError("running mean: no observation yet")
        return self._mean.clone()

    @property
    def value(self) -> float:
        """The mean of scalar observations as a float."""
        return float(self.mean)

    def state_dict(self) -> dict[str, Any]:
        """The state (count and mean) for resuming."""
        return {"count": self.count, "mean": None if self._mean is None else self._mean.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        self.count = int(state["count"])
        mean = state["mean"]
        self._mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float64).clone()


@dataclass(frozen=True)
class ReservoirSample:
    r"""A uniform sample of the iterates offered to a :class:`Reservoir`.

    Attributes:
        iterates: the kept iterates, ``(k, d)`` in the order of their arrival, dtype of the
            offered tensors; $k = \min(\text{size}, \text{seen})$.
        indices: their positions among all offered iterates (0-based), ``(k,)``, increasing.
        seen: how many iterates were offered.
    """

    iterates: Tensor = field(repr=False)
    indices: Tensor
    seen: int


class Reservoir:
    r"""A uniform random sample of at most ``size`` flat iterates (Vitter's Algorithm R).

    Args:
        size: iterates kept, at least 1.
        seed: seed of the reservoir's own NumPy generator (or pass ``generator``).
        generator: a NumPy generator to draw from instead of ``seed``.

    Raises:
        UserError: on a size below 1 or both/neither of ``seed`` and ``generator``.

    Example:
        >>> res = Reservoir(3, seed=0)
        >>> kept = [res.offer(torch.full((2,), float(i))) for i in range(10)]
        >>> sample = res.sample()
        >>> sample.seen, sample.iterates.shape
        (10, torch.Size([3, 2]))
    """

    def __init__(
        self, size: int, *, seed: int | None = None, generator: np.random.Generator | None = None
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise UserError(f"reservoir size must be an integer >= 1, got {size!r}")
        if (seed is None) == (generator is None):
            raise UserError("reservoir: pass exactly one of seed and generator")
        self.size = size
        self.rng = generator if generator is not None else np.random.default_rng(seed)
        self.seen = 0
        self._slots: Tensor | None = None
        self._index = np.zeros(size, dtype=np.int64)

    def offer(self, theta: Tensor) -> bool:
        """Offer the next iterate ``(d,)``; return whether it was kept (copied).

        Raises:
            UserError: on a shape other than ``(d,)`` of the first iterate.
        """
        theta = theta.detach()
        if theta.ndim != 1:
            raise UserError(f"reservoir iterates must be flat (d,), got {tuple(theta.shape)}")
        if self._slots is None:
            self._slots = theta.new_empty((self.size, theta.shape[0]))
        elif theta.shape[0] != self._slots.shape[1]:
            raise UserError(
                f"reservoir iterates must keep size {self._slots.shape[1]}, got {theta.shape[0]}"
            )
        i = self.seen
        self.seen += 1
        if i < self.size:
            slot = i
        else:
            slot = int(self.rng.integers(0, i + 1))
            if slot >= self.size:
                return False
        self._slots[slot].copy_(theta)
        self._index[slot] = i
        return True

    def sample(self) -> ReservoirSample:
        """The kept iterates, ordered by arrival.

        Raises:
            UserError: before any iterate was offered.
        """
        if self._slots is None:
            raise UserError("reservoir: no iterate offered yet")
        k = min(self.size, self.seen)
        order = np.argsort(self._index[:k], kind="stable")
        return ReservoirSample(
            iterates=self._slots[torch.as_tensor(order)].clone(),
            indices=torch.as_tensor(self._index[:k][order]),
            seen=self.seen,
        )

    def state_dict(self) -> dict[str, Any]:
        """The state (slots, positions, count and the generator's state) for resuming."""
        return {
            "size": self.size,
            "seen": self.seen,
            "slots": None if self._slots is None else self._slots.clone(),
            "index": self._index.copy(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (same ``size``).

        Raises:
            UserError: if the state was saved with another size.
        """
        if int(state["size"]) != self.size:
            raise UserError(f"reservoir state has size {state['size']}, this one {self.size}")
        self.seen = int(state["seen"])
        slots = state["slots"]
        self._slots = None if slots is None else slots.clone()
        self._index = np.asarray(state["index"], dtype=np.int64).copy()
        self.rng.bit_generator.state = state["rng"]
