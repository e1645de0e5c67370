"""Small picklable tasks for testing and benchmarking executors and the sweep engine.

They live in the package (not in ``tests/``) so that every kind of worker (a spawned process, a
Ray or Dask worker) can import them by name. Each returns a mapping of metrics with a
``status``, which the sweep engine reads as the run's outcome.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ToyTask", "TorchToyTask", "pid_and_sleep", "kill_self"]


def pid_and_sleep(seconds: float) -> int:
    """Sleep, then return this process's id."""
    time.sleep(seconds)
    return os.getpid()


def kill_self() -> None:
    """SIGKILL this process (a worker that dies mid-task)."""
    os.kill(os.getpid(), signal.SIGKILL)


def _append(path: str | None, line: str) -> None:
    if path is not None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


@dataclass(frozen=True)
class ToyTask:
    """Least squares by SGD in pure Python, deterministic given ``seed``.

    Attributes:
        ident: a label written to ``log`` (``start IDENT PID`` and ``end IDENT PID``).
        seed: the seed of the data and the minibatch order.
        lr: step size (large values diverge).
        steps: SGD steps.
        sleep: seconds to sleep first (to make the task take time).
        log: a file to append start and end lines to, or None.
        die_first: SIGKILL the worker on the first ``die_first`` starts (counted in ``log``).
        fail: raise ``ValueError`` instead of training.
    """

    ident: str
    seed: int = 0
    lr: float = 0.05
    steps: int = 200
    sleep: float = 0.0
    log: str | None = None
    die_first: int = 0
    fail: bool = False

    def __call__(self) -> dict[str, Any]:
        """Run; return ``{"status", "loss", "w"}``."""
        import random

        if self.log is not None and self.die_first:
            starts = Path(self.log).read_text().split("\n") if Path(self.log).exists() else []
            if sum(line.startswith(f"start {self.ident} ") for line in starts) < self.die_first:
                _append(self.log, f"start {self.ident} {os.getpid()}")
                kill_self()
        _append(self.log, f"start {self.ident} {os.getpid()}")
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail:
            raise ValueError(f"task {self.ident} fails on purpose")
        rng = random.Random(self.seed)
        true_w = [rng.gauss(0, 1) for _ in range(3)]
        xs = [[rng.gauss(0, 1) for _ in range(3)] for _ in range(64)]
        ys = [sum(a * b for a, b in zip(x, true_w)) + 0.1 * rng.gauss(0, 1) for x in xs]
        w = [0.0, 0.0, 0.0]
        status = "ok"
        for _ in range(self.steps):
            i = rng.randrange(len(xs))
            err = sum(a * b for a, b in zip(xs[i], w)) - ys[i]
            w = [wj - self.lr * err * xj for wj, xj in zip(w, xs[i])]
            if not all(abs(wj) < 1e6 for wj in w):
                status = "diverged"
                break
        loss = sum((sum(a * b for a, b in zip(x, w)) - y) ** 2 for x, y in zip(xs, ys)) / len(xs)
        _append(self.log, f"end {self.ident} {os.getpid()}")
        return {"status": status, "loss": loss, "w": w}

    @classmethod
    def fuse(cls, tasks: Sequence[ToyTask]) -> Callable[[Callable[[int, Any], None]], None]:
        """The tasks as one fused task: run one after another, each reported as it ends."""
        return _ToyGroup(tuple(tasks))


@dataclass(frozen=True)
class _ToyGroup:
    """Toy tasks fused (see :meth:`ToyTask.fuse`): one worker runs them in order."""

    tasks: tuple[ToyTask, ...]

    def __call__(self, report: Callable[[int, Any], None]) -> None:
        for i, task in enumerate(self.tasks):
            report(i, task())


@dataclass(frozen=True)
class TorchToyTask:
    """A small MLP trained with torch SGD on seeded synthetic data (uses intra-op threads).

    Attributes:
        seed: seed of the data, the initialisation and the minibatch order.
        lr: learning rate.
        batch_size: minibatch size.
        steps: SGD steps.
        width: hidden width.
        n: training examples.
    """

    seed: int = 0
    lr: float = 0.1
    batch_size: int = 32
    steps: int = 50
    width: int = 256
    n: int = 2048

    def __call__(self) -> dict[str, Any]:
        """Train; return ``{"status", "loss", "losses", "threads"}``."""
        import torch

        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.n, 64, generator=gen)
        y = (x[:, :8].sum(1) > 0).long()
        w1 = (torch.randn(64, self.width, generator=gen) / 8).requires_grad_()
        w2 = (torch.randn(self.width, 2, generator=gen) / 16).requires_grad_()
        losses = []
        for _ in range(self.steps):
            idx = torch.randint(0, self.n, (self.batch_size,), generator=gen)
            loss = torch.nn.functional.cross_entropy(torch.relu(x[idx] @ w1) @ w2, y[idx])
            g1, g2 = torch.autograd.grad(loss, (w1, w2))
            with torch.no_grad():
                w1 -= self.lr * g1
                w2 -= self.lr * g2
            losses.append(loss.item())
        with torch.no_grad():
            full = torch.nn.functional.cross_entropy(torch.relu(x @ w1) @ w2, y).item()
        return {"status": "ok", "loss": full, "losses": losses, "threads": torch.get_num_threads()}
