r"""Which learning rate keeps a run the same when the batch size changes.

Keeping the temperature $T = \eta/(B(1-\beta))$ fixed keeps the SDE, and so the stationary law,
the same (theory.md §2.4): $\eta' = \eta\,B'/B$ (at fixed momentum). The answer is only as good as
the SDE picture, which breaks

- when $\eta'\lambda_{\max} \ge 2$: gradient descent itself is unstable along the sharpest
  direction;
- when $\eta'\lambda_{\max}$ is not small: the discrete-time covariance
  $H\Sigma + \Sigma H - \eta H \Sigma H = TC$ differs from the SDE's by a factor
  $1/(1 - \eta\lambda/2)$ along $\lambda$ (10 % at $\eta\lambda = 0.18$);
- when $B'$ approaches the data set size $N$: sampling without replacement scales the noise by
  $(N-B)/(N-1)$, so equal $T$ no longer means equal noise;
- at very small $B'$, where minibatch noise is far from Gaussian (Li, Malladi & Arora, 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sgdtemp.errors import UserError, require_positive
from sgdtemp.theory.temperature import (
    lr_for_temperature,
    temperature,
    without_replacement_factor,
)

__all__ = ["ScaleAdvice", "scale_learning_rate"]

#: lr * lambda_max above which the discrete-time stationary covariance exceeds the SDE's by
#: more than 10 % along the sharpest direction (1 / (1 - x/2) = 1.1 at x = 2/11).
DISCRETIZATION_LIMIT = 2.0 / 11.0
#: batch sizes below this give strongly non-Gaussian minibatch noise.
SMALL_BATCH = 8
#: without-replacement factors below this change the noise by more than 10 %.
FINITE_DATA_LIMIT = 0.9


@dataclass(frozen=True)
class ScaleAdvice:
    """The learning rate that keeps the temperature, with its stability verdict.

    Attributes:
        lr: the new learning rate.
        batch_size: the new batch size.
        momentum: the momentum (unchanged).
        temperature: the temperature both runs share.
        lr_sharpness: ``lr * sharpness`` of the new run, or None when no sharpness is given.
        stable: ``lr * sharpness < 2``, or None when unknown.
        noise_factor_change: ratio of the without-replacement factors new/old (1 when N unknown).
        warnings: where the SDE picture is known to break for the new run, one sentence each.
    """

    lr: float
    batch_size: int
    momentum: float
    temperature: float
    lr_sharpness: float | None
    stable: bool | None
    noise_factor_change: float
    warnings: tuple[str, ...]


def scale_learning_rate(
    lr: float,
    batch_size: int,
    to_batch_size: int,
    *,
    momentum: float = 0.0,
    sharpness: float | None = None,
    n_train: int | None = None,
) -> ScaleAdvice:
    r"""The learning rate for ``to_batch_size`` that keeps $T = \eta/(B(1-\beta))$ unchanged.

    Args:
        lr: current learning rate.
        batch_size: current batch size.
        to_batch_size: the new batch size.
        momentum: heavy-ball momentum of both runs.
        sharpness: largest Hessian eigenvalue $\lambda_{\max}$ of the train loss, if known.
        n_train: training-set size, if known (for the finite-data check).

    Returns:
        The advice, with warnings where the SDE picture is known to break.

    Raises:
        UserError: on non-positive inputs or a batch size larger than ``n_train``.

    Example:
        >>> a = scale_learning_rate(0.1, 128, 512, sharpness=10.0)
        >>> round(a.lr, 12), a.stable, round(a.lr_sharpness, 12)
        (0.4, False, 4.0)
    """
    temp = temperature(lr, batch_size, momentum)
    require_positive("to_batch_size", to_batch_size)
    new_lr = lr_for_temperature(temp, to_batch_size, momentum)
    if not (math.isfinite(new_lr) and new_lr > 0):
        raise UserError(
            f"lr {lr:g} scaled from batch size {batch_size} to {to_batch_size} gives {new_lr:g}, "
            "not a positive finite learning rate; check lr"
        )
    warnings: list[str] = []
    lr_sharpness = stable = None
    if sharpness is not None:
        require_positive("sharpness", sharpness)
        lr_sharpness = new_lr * sharpness
        stable = lr_sharpness < 2.0
        if not stable:
            warnings.append(
                f"unstable: lr * lambda_max = {lr_sharpness:.3g} >= 2, SGD diverges along the "
                f"sharpest direction; the largest stable lr is {2.0 / sharpness:.3g}"
            )
        elif lr_sharpness > DISCRETIZATION_LIMIT:
            ratio = 1.0 / (1.0 - lr_sharpness / 2.0)
            warnings.append(
                f"lr * lambda_max = {lr_sharpness:.3g}: the discrete-time stationary variance "
                f"along the sharpest direction is {ratio:.2f}x the SDE's, so equal T will not give "
                "equal runs"
            )
    factor_change = 1.0
    if n_train is not None:
        if to_batch_size > n_train:
            raise UserError(
                f"to_batch_size {to_batch_size} is larger than the training set ({n_train})"
            )
        old = without_replacement_factor(n_train, batch_size)
        new = without_replacement_factor(n_train, to_batch_size)
        factor_change = new / old if old > 0 else float("inf")
        if new < FINITE_DATA_LIMIT:
            warnings.append(
                f"batch size {to_batch_size} is {to_batch_size / n_train:.0%} of the data: "
                f"sampling without replacement scales the noise by {new:.2f}, so equal T means "
                "less noise"
            )
    if to_batch_size < SMALL_BATCH:
        warnings.append(
            f"batch size {to_batch_size} < {SMALL_BATCH}: minibatch noise is far from Gaussian "
            "and the SDE approximation is least accurate"
        )
    return ScaleAdvice(
        lr=new_lr,
        batch_size=int(to_batch_size),
        momentum=momentum,
        temperature=temp,
        lr_sharpness=lr_sharpness,
        stable=stable,
        noise_factor_change=factor_change,
        warnings=tuple(warnings),
    )
