"""What the monitor checks when it is attached: options, the probe, the optimizer's parameters.

Every mistake here is a one-line :class:`~sgdtemp.errors.UserError` before training goes on: a
probe the model or the loss cannot take, an optimizer holding tensors that are not the model's
trainable parameters, options out of range. It also decides how per-example gradients are
computed: ``torch.func.vmap`` when the model allows it, else micro-batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from sgdtemp.curvature import ModelLoss
from sgdtemp.errors import UserError
from sgdtemp.monitor.noise_scale import MIN_UNITS

__all__ = ["MICRO_UNITS", "check_options", "check_probe", "first_line", "map_groups", "unit_size"]

#: units of a micro-batch estimate when per-example gradients are unavailable
MICRO_UNITS = 16


def first_line(err: BaseException) -> str:
    """``"Type: first line of the message"`` of an exception."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def check_options(
    every: int | None,
    budget: float,
    batch_size: int | None,
    log_every: int,
    batch_factor: float,
    jump_factor: float,
    lanczos_iters: int,
    lanczos_tol: float,
) -> None:
    """Raise a one-line error for an option out of range."""
    if every is not None and (isinstance(every, bool) or not isinstance(every, int)):
        raise UserError(f"every must be a positive integer or None, got {every!r}")
    if every is not None and every < 1:
        raise UserError(f"every must be a positive integer or None, got {every}")
    if not 0.0 < budget < 1.0:
        raise UserError(f"budget must be a fraction in (0, 1), got {budget}")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch_size must be positive, got {batch_size}")
    if log_every < 1:
        raise UserError(f"log_every must be positive, got {log_every}")
    if not batch_factor > 1.0 or not jump_factor > 1.0:
        raise UserError("batch_factor and jump_factor must be greater than 1")
    if lanczos_iters < 1 or not 0 < lanczos_tol < 1:
        raise UserError("lanczos_iters must be >= 1 and lanczos_tol in (0, 1)")


def check_probe(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], probe: Any
) -> tuple[Tensor, Tensor]:
    """The probe ``(x, y)``, after running the loss on two of its examples (in eval mode)."""
    if not (isinstance(probe, tuple | list) and len(probe) == 2):
        raise UserError("probe must be a pair (x, y) of tensors")
    x, y = probe
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise UserError("probe must be a pair (x, y) of tensors")
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise UserError(
            f"probe x and y must share their first (example) axis, got shapes {tuple(x.shape)} "
            f"and {tuple(y.shape)}"
        )
    if x.shape[0] < 2 * MIN_UNITS:
        raise UserError(
            f"the probe needs at least {2 * MIN_UNITS} examples for a standard error, got "
            f"{x.shape[0]} (64 to 512 is typical)"
        )
    first = next(iter(model.parameters()), None)
    if first is None:
        raise UserError("the model has no parameters")
    xs = x[:2].to(first.device)
    if xs.is_floating_point():
        xs = xs.to(first.dtype)
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            loss = loss_fn(model(xs), y[:2].to(first.device))
    except Exception as err:  # any failure of the user's model on the probe
        raise UserError(
            f"the probe does not fit the model or the loss ({first_line(err)})"
        ) from err
    finally:
        for m, flag in flags:
            m.training = flag
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise UserError("loss_fn must return a scalar tensor (the mean loss of its batch)")
    return x, y


def map_groups(model: nn.Module, names: list[str], groups: list[list[Tensor]]) -> list[int]:
    """Optimizer group of each trainable parameter ``names`` of ``model`` (-1: not optimized).

    Raises:
        UserError: when the optimizer holds tensors that are not trainable model parameters.
    """
    index = {id(p): i for i, params in enumerate(groups) for p in params}
    named = dict(model.named_parameters())
    mine = {id(named[n]) for n in names}
    stray = [p for params in groups for p in params if id(p) not in mine]
    if stray:
        raise UserError(
            f"the optimizer holds {len(stray)} tensors that are not trainable parameters of "
            "the model; pass the model the optimizer trains"
        )
    return [index.get(id(named[n]), -1) for n in names]


def unit_size(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    per_example: bool | None,
) -> int:
    """1 when ``vmap`` per-example gradients work (tried on two examples), else a micro-batch.

    Raises:
        UserError: with ``per_example=True`` on a model ``vmap`` cannot run.
    """
    micro = max(1, x.shape[0] // MICRO_UNITS)
    if per_example is False:
        return micro
    try:
        small = ModelLoss(model, loss_fn, (x[:2], y[:2]), taylor=False)
        list(small.per_example_grads(small.flat_params()))
    except Exception as err:  # vmap cannot run this model: fall back to micro-batches
        if per_example:
            raise UserError(
                f"per-example gradients (torch.func.vmap) fail on this model "
                f"({first_line(err)}); use per_example=None for micro-batches"
            ) from err
        return micro
    return 1
