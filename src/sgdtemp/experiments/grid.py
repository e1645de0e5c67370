"""The grid of a sweep: η × B × seed cells, along iso-temperature lines or explicit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.theory.temperature import lr_for_temperature, temperature

__all__ = ["RunConfig", "iso_temperature_grid", "product_grid"]


@dataclass(frozen=True)
class RunConfig:
    """The training options of one cell of the grid (one seed).

    Attributes:
        lr: learning rate η.
        batch_size: minibatch size B.
        seed: the run's seed (initialisation and minibatch order).
        epochs: passes over the training set.
        momentum: heavy-ball momentum β.
        weight_decay: L2 weight decay.

    Example:
        >>> RunConfig(lr=0.1, batch_size=32, seed=0, epochs=1).temperature
        0.003125
    """

    lr: float
    batch_size: int
    seed: int
    epochs: int
    momentum: float = 0.0
    weight_decay: float = 0.0

    @property
    def temperature(self) -> float:
        """``lr / (batch_size (1 − momentum))``."""
        return temperature(self.lr, self.batch_size, self.momentum)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def _check_grid_args(batch_sizes: Sequence[int], seeds: Sequence[int], epochs: int) -> None:
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise UserError(f"batch sizes must be positive integers, got {b!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise UserError(f"seeds must be non-negative integers, got {s!r}")
    if not seeds:
        raise UserError("seeds must not be empty")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise UserError(f"epochs must be a positive integer, got {epochs!r}")


def iso_temperature_grid(
    temperatures: Sequence[float],
    batch_sizes: Sequence[int],
    *,
    epochs: int,
    seeds: Sequence[int] = (0,),
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> list[RunConfig]:
    """Runs along iso-temperature lines: for each T and B, ``lr = T·B·(1 − momentum)``.

    Order: temperature, then batch size, then seed.

    Example:
        >>> [(c.lr, c.batch_size) for c in iso_temperature_grid([1e-3], [32, 64], epochs=1)]
        [(0.032, 32), (0.064, 64)]
    """
    _check_grid_args(batch_sizes, seeds, epochs)
    return [
        RunConfig(lr_for_temperature(t, b, momentum), b, s, epochs, momentum, weight_decay)
        for t in temperatures
        for b in batch_sizes
        for s in seeds
    ]


def product_grid(
    lrs: Sequence[float],
    batch_sizes: Sequence[int],
    *,
    epochs: int,
    seeds: Sequence[int] = (0,),
    momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> list[RunConfig]:
    """Runs on the explicit grid ``lrs × batch_sizes × seeds`` (in that order).

    Example:
        >>> len(product_grid([0.1, 0.2], [32, 64], epochs=1, seeds=[0, 1]))
        8
    """
    _check_grid_args(batch_sizes, seeds, epochs)
    for lr in lrs:
        temperature(lr, 1, momentum)  # validates lr and momentum
    return [
        RunConfig(lr, b, s, epochs, momentum, weight_decay)
        for lr in lrs
        for b in batch_sizes
        for s in seeds
    ]
