"""What a two-minima study leaves in its folder: ``data.npz``, the figures, ``summary.json``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from sgdtemp.experiments.two_minima.study import TwoMinimaResult
from sgdtemp.files import atomic_write, write_json

__all__ = ["OUTPUTS", "write_two_minima"]

#: Files whose presence means a folder already holds a study.
OUTPUTS = ("summary.json", "data.npz")


def write_two_minima(result: TwoMinimaResult, folder: Path) -> dict[str, Any]:
    """Write the study into an existing ``folder``, each file atomically, ``summary.json`` last.

    Args:
        result: the study's outcome.
        folder: where to write.

    Returns:
        The summary as written (with its ``files``).
    """
    from sgdtemp.plotting.two_minima import plot_two_minima  # matplotlib only when writing

    folder = Path(folder)
    summary = dict(result.summary)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **result.arrays)  # type: ignore[arg-type]
    atomic_write(folder / "data.npz", buffer.getvalue())
    figures = plot_two_minima(summary, result.arrays, folder)
    summary["files"] = {
        "summary": str(folder / "summary.json"),
        "data": str(folder / "data.npz"),
        "figures": [str(p) for p in figures],
    }
    write_json(folder / "summary.json", summary)
    return summary
