"""What a run ran on: package versions, interpreter, host, git commit."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["environment", "hostname"]

_PACKAGES = ("sgdtemp", "torch", "numpy", "scipy", "ray", "distributed")


@functools.cache
def hostname() -> str:
    """This machine's host name (cached per process)."""
    return socket.gethostname()


@functools.cache
def _git_commit() -> str | None:
    """The git commit of the source tree sgdtemp was imported from, or None outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


@functools.cache
def _static_environment() -> tuple[tuple[str, Any], ...]:
    versions: dict[str, str] = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "git_commit": _git_commit(),
        "host": hostname(),
        "cpu_count": os.cpu_count(),
    }
    return tuple(env.items())


def environment(*, device: str | None = None) -> dict[str, Any]:
    """The environment record stored with every run.

    Versions come from package metadata, so capturing them imports nothing heavy. The result is
    cached per process except for the device.

    Args:
        device: the device the run used (``"cpu"``, ``"cuda:0"``, ...), if known.

    Returns:
        A JSON-ready dict with ``python``, ``platform``, ``packages`` (name → version),
        ``git_commit`` (None outside a git checkout), ``host``, ``cpu_count``, ``device`` and
        ``torch_threads`` (the intra-op thread count, None when torch was not imported).

    Example:
        >>> env = environment(device="cpu")
        >>> env["device"], "sgdtemp" in env["packages"]
        ('cpu', True)
    """
    import sys

    env = dict(_static_environment())
    env["packages"] = dict(env["packages"])
    env["device"] = device
    torch = sys.modules.get("torch")
    env["torch_threads"] = torch.get_num_threads() if torch is not None else None
    return env
