"""What a sweep runs and reports: jobs, outcomes, fusable tasks, progress and the summary."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sgdtemp.storage import NewRun

__all__ = [
    "Outcome",
    "Job",
    "FusableTask",
    "Report",
    "SweepProgress",
    "SweepSummary",
    "TASK_STATUSES",
]

#: Statuses a task may report.
TASK_STATUSES = ("ok", "diverged", "unstable", "failed")


@dataclass(frozen=True)
class Outcome:
    """What a task returns: its status and metrics (JSON values).

    Attributes:
        status: ``"ok"`` or ``"diverged"`` (or ``"unstable"`` / ``"failed"``).
        metrics: the run's metrics.
        device: the device the run used, recorded in its environment.
    """

    status: str
    metrics: Mapping[str, Any]
    device: str | None = None


@dataclass(frozen=True)
class Job:
    """One run of a sweep: what to store (``run``) and what to execute (``task``).

    Attributes:
        run: the key, config and columns of the run.
        task: a picklable callable with no arguments returning an :class:`Outcome` (or a
            mapping of metrics, read as ``ok``); None for a run recorded without running
            (``run.status == "unstable"``).
        group: jobs with the same (hashable, not None) group may be fused into one task; their
            tasks must be instances of one :class:`FusableTask` class.
    """

    run: NewRun
    task: Callable[[], Outcome | Mapping[str, Any]] | None
    group: Any = None


#: How a fused task reports run ``i`` of its group: ``report(i, outcome)``.
Report = Callable[[int, "Outcome | Mapping[str, Any]"], None]


@runtime_checkable
class FusableTask(Protocol):
    """A task whose class can run several of its instances as one (see :attr:`Job.group`)."""

    @classmethod
    def fuse(cls, tasks: Sequence[Any]) -> Callable[[Report], None]:
        """One task for ``tasks``: called with ``report``, it reports each task's outcome."""
        ...


@dataclass(frozen=True)
class SweepProgress:
    """Where a sweep stands (passed to the ``progress`` callback after every event).

    Attributes:
        total: runs in the sweep.
        skipped: runs already finished when it started.
        done: runs finished since it started (failed included).
        running: runs in flight.
        failed: runs recorded ``failed`` since it started.
        waiting: runs held by another live driver (a concurrent sweep).
    """

    total: int
    skipped: int
    done: int
    running: int
    failed: int
    waiting: int


@dataclass(frozen=True)
class SweepSummary:
    """The result of a sweep invocation.

    ``skipped`` counts runs already finished when it started; the other counts are the final
    statuses of the rest, so ``ok + diverged + failed + unstable + skipped == total``.

    Attributes:
        sweep: the sweep name.
        total: runs in the sweep.
        ok: finished ``ok``.
        diverged: stopped for a non-finite or too large loss.
        failed: raised, or lost their worker ``max_attempts`` times.
        unstable: ``lr · λ_max ≥ 2`` (recorded, maybe run, never mixed into claims).
        skipped: already finished before this invocation.
        failed_earlier: of the skipped runs, those an earlier invocation recorded ``failed``
            (not retried without ``retry_failed``).
        seconds: wall-clock time of this invocation.
        task_seconds: time the tasks themselves took, summed over the runs executed here.
        task_cpu_seconds: CPU time of the worker processes during those tasks, summed (below
            ``task_seconds`` when other load kept a worker off its core).
    """

    sweep: str
    total: int
    ok: int
    diverged: int
    failed: int
    unstable: int
    skipped: int
    seconds: float
    task_seconds: float
    task_cpu_seconds: float = 0.0
    failed_earlier: int = 0

    @property
    def left_failed(self) -> int:
        """Runs of the sweep recorded ``failed`` after this invocation (by it or earlier)."""
        return self.failed + self.failed_earlier

    def counts(self) -> dict[str, int]:
        """``{"total", "ok", "diverged", "failed", "unstable", "skipped", "failed_earlier"}``."""
        return {
            "total": self.total,
            "ok": self.ok,
            "diverged": self.diverged,
            "failed": self.failed,
            "unstable": self.unstable,
            "skipped": self.skipped,
            "failed_earlier": self.failed_earlier,
        }
