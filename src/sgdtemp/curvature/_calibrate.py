"""Which Hessian-vector-product formulation a :class:`ModelLoss` uses: fixed, or timed (``auto``).

With explicit modes (the default, double backward looped over columns) the choice is made
without any timing, so the digits are the same on every machine. With ``hvp_mode="auto"`` or
``batching="auto"`` the candidates are timed on the first batch and the fastest that agrees
with a trusted reference is kept (BackPACK and curvlinops measured opposite winners on different
models), so the last digits can then depend on the machine.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from sgdtemp.curvature._model import ModelLoss

__all__ = ["calibrate", "check_deadline", "trusted_strategy", "FAILURES", "HVP_MODES", "BATCHINGS"]

HVP_MODES = ("double_backward", "forward_over_reverse")
BATCHINGS = ("loop", "vmap")
# Calibration: a candidate slower than _SLACK times the best so far is aborted; those within it
# are timed twice. Trusted formulations first for the reference, promising ones first for speed.
_SLACK = 1.25
_TRUST_ORDER = (
    "double_backward:loop",
    "forward_over_reverse:loop",
    "double_backward:vmap",
    "forward_over_reverse:vmap",
)
_SPEED_PRIOR = (
    "forward_over_reverse:vmap",
    "double_backward:vmap",
    "double_backward:loop",
    "forward_over_reverse:loop",
)
FAILURES = (RuntimeError, NotImplementedError, ValueError)


class _TooSlow(Exception):
    """Raised inside a candidate HVP that ran past its calibration deadline."""


def check_deadline(deadline: float) -> None:
    if deadline != math.inf and time.perf_counter() > deadline:
        raise _TooSlow


def _modes(loss: ModelLoss) -> tuple[str, ...]:
    return HVP_MODES if loss.hvp_mode == "auto" else (loss.hvp_mode,)


def _candidates(loss: ModelLoss, kind: str) -> list[str]:
    modes = _modes(loss)
    if kind == "single":
        return [f"{m}:loop" for m in modes]
    batchings = BATCHINGS if loss.batching == "auto" else (loss.batching,)
    return [f"{m}:{b}" for m in modes for b in batchings]


def calibrate(loss: ModelLoss, kind: str, theta: Tensor, tangents: Tensor) -> Tensor:
    """Choose the fastest strategy on the first batch; return that batch's product.

    A trusted formulation (double backward first) computes the first column as the reference.
    Candidates then run on all columns, most promising first, each aborted once it is slower
    than ``_SLACK`` times the best so far; those that finish and agree with the reference on
    the first column are timed once more, and the fastest wins. A candidate that fails (a
    transform the model does not support) or disagrees is dropped.
    """
    x, y = loss.batches[0]
    candidates = _candidates(loss, kind)
    if len(candidates) == 1:
        loss.strategy[kind] = candidates[0]
        return loss._hvp_batch(candidates[0], theta, x, y, tangents)
    loss.value_and_grad_batch(theta, x, y)  # warm-up: allocator, functional_call caches
    if "double_backward" in _modes(loss):
        loss._gradient_graph(theta, x, y)  # cached if it fits: time the steady state
    tol = 10.0 * torch.finfo(loss.dtype).eps ** 0.5
    reference: Tensor | None = None
    timings: dict[str, float] = {}
    results: dict[str, Tensor] = {}
    for cand in sorted(candidates, key=_TRUST_ORDER.index):
        try:
            start = time.perf_counter()
            first = loss._hvp_batch(cand, theta, x, y, tangents[:1])
        except FAILURES:
            continue
        reference = first[0]
        if tangents.shape[0] == 1:  # the reference run is already a full candidate run
            timings[cand] = time.perf_counter() - start
            results[cand] = first
        break
    if reference is None:
        raise RuntimeError("no Hessian-vector-product formulation works for this model")
    ref_norm = float(torch.linalg.vector_norm(reference)) + 1e-30

    def run(cand: str) -> None:
        best = min(timings.values(), default=math.inf)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # vmap fallback performance notes
                result = loss._hvp_batch(cand, theta, x, y, tangents, start + _SLACK * best)
        except _TooSlow:
            return
        except FAILURES:
            timings.pop(cand, None)
            return
        elapsed = time.perf_counter() - start
        if float(torch.linalg.vector_norm(result[0] - reference)) > tol * ref_norm:
            timings.pop(cand, None)  # disagrees with the trusted reference: never use it
            return
        timings[cand] = min(elapsed, timings.get(cand, math.inf))
        results[cand] = result

    for cand in sorted(candidates, key=_SPEED_PRIOR.index):
        if cand not in timings:
            run(cand)
    if not timings:
        raise RuntimeError("no Hessian-vector-product formulation works for this model")
    fastest = min(timings.values())
    for cand in [c for c, t in timings.items() if t <= _SLACK * fastest]:
        run(cand)
    best = min(timings, key=timings.__getitem__)
    loss.strategy[kind] = best
    loss.calibration[kind] = timings
    return results[best]


def trusted_strategy(loss: ModelLoss) -> str:
    """The most trusted formulation among those the loss allows (a reference to check against)."""
    return next(c for c in _TRUST_ORDER if c.split(":")[0] in _modes(loss))
