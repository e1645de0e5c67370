"""Pieces the benchmark scripts share: interleaved timing, the load line, a bare SGD epoch.

The scripts run as ``python benchmarks/bench_X.py``, so this folder is on ``sys.path`` and they
import this module as ``_common``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def best_times(
    fns: Sequence[Callable[[], object]], repeats: int
) -> tuple[list[float], list[float]]:
    """Best wall-clock and best CPU seconds of each function over interleaved repeats.

    Interleaving and taking the best run keep the comparison fair on a busy machine: every
    function gets the same chances of an undisturbed run. CPU time (of this process) is
    reported too: it ignores time spent waiting for a busy CPU.
    """
    wall, cpu = [math.inf] * len(fns), [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[i] = min(wall[i], time.perf_counter() - start)
            cpu[i] = min(cpu[i], time.process_time() - start_cpu)
    return wall, cpu


def load() -> str:
    """The 1-minute load average (what `uptime` prints first): other work on the machine."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def bare_sgd_epoch(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    """One epoch of the plain PyTorch loop the trainer is compared with (the reference)."""
    n = x.shape[0]
    perm = torch.randperm(n, generator=generator).to(x.device)
    for i in range(n // batch_size):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
