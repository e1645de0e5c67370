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


def write_monitor_log(path, *, steps: int = 40) -> None:
    """A real monitor log: momentum SGD with StepLR and a batch-size change, probes every 5."""
    import warnings

    from sgdtemp.monitor import JSONLSink, TemperatureMonitor, TemperatureWarning

    model, x, y = make_problem(400)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=15, gamma=0.3)
    gen = torch.Generator().manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TemperatureWarning)
        with TemperatureMonitor(
            model, opt, F.cross_entropy, probe=(x[:128], y[:128]), every=5, log_every=2,
            sinks=[JSONLSink(path)], meta={"model": "tanh-mlp"},
        ) as monitor:  # fmt: skip
            for i in range(steps):
                batch = 16 if i < steps // 2 else 64
                idx = torch.randint(0, 400, (batch,), generator=gen)
                opt.zero_grad()
                loss = F.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
                monitor.step(batch_size=batch, loss=loss)
                sched.step()
