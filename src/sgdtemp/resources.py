"""What a machine has: memory, devices and work bounds, checked before any work starts.

Entry points estimate what a task will need (grid cells, chains × recorded steps, epochs × steps)
and call these checks first, so an impossible request is a one-line :class:`UserError` naming the
input and the fix instead of an out-of-memory traceback, a run that never ends, or a stage that
starts on a device the machine does not have.

Estimates are lower bounds (what the arrays named in the estimate take), so a check never refuses
work that fits; work that passes may still need more than estimated.

Example:
    >>> require_memory(1024, what="a small grid", fix="use a smaller --grid")
    >>> format_bytes(3 * 2**30)
    '3.0 GiB'
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from sgdtemp.errors import UserError

__all__ = [
    "MAX_STEPS",
    "MAX_SIMULATED_STEPS",
    "machine_memory",
    "format_bytes",
    "require_memory",
    "require_steps",
    "require_device",
    "trajectory_bytes",
    "grid_2d_bytes",
    "grid_1d_bytes",
]

#: Most optimizer steps one training run may take (about months of compute at 10 µs a step;
#: long real runs take around 10⁶).
MAX_STEPS = 10**11

#: Most chain-steps (chains × steps) one simulation may take (months at 10⁸ per second).
MAX_SIMULATED_STEPS = 10**15


def _meminfo_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, v1 ``limit_in_bytes``)."""
    for name in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:  # "max" or a huge number: no limit
            return int(text)
    return None


def machine_memory() -> int:
    """Bytes of memory this process may use: physical memory, capped by cgroup and rlimits."""
    candidates = [_meminfo_total(), _cgroup_limit()]
    for limit in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
        soft = resource.getrlimit(limit)[0]
        if soft != resource.RLIM_INFINITY:
            candidates.append(soft)
    if candidates[0] is None:  # not Linux: ask the OS for pages
        try:
            candidates[0] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            pass
    known = [c for c in candidates if c is not None and c > 0]
    return min(known) if known else 2**63


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units, e.g. ``'71.1 PiB'``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    value, unit = float(n), 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    if unit == len(units) - 1 and value >= 1024:
        return f"{value:.3g} {units[unit]}"
    return f"{value:.0f} {units[unit]}" if unit == 0 else f"{value:.1f} {units[unit]}"


def trajectory_bytes(chains: int, n_steps: int, record_every: int, dim: int = 1) -> int:
    """Bytes of a recorded simulation: ``(n_steps // record_every + 1, chains, dim)`` float64."""
    return 8 * chains * dim * (n_steps // record_every + 1)


def grid_2d_bytes(cells: float) -> float:
    """A lower bound on the 2-D Fokker–Planck solver's memory for a grid of ``cells`` cells.

    The solver holds dense fields and a sparse 9-point operator with its LU factors: measured
    2.0–2.2 KiB per cell above the interpreter's own ~300 MB at 160 000 and 640 000 cells
    (``sgdtemp stationary --grid 400 / 800``); 1 KiB per cell stays below that.
    """
    return 1024.0 * cells


def grid_1d_bytes(points: float) -> float:
    """A lower bound on the 1-D stationary law's memory: about 20 float64 arrays of ``points``."""
    return 160.0 * points


def require_memory(nbytes: float, *, what: str, fix: str) -> None:
    """Refuse a task whose estimated memory exceeds what this machine has.

    Args:
        nbytes: the estimate (a lower bound), in bytes.
        what: the input and what it makes, e.g. ``"--grid 100000000 (1e16 cells)"``.
        fix: what to change, e.g. ``"use --grid 2000 or less"``.

    Raises:
        UserError: ``"{what} needs at least … of memory; this machine has …: {fix}"``.
    """
    have = machine_memory()
    if not nbytes <= have:  # also refuses NaN
        raise UserError(
            f"{what} needs at least {format_bytes(nbytes)} of memory; this machine has "
            f"{format_bytes(have)}: {fix}"
        )


def require_steps(steps: float, *, what: str, fix: str, limit: float = MAX_STEPS) -> None:
    """Refuse work beyond ``limit`` steps (a run that would not end in a useful time).

    Args:
        steps: the number of steps the inputs ask for.
        what: the input and what it makes, e.g. ``"--epochs 10**20 (3.7e21 SGD steps)"``.
        fix: what to change.
        limit: the bound (default :data:`MAX_STEPS`).

    Raises:
        UserError: when ``steps`` exceeds ``limit``.
    """
    if not steps <= limit:
        raise UserError(f"{what} is more than the {limit:.0e} steps sgdtemp runs at most: {fix}")


def require_device(device: str, *, option: str = "--device") -> None:
    """Check that a device name is known and present on this machine (``auto`` always is).

    Args:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        option: how the user spelled the input, for the message.

    Raises:
        UserError: for an unknown device or one this machine does not have.

    Example:
        >>> require_device("cpu")
        >>> require_device("tpu")
        Traceback (most recent call last):
        ...
        sgdtemp.errors.UserError: --device tpu: unknown device; use auto, cpu, cuda or mps
    """
    text = str(device).strip()
    if text == "auto":
        return
    kind, _, index = text.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise UserError(f"{option} {text}: unknown device; use auto, cpu, cuda or mps")
    if kind == "cpu":
        return
    import torch

    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{option} {text}: this machine has no MPS device; use cpu or auto")
        return
    if not torch.cuda.is_available():
        raise UserError(f"{option} {text}: this machine has no CUDA device; use cpu or auto")
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        raise UserError(
            f"{option} {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
        )
