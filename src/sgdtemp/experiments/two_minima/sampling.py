r"""Which minibatch sampling the study judges SGD in, and the other scheme measured beside it.

The SDE and the Fokker–Planck law describe SGD whose minibatch noise is i.i.d. with covariance
$C/B$: sampling with replacement (theory.md §2.1–§2.2). Reshuffling every epoch has the marginal
noise $\frac{N-B}{N-1}C/B$ but correlates the minibatches within an epoch, which changes the rare
barrier crossings that set the basin masses. The checks judge the configured scheme (by default
with replacement) and say which it was; the other scheme, where run, is reported as a labelled
measurement (:func:`sampling_comparison`), not as a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sgdtemp.theory import without_replacement_factor

__all__ = ["sampling_label", "sampling_temperature", "regime_note", "sampling_comparison"]

# A reshuffled and a with-replacement p_wide differ "clearly" beyond this many standard errors
# of their difference.
DIFFERENCE_Z = 3.0


def sampling_label(replacement: bool) -> str:
    """How minibatches are drawn, in words (for summaries and messages)."""
    return "with replacement" if replacement else "reshuffled every epoch"


def sampling_temperature(temp: float, n: int, batch_size: int, *, replacement: bool) -> float:
    r"""Temperature of the SDE and Fokker–Planck law matching a minibatch sampling scheme.

    With replacement the minibatch noise is $C/B$ (theory.md §2.1), so it is $T$ itself;
    reshuffled every epoch the marginal noise is $\frac{N-B}{N-1}C/B$, so $T$ times that factor.

    Example:
        >>> sampling_temperature(0.01, 5, 2, replacement=False)
        0.0075
        >>> sampling_temperature(0.01, 5, 2, replacement=True)
        0.01
    """
    if replacement:
        return temp
    return temp * without_replacement_factor(n, batch_size)


def regime_note(replacement: bool) -> str:
    """One line saying in which sampling regime SGD was judged (for the checks' details)."""
    if replacement:
        return (
            "SGD drew minibatches with replacement (i.i.d. noise C/B: the regime the SDE and "
            "Fokker-Planck law are derived for)"
        )
    return (
        "SGD reshuffled every epoch: outside the i.i.d. regime the Fokker-Planck law is derived "
        "for (the SDE and the law use its marginal noise (N-B)/(N-1) C/B)"
    )


def _label(row: dict[str, Any]) -> str:
    return f"{row['noise']} T={row['T']:g} B={row['batch_size']}"


def _row(cell: dict[str, Any]) -> dict[str, Any]:
    main, other = cell["sgd"], cell["sampling_comparison"]
    by_scheme = {cell["replacement"]: main, other["replacement"]: other["sgd"]}
    repl, resh = by_scheme[True], by_scheme[False]
    # The cell's law has the main scheme's noise, the comparison's law the other one's.
    laws = {cell["replacement"]: cell["p_wide_fp"], other["replacement"]: other["p_wide_fp"]}
    diff = resh["p_wide"] - repl["p_wide"]
    return {
        "noise": cell["noise"],
        "T": cell["T"],
        "batch_size": cell["batch_size"],
        "lr": cell["lr"],
        "lr_sharpness": cell["lr_sharpness"],
        "p_wide_sgd_with_replacement": repl["p_wide"],
        "stderr_with_replacement": repl["stderr"],
        "equilibrated_with_replacement": repl["equilibrated"],
        "p_wide_sgd_reshuffled": resh["p_wide"],
        "stderr_reshuffled": resh["stderr"],
        "equilibrated_reshuffled": resh["equilibrated"],
        "reshuffled_minus_with_replacement": diff,
        "difference_stderr": math.hypot(repl["stderr"], resh["stderr"]),
        "p_wide_fp": laws[True],
        "p_wide_fp_without_replacement_factor": laws[False],
        "p_wide_gibbs": cell["p_wide_gibbs"],
    }


def sampling_comparison(
    cells: Sequence[dict[str, Any]], replacement: bool, max_lr_sharpness: float
) -> dict[str, Any]:
    """The ``sampling_comparison`` block of ``summary.json``: both schemes, cell by cell.

    Args:
        cells: the study's cells; those with a ``sampling_comparison`` entry are tabulated.
        replacement: the scheme the study judged (its ``config.replacement``).
        max_lr_sharpness: the bound on lr * lambda_max of the cells where the other scheme ran.

    Returns:
        ``{"judged": False, "judged_sampling", "shown_sampling", "cells": [...], "statement"}``,
        each row holding SGD's wide-basin probability with replacement and reshuffled (± standard
        errors, equilibration flags), the Fokker–Planck law with noise $C/B$ and with the
        without-replacement factor, and the Gibbs law in L.
    """
    rows = [_row(c) for c in cells if c.get("sampling_comparison") is not None]
    block: dict[str, Any] = {
        "judged": False,
        "judged_sampling": sampling_label(replacement),
        "shown_sampling": sampling_label(not replacement),
        "cells": rows,
    }
    if not rows:
        block["statement"] = "not run (compare_sampling = false, or no simulated cell with "
        block["statement"] += f"lr*lambda_max <= {max_lr_sharpness})"
        return block
    both = [r for r in rows if r["equilibrated_with_replacement"] and r["equilibrated_reshuffled"]]
    parts = [
        f"not judged: SGD {block['shown_sampling']} beside the judged SGD "
        f"{block['judged_sampling']} in {len(rows)} cells with lr*lambda_max <= "
        f"{max_lr_sharpness} (same steps and starts)"
    ]
    if both:
        resh = max(both, key=lambda r: abs(r["p_wide_sgd_reshuffled"] - r["p_wide_fp"]))
        repl = max(both, key=lambda r: abs(r["p_wide_sgd_with_replacement"] - r["p_wide_fp"]))
        factor = max(abs(r["p_wide_fp_without_replacement_factor"] - r["p_wide_fp"]) for r in both)
        apart = [
            r
            for r in both
            if abs(r["reshuffled_minus_with_replacement"]) > DIFFERENCE_Z * r["difference_stderr"]
        ]
        parts.append(
            f"in the {len(both)} where both equilibrated, |p_SGD - p_FP| is at most "
            f"{abs(resh['p_wide_sgd_reshuffled'] - resh['p_wide_fp']):.3f} reshuffled "
            f"({_label(resh)}: {resh['p_wide_sgd_reshuffled']:.3f} vs FP "
            f"{resh['p_wide_fp']:.3f}) and "
            f"{abs(repl['p_wide_sgd_with_replacement'] - repl['p_wide_fp']):.3f} with "
            f"replacement ({_label(repl)})"
        )
        parts.append(
            f"the schemes differ by more than {DIFFERENCE_Z:g} standard errors in {len(apart)} "
            f"of them; the (N-B)/(N-1) factor moves p_FP by at most {factor:.4f}"
        )
    unequal = [r for r in rows if r not in both]
    if unequal:
        parts.append("not equilibrated under one scheme: " + ", ".join(map(_label, unequal)))
    block["statement"] = "; ".join(parts)
    return block
