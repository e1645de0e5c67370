r"""What an optimizer says about temperature: lr, momentum, dampening, Nesterov, weight decay.

:func:`read_optimizer` reads the settings of every parameter group at the moment it is called
(so it follows learning-rate and momentum schedulers) from ``torch.optim.SGD`` or from the
project's own :class:`sgdtemp.train.trainer.SGD`. For SGD the temperature is
$T = \eta(1-\tau)/(B(1-\beta))$ (dampening $\tau$; the same for Nesterov), computed by
:func:`sgdtemp.theory.temperature.temperature` with the effective learning rate $\eta(1-\tau)$,
and the stability threshold on $\eta\lambda_{\max}$ is
:func:`sgdtemp.theory.stability.stability_threshold`. Adaptive optimizers (Adam & co) rescale
every coordinate by their own statistics, so no single temperature exists: they are read (their
lr is still logged) and marked "T undefined".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from sgdtemp.errors import UserError
from sgdtemp.theory.stability import effective_lr_factor, stability_threshold
from sgdtemp.theory.temperature import temperature

if TYPE_CHECKING:
    from sgdtemp.train.trainer import SGD

__all__ = ["GroupSettings", "OptimizerSettings", "read_optimizer", "optimizer_param_groups"]


@dataclass(frozen=True)
class GroupSettings:
    r"""One parameter group's settings.

    Attributes:
        lr: learning rate $\eta$.
        momentum: $\beta$ (0 for optimizers without momentum).
        dampening: $\tau$.
        nesterov: Nesterov momentum.
        weight_decay: L2 coefficient added to the gradient.
        num_params: number of scalar parameters in the group.
    """

    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    num_params: int = 0

    def _dynamics(self) -> tuple[float, float, float, bool]:
        return (self.lr, self.momentum, self.dampening, self.nesterov)


@dataclass(frozen=True)
class OptimizerSettings:
    """The settings of every parameter group, read at one step.

    Attributes:
        name: the optimizer's class name.
        is_sgd: whether the update is (momentum) SGD, where the temperature is defined.
        groups: per parameter group, in the optimizer's order.
        note: why the temperature is undefined (``None`` when it is defined).
    """

    name: str
    is_sgd: bool
    groups: tuple[GroupSettings, ...]
    note: str | None = None

    @property
    def moving_groups(self) -> tuple[GroupSettings, ...]:
        """Groups with a non-zero learning rate (the others do not move)."""
        return tuple(g for g in self.groups if g.lr != 0.0)

    @property
    def uniform(self) -> bool:
        """Whether all moving groups share lr, momentum, dampening and Nesterov."""
        return len({g._dynamics() for g in self.moving_groups}) <= 1

    @property
    def lr(self) -> float:
        """The learning rate (the largest one when groups differ)."""
        return max(g.lr for g in self.groups)

    @property
    def reference(self) -> GroupSettings:
        """The group whose settings the scalar fields report: the first moving one."""
        moving = self.moving_groups
        return moving[0] if moving else self.groups[0]

    def why_undefined(self) -> str | None:
        """Why no single temperature exists, or ``None`` when it does."""
        if self.note is not None:
            return self.note
        if not self.uniform:
            return "T undefined: parameter groups differ in lr, momentum, dampening or Nesterov"
        g = self.reference
        if not 0.0 <= g.momentum < 1.0:
            return f"T undefined: momentum {g.momentum} outside [0, 1)"
        if not 0.0 <= g.dampening < 1.0:
            return f"T undefined: dampening {g.dampening} outside [0, 1)"
        if g.lr < 0.0:
            return f"T undefined: negative learning rate {g.lr}"
        return None

    def effective_lr(self) -> float | None:
        r"""$\eta(1-\tau)/(1-\beta)$: the SDE time added by one step (``None`` if undefined)."""
        if self.why_undefined() is not None:
            return None
        g = self.reference
        factor = effective_lr_factor(g.momentum, dampening=g.dampening, nesterov=g.nesterov)
        return g.lr * factor

    def temperature(self, batch_size: float) -> float | None:
        r"""$T = \eta(1-\tau)/(B(1-\beta))$, or ``None`` where it is undefined."""
        if self.why_undefined() is not None:
            return None
        g = self.reference
        if g.lr == 0.0:
            return 0.0
        return temperature(g.lr * (1.0 - g.dampening), batch_size, g.momentum)

    def stability_threshold(self) -> float | None:
        r"""The largest stable $\eta\lambda_{\max}$ (``None`` when undefined or groups differ).

        With per-group learning rates the monitor compares the threshold with the largest
        eigenvalue of the lr-scaled Hessian, so only momentum, dampening and Nesterov must agree.
        """
        if not self.is_sgd:
            return None
        moving = self.moving_groups or self.groups
        if len({(g.momentum, g.dampening, g.nesterov) for g in moving}) != 1:
            return None
        g = moving[0]
        try:
            return stability_threshold(g.momentum, dampening=g.dampening, nesterov=g.nesterov)
        except UserError:
            return None


def _trainer_sgd() -> type[SGD]:
    """The project's trainer SGD class (imported lazily: the trainer imports the monitor)."""
    from sgdtemp.train.trainer import SGD

    return SGD


def _number(group: dict[str, Any], key: str, default: float) -> float:
    value = group.get(key, default)
    if isinstance(value, torch.Tensor):
        return float(value.detach().reshape(-1)[0])
    return float(value)


def optimizer_param_groups(optimizer: Any) -> list[list[torch.Tensor]]:
    """The parameter tensors of each group.

    Raises:
        UserError: for an object that is neither a ``torch.optim`` optimizer nor the trainer's SGD,
            or an optimizer without parameter groups.
    """
    if isinstance(optimizer, _trainer_sgd()):
        groups = [list(optimizer.params)]
    elif isinstance(optimizer, torch.optim.Optimizer):
        groups = [list(g["params"]) for g in optimizer.param_groups]
    else:
        raise UserError(
            f"cannot read an optimizer of type {type(optimizer).__name__}: pass a torch.optim "
            "optimizer or sgdtemp.train.trainer.SGD"
        )
    if not groups or not any(groups):
        raise UserError("the optimizer has no parameter groups (or no parameters); nothing to read")
    return groups


def read_optimizer(optimizer: Any, *, sizes: Sequence[int] | None = None) -> OptimizerSettings:
    """The settings of every parameter group of ``optimizer``, now.

    Args:
        optimizer: ``torch.optim.SGD``, :class:`sgdtemp.train.trainer.SGD`, or any other
            ``torch.optim`` optimizer (read, with the temperature marked undefined).
        sizes: scalar parameters per group, when known (saves counting them at every step).

    Returns:
        The settings.

    Raises:
        UserError: for an object that is not an optimizer or an optimizer without parameters.

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(3))
        >>> s = read_optimizer(torch.optim.SGD([p], lr=0.1, momentum=0.9))
        >>> round(s.temperature(32), 6), round(s.stability_threshold(), 6)
        (0.03125, 3.8)
        >>> read_optimizer(torch.optim.Adam([p])).why_undefined()
        'T undefined for Adam: it rescales every coordinate by its own statistics'
    """
    trainer_sgd = isinstance(optimizer, _trainer_sgd())
    if not trainer_sgd and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer_param_groups(optimizer)  # raises the one-line error
    count = 1 if trainer_sgd else len(optimizer.param_groups)
    if sizes is None or len(sizes) != count:  # groups added since: count again
        sizes = [sum(p.numel() for p in params) for params in optimizer_param_groups(optimizer)]
    if trainer_sgd:
        g = GroupSettings(
            lr=float(optimizer.lr),
            momentum=float(optimizer.momentum),
            weight_decay=float(optimizer.weight_decay),
            num_params=sizes[0],
        )
        return OptimizerSettings("SGD", True, (g,))
    name = type(optimizer).__name__
    raw: Sequence[dict[str, Any]] = optimizer.param_groups
    if isinstance(optimizer, torch.optim.SGD):
        settings = tuple(
            GroupSettings(
                lr=_number(group, "lr", 0.0),
                momentum=_number(group, "momentum", 0.0),
                dampening=_number(group, "dampening", 0.0) if group.get("momentum") else 0.0,
                nesterov=bool(group.get("nesterov", False)),
                weight_decay=_number(group, "weight_decay", 0.0),
                num_params=size,
            )
            for group, size in zip(raw, sizes)
        )
        maximize = any(group.get("maximize", False) for group in raw)
        note = "T undefined: the optimizer maximizes (gradient ascent)" if maximize else None
        return OptimizerSettings(name, not maximize, settings, note)
    settings = tuple(
        GroupSettings(
            lr=_number(group, "lr", 0.0),
            weight_decay=_number(group, "weight_decay", 0.0),
            num_params=size,
        )
        for group, size in zip(raw, sizes)
    )
    note = f"T undefined for {name}: it rescales every coordinate by its own statistics"
    return OptimizerSettings(name, False, settings, note)
