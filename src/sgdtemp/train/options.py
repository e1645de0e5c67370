r"""How to train: one frozen options object shared by ``fit``, ``fit_many``, the CLI and the sweeps.

Example:
    >>> o = FitOptions(lr=0.064, batch_size=64, epochs=5, momentum=0.9)
    >>> round(o.temperature, 12)  # lr / (B (1 - momentum))
    0.01
    >>> FitOptions(lr=0.05, batch_size=0)
    Traceback (most recent call last):
    ...
    sgdtemp.errors.UserError: batch_size must be a positive number, got 0
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sgdtemp.errors import UserError, require_positive
from sgdtemp.theory.temperature import temperature
from sgdtemp.train.stationarity import StationarityRule

__all__ = ["FitOptions", "StationaryOptions"]


def _integer(name: str, value: Any, least: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise UserError(f"{name} must be an integer >= {least}, got {value!r}")


@dataclass(frozen=True)
class StationaryOptions:
    r"""Train until stationary instead of for a fixed number of epochs.

    The rule, the window and the expectations are described in
    :mod:`sgdtemp.train.stationary_run`.

    Attributes:
        max_sde_time: the budget in SDE time $t = 	ext{steps}\cdot\eta$ (rounded up to whole
            epochs); iso-temperature runs thus get equal budgets.
        probe_every: SDE time between samples of the train objective $F$ (default: the budget
            over 256).
        probe_examples: training examples (the first ones) $F$ averages over.
        window_fraction: the averaging window after the detection at $t_s$ lasts this times
            $t_s$.
        reservoir: iterates kept (uniformly) from the window, for the expectations and the
            covariance-curvature.
        expectation_examples: images of each evaluation set the stationary expectations average
            over (0: all).
        rule: the stopping rule's parameters
            (:class:`~sgdtemp.train.stationarity.StationarityRule`).

    Raises:
        UserError: for a value out of range (at construction).
    """

    max_sde_time: float
    probe_every: float | None = None
    probe_examples: int = 1024
    window_fraction: float = 0.5
    reservoir: int = 8
    expectation_examples: int = 2000
    rule: StationarityRule = field(default_factory=StationarityRule)

    def __post_init__(self) -> None:
        require_positive("max_sde_time", self.max_sde_time)
        if not math.isfinite(self.max_sde_time):
            raise UserError(f"max_sde_time must be finite, got {self.max_sde_time}")
        if self.probe_every is not None:
            require_positive("probe_every", self.probe_every)
            if self.probe_every > self.max_sde_time:
                raise UserError(
                    f"probe_every {self.probe_every} exceeds max_sde_time {self.max_sde_time}"
                )
        _integer("probe_examples", self.probe_examples, 1)
        _integer("reservoir", self.reservoir, 2)
        _integer("expectation_examples", self.expectation_examples, 0)
        require_positive("window_fraction", self.window_fraction)

    @property
    def default_probe(self) -> float:
        """The default SDE time between probes: the budget over 256."""
        return self.max_sde_time / 256

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON values (the rule's parameters included)."""
        out = asdict(self)
        out["rule"] = {k: v for k, v in out["rule"].items() if k != "quantile"}
        return out


@dataclass(frozen=True)
class FitOptions:
    r"""Everything about one training run but the model, the data and the callbacks.

    The update is plain SGD at a constant learning rate on cross-entropy with heavy-ball momentum
    and L2 weight decay (see :mod:`sgdtemp.train.trainer`), so the temperature is
    $T = \eta/(B(1-\beta))$.

    Attributes:
        lr: learning rate $\eta > 0$, constant.
        batch_size: minibatch size $1 \le B \le N$.
        epochs: passes over the data ($\lfloor N/B \rfloor$ steps each); 0 only evaluates.
        momentum: heavy-ball momentum $\beta \in [0, 1)$.
        weight_decay: L2 coefficient $\lambda \ge 0$ added to the gradient.
        seed: seed of the data-order generator (and, in ``fit_many`` and the sweeps, of the
            initial weights).
        replacement: draw minibatches with replacement instead of epoch permutations.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        divergence_bound: a minibatch or full-pass training loss above this (or a non-finite
            one) stops the run as ``"diverged"``; default 100 times ``max(initial loss, 1)``.
        eval_batch_size: examples per forward pass during evaluation (default: by device).
        stationary: train until stationary (:class:`StationaryOptions`); ``epochs`` is then
            ignored, the budget being the stationary options' ``max_sde_time``.

    Raises:
        UserError: for an option out of range (at construction, before any work).
    """

    lr: float
    batch_size: int
    epochs: int = 1
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    replacement: bool = False
    device: str = "auto"
    divergence_bound: float | None = None
    eval_batch_size: int | None = None
    stationary: StationaryOptions | None = None

    def __post_init__(self) -> None:
        temperature(self.lr, self.batch_size, self.momentum)  # lr > 0, B > 0, 0 <= momentum < 1
        if not math.isfinite(self.lr):
            raise UserError(f"lr must be a finite number, got {self.lr}")
        _integer("batch_size", self.batch_size, 1)
        _integer("epochs", self.epochs, 0)
        _integer("seed", self.seed, 0)
        wd = self.weight_decay
        if not (isinstance(wd, int | float) and wd >= 0 and math.isfinite(wd)):
            raise UserError(f"weight_decay must be a finite number >= 0, got {wd}")
        if self.divergence_bound is not None:
            require_positive("divergence_bound", self.divergence_bound)
        if self.eval_batch_size is not None:
            _integer("eval_batch_size", self.eval_batch_size, 1)

    @property
    def temperature(self) -> float:
        r"""$T = \eta / (B(1-\beta))$ (:func:`sgdtemp.theory.temperature.temperature`)."""
        return temperature(self.lr, self.batch_size, self.momentum)

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON values."""
        out = asdict(self)
        if self.stationary is not None:
            out["stationary"] = self.stationary.to_dict()
        return out
