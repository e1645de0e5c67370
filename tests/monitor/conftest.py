"""A small classification problem and slow, obvious oracles for the monitor's tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_problem(n: int = 2000, seed: int = 0, *, dtype=torch.float64):
    """A 2-layer tanh network on ``n`` examples of 3 noisy Gaussian classes in 6 dimensions."""
    gen = torch.Generator().manual_seed(seed)
    centers = 1.5 * torch.randn(3, 6, generator=gen, dtype=dtype)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = centers[y] + torch.randn(n, 6, generator=gen, dtype=dtype)
    torch.manual_seed(seed)  # the model's default init (test-only global seeding)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
    return model, x, y


def per_example_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(n, d)``: one autograd call per example (the slow, obvious oracle)."""
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(x.shape[0]):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


def exact_noise_scale(grads: torch.Tensor) -> tuple[float, float, float]:
    """tr C, |G|^2 and B_noise of the population whose per-example gradients are ``grads``."""
    mean = grads.mean(dim=0)
    trace = float(((grads - mean) ** 2).sum(dim=1).mean())
    signal = float((mean**2).sum())
    return trace, signal, trace / signal
