r"""Evaluation of a model: full passes, epoch records, and the stationary expectations of a run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import vector_to_parameters

from sgdtemp.errors import UserError
from sgdtemp.train.stationary_run import expectations

__all__ = [
    "EVAL_BATCH_SIZES",
    "evaluate",
    "epoch_record",
    "resolve_eval_batch_size",
    "flat_params",
    "half_sq_norm",
    "model_expectations",
]

# Examples per forward pass when evaluating, by device type. On a CPU, evaluation memory grows
# by ~0.2 MB per example of the chunk for the reference CNN (im2col buffers and feature maps)
# while the speed stops improving at ~128 (benchmarks/bench_train.py); GPUs like larger chunks.
EVAL_BATCH_SIZES = {"cpu": 128, "cuda": 1024}


def resolve_eval_batch_size(value: int | None, device: torch.device) -> int:
    """``value``, or the device's default evaluation chunk (:data:`EVAL_BATCH_SIZES`)."""
    if value is None:
        return EVAL_BATCH_SIZES.get(device.type, EVAL_BATCH_SIZES["cuda"])
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"eval_batch_size must be an integer >= 1, got {value!r}")
    return value


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)`` in eval mode (full pass).

    Args:
        model: classifier mapping ``(n, ...)`` to logits ``(n, n_classes)``.
        x: inputs ``(N, ...)`` on the model's device and dtype.
        y: labels ``(N,)`` ``int64``.
        batch_size: examples per forward pass (default: ``EVAL_BATCH_SIZES`` of the device).

    Returns:
        ``{"loss": mean cross-entropy, "acc": fraction correct}``; the model's train/eval mode
        is restored afterwards.

    Example:
        >>> model = nn.Linear(2, 2)
        >>> out = evaluate(model, torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
        >>> sorted(out)
        ['acc', 'loss']
    """
    batch_size = resolve_eval_batch_size(batch_size, x.device)
    was_training = model.training
    model.eval()
    n = int(y.shape[0])
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = model(xb)  # (b, n_classes)
            loss += F.cross_entropy(logits, yb, reduction="sum").double()
            correct += (logits.argmax(dim=1) == yb).sum()
    model.train(was_training)
    return {"loss": loss.item() / n, "acc": correct.item() / n}


def epoch_record(epoch: int, step: int, metrics: Mapping[str, dict[str, float]]) -> dict[str, Any]:
    """One epoch's record; ``"prefix:rest"`` names nest as ``record[prefix][rest]``.

    Example:
        >>> epoch_record(1, 10, {"train": {"loss": 0.5}, "corrupt:fog:3": {"loss": 0.9}})
        {'epoch': 1, 'step': 10, 'train': {'loss': 0.5}, 'corrupt': {'fog:3': {'loss': 0.9}}}
    """
    record: dict[str, Any] = {"epoch": epoch, "step": step}
    for name, values in metrics.items():
        prefix, sep, rest = name.partition(":")
        if sep:
            record.setdefault(prefix, {})[rest] = values
        else:
            record[name] = values
    return record


def flat_params(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The parameters as one flat detached vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in params])


def half_sq_norm(params: Sequence[torch.Tensor], weight_decay: float) -> float:
    r"""$\frac\lambda2\|\theta\|^2$ in float64 (0 without weight decay)."""
    if weight_decay == 0.0:
        return 0.0
    return 0.5 * weight_decay * float(sum(p.detach().double().pow(2).sum() for p in params))


def model_expectations(
    model: nn.Module,
    params: Sequence[torch.Tensor],
    sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    outcome: Any,
    examples: int,
    batch_size: int,
) -> dict[str, dict[str, float]]:
    """Stationary expectations of ``model`` (its weights are restored afterwards)."""
    saved = flat_params(params)

    def at(theta: torch.Tensor, name: str) -> float:
        vector_to_parameters(theta.to(saved), params)
        ex, ey = sets[name]
        k = int(ey.shape[0]) if examples == 0 else min(examples, int(ey.shape[0]))
        return evaluate(model, ex[:k], ey[:k], batch_size=batch_size)["loss"]

    try:
        return expectations(at, outcome, sets)
    finally:
        vector_to_parameters(saved, params)
