"""How the project's trainer runs the monitor: one frozen options object (``fit(monitor=...)``).

Example:
    >>> MonitorOptions(probe_size=128, every=50).every
    50
    >>> MonitorOptions(probe_size=4)
    Traceback (most recent call last):
    ...
    sgdtemp.errors.UserError: monitor probe_size must be an integer >= 8, got 4
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sgdtemp.errors import UserError

if TYPE_CHECKING:
    import torch

    from sgdtemp.monitor._monitor import TemperatureMonitor

__all__ = ["MonitorOptions"]


@dataclass(frozen=True)
class MonitorOptions:
    """The temperature monitor inside :func:`sgdtemp.train.fit` (see ``TemperatureMonitor``).

    Attributes:
        probe_size: probe examples, drawn once from the training set (a seeded permutation, so
            the data order of training is untouched).
        every: probe every this many steps; ``None``: keep the monitor within ``budget``.
        budget: share of the training time the monitor may take when ``every`` is ``None``.
        log_every: send a step record every this many steps (probes and T jumps always).
        lanczos_iters: most Hessian-vector products per probe.
        jsonl: write the records to this JSONL file (``None``: keep them in the result only).
        seed: seed of the probe's examples and of the Lanczos start vectors.

    Raises:
        UserError: for an option out of range.
    """

    probe_size: int = 256
    every: int | None = None
    budget: float = 0.02
    log_every: int = 50
    lanczos_iters: int = 20
    jsonl: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name, least in (("probe_size", 8), ("log_every", 1), ("lanczos_iters", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise UserError(f"monitor {name} must be an integer >= {least}, got {value!r}")
        if self.every is not None and (not isinstance(self.every, int) or self.every < 1):
            raise UserError(f"monitor every must be a positive integer or None, got {self.every}")
        if not 0.0 < self.budget < 1.0:
            raise UserError(f"monitor budget must be a fraction in (0, 1), got {self.budget}")

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON values."""
        return asdict(self)

    def attach(
        self,
        model: torch.nn.Module,
        optimizer: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        meta: dict[str, Any] | None = None,
    ) -> TemperatureMonitor:
        """A monitor on ``model`` and ``optimizer`` with a cross-entropy probe from ``(x, y)``.

        Args:
            model: the classifier being trained.
            optimizer: its optimizer (the trainer's SGD).
            x: training inputs ``(N, ...)``.
            y: training labels ``(N,)``.
            meta: extra facts for the log's ``meta`` line.
        """
        import torch
        import torch.nn.functional as F

        from sgdtemp.monitor._monitor import TemperatureMonitor
        from sgdtemp.monitor.sinks import JSONLSink

        n = int(y.shape[0])
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(n, generator=gen)[: min(self.probe_size, n)].to(x.device)
        sinks = [] if self.jsonl is None else [JSONLSink(self.jsonl)]
        return TemperatureMonitor(
            model,
            optimizer,
            F.cross_entropy,
            probe=(x.index_select(0, idx), y.index_select(0, idx)),
            every=self.every,
            budget=self.budget,
            log_every=self.log_every,
            lanczos_iters=self.lanczos_iters,
            sinks=sinks,
            seed=self.seed,
            meta={"monitor_options": self.to_dict(), **(meta or {})},
        )
