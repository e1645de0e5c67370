"""Who holds a claim: the owner string of a process (host, pid, start time) and whether it lives."""

from __future__ import annotations

import os
from pathlib import Path

from sgdtemp.storage._env import hostname

__all__ = ["process_owner", "owner_alive"]


def _process_start(pid: int) -> str:
    """The start time of a process in clock ticks since boot (Linux), or '' when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def process_owner(pid: int | None = None) -> str:
    """The owner string of a process: ``host:pid:start`` (start time guards against pid reuse).

    Example:
        >>> process_owner().split(":")[1] == str(os.getpid())
        True
    """
    pid = os.getpid() if pid is None else pid
    return f"{hostname()}:{pid}:{_process_start(pid)}"


def owner_alive(owner: str) -> bool | None:
    """Whether the owner process is alive: None when it lives on another host (unknowable here)."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != hostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or _process_start(pid) in ("", start)
