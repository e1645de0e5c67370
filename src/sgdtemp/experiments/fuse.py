"""How many runs of a sweep train together (``--fuse``): the rule, its memory check, the parsing."""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Sequence

from sgdtemp.errors import UserError
from sgdtemp.executors import AbstractExecutor
from sgdtemp.experiments.engine import Job

__all__ = ["FUSE_MAX", "FUSE_MEMORY_SHARE", "fuse_size", "parse_fuse", "worker_count"]

#: Largest group the automatic rule fuses (beyond it, a group's memory grows with no gain in speed:
#: benchmarks/bench_sweep_fuse.py).
FUSE_MAX = 16
#: Share of the machine's available memory the fused groups of all workers may use.
FUSE_MEMORY_SHARE = 0.5


def _available_memory() -> int:
    """Bytes of memory available to new work (``MemAvailable``; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def parse_fuse(text: str | int | None) -> int | str | None:
    """``--fuse`` as :func:`fuse_size` takes it: ``"auto"``/None, ``"off"`` or K >= 1.

    Raises:
        UserError: for anything else.

    Example:
        >>> parse_fuse("8"), parse_fuse("off"), parse_fuse("auto")
        (8, 'off', 'auto')
    """
    if text is None or text in ("auto", "off"):
        return text
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise UserError(f"--fuse must be a positive integer, auto or off, got {text!r}")
    return value


def worker_count(executor: AbstractExecutor | str | None, workers: int | None) -> int:
    """The parallelism a sweep will have: ``workers``, the executor's, or the usable CPUs."""
    from sgdtemp.executors import usable_cpus

    if workers is not None:
        return workers
    if isinstance(executor, AbstractExecutor):
        return executor.max_workers
    return usable_cpus()


def fuse_size(jobs: Sequence[Job], *, workers: int, fuse: int | str | None = None) -> int:
    """How many runs of one group train together (``--fuse``): the engine's ``fuse``.

    ``"off"`` (or 1): every run on its own. An integer: that many, checked against memory.
    ``None`` / ``"auto"``: the rule. Runs of one group (same model, data, batch size, device)
    train together; groups are split so that the tasks keep every worker busy (the largest K
    with the workers busy 90 % of the time, see :func:`_balanced`), and no task holds more than
    :data:`FUSE_MAX` runs or more than its share of memory (:data:`FUSE_MEMORY_SHARE` of what
    is available, split over the workers, each run costing its task's ``memory_bytes()``, e.g.
    :meth:`~sgdtemp.experiments.sweep.TrainTask.memory_bytes`).

    Raises:
        UserError: for a non-positive K, or a K whose groups cannot fit in memory.
    """
    if fuse == "off":
        return 1
    if fuse not in (None, "auto") and (
        not isinstance(fuse, int) or isinstance(fuse, bool) or fuse < 1
    ):
        raise UserError(f"--fuse must be a positive integer, auto or off, got {fuse!r}")
    groups = collections.Counter(
        j.group for j in jobs if j.task is not None and j.group is not None
    )
    if not groups or fuse == 1:
        return 1
    first = next(j.task for j in jobs if j.task is not None and j.group is not None)
    estimate = getattr(first, "memory_bytes", None)
    per_run = max(int(estimate()), 1) if callable(estimate) else 1
    budget = FUSE_MEMORY_SHARE * _available_memory() / max(workers, 1)
    fits = max(int(budget // per_run), 1)
    if isinstance(fuse, int):
        if fuse > fits:
            raise UserError(
                f"--fuse {fuse}: a group of {fuse} runs needs about {fuse * per_run / 2**30:.2g} "
                f"GiB per worker, more than the {budget / 2**30:.2g} GiB there is; choose at "
                f"most --fuse {fits}"
            )
        return fuse
    return _balanced(
        list(groups.values()), max(workers, 1), min(max(groups.values()), FUSE_MAX, fits)
    )


def _balanced(sizes: list[int], workers: int, most: int) -> int:
    """The largest K <= ``most`` whose tasks keep the workers busy (at least 90 % of the time).

    Groups of ``sizes`` runs split into tasks of at most K runs; counting a task's cost as its
    K runs, the workers are busy ``sum(sizes) / (workers * ceil(tasks / workers) * K)`` of the
    time. Three groups of 12 on two workers: K = 12 leaves one worker idle for the last task
    (75 % busy), K = 6 gives each three tasks (100 %). K goes down to half of ``most`` at the
    least (fusing is what makes a task cheap); when none reaches 90 %, the busiest of those.

    Example:
        >>> _balanced([12, 12, 12], 2, 16), _balanced([8, 8], 2, 16), _balanced([12], 2, 16)
        (6, 8, 6)
    """
    total = sum(sizes)
    most = max(min(most, max(sizes)), 1)
    best, best_busy = most, 0.0
    for k in range(most, math.ceil(most / 2) - 1, -1):
        tasks = sum(math.ceil(n / k) for n in sizes)
        busy = total / (workers * math.ceil(tasks / workers) * k)
        if busy >= 0.9:
            return k
        if busy > best_busy + 1e-12:
            best, best_busy = k, busy
    return best
