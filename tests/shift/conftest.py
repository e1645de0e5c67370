"""Shared helpers for the shift tests: train minima found to high precision."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sgdtemp.curvature import ModelLoss
from sgdtemp.shift import newton_cg_minimize


def set_flat(model: nn.Module, theta: torch.Tensor) -> None:
    with torch.no_grad():
        start = 0
        for p in model.parameters():
            p.copy_(theta[start : start + p.numel()].reshape(p.shape))
            start += p.numel()


def to_train_minimum(model: nn.Module, loss_fn, x, y, weight_decay: float) -> float:
    """Move the model to the minimum of L + wd/2 |theta|^2 on (x, y); return the gradient norm."""
    ml = ModelLoss(model, loss_fn, (x, y), hvp_mode="double_backward")

    def vg(t):
        f, g = ml.value_and_grad(t)
        return f + 0.5 * weight_decay * float(t @ t), g + weight_decay * t

    def val(t):
        return ml.loss(t) + 0.5 * weight_decay * float(t @ t)

    def hvp(t, p):
        return ml.hvp(t, p.unsqueeze(0))[0] + weight_decay * p

    res = newton_cg_minimize(
        vg, val, hvp, ml.flat_params(), grad_tol=1e-12, rel_grad_tol=0.0, max_iters=200
    )
    set_flat(model, res.x)
    return res.grad_norm


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add scheduling waits on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def helpers() -> SimpleNamespace:
    return SimpleNamespace(set_flat=set_flat, to_train_minimum=to_train_minimum)
