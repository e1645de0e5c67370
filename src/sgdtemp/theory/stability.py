r"""Linear stability of SGD with momentum: the largest stable $\eta\lambda$ along a direction.

On a quadratic with curvature $\lambda$ the update of ``torch.optim.SGD`` (dampening $\tau$,
momentum $\beta$, optionally Nesterov) is a linear recursion in $(\theta, v)$; it converges iff
both roots of its characteristic polynomial lie inside the unit circle (the Jury conditions).
That gives the bound on $a = \eta\lambda$:

- heavy ball, $v \leftarrow \beta v + (1-\tau) g$, $\theta \leftarrow \theta - \eta v$:
  $z^2 - (1 + \beta - a')z + \beta$ with $a' = (1-\tau)a$, stable iff
  $a < 2(1+\beta)/(1-\tau)$ — $2/\eta$ without momentum, $2(1+\beta)/\eta$ with it (the edge
  of stability of J. Cohen et al., "Gradient Descent on Neural Networks Typically Occurs at the
  Edge of Stability", ICLR 2021);
- Nesterov ($\tau = 0$), $\theta \leftarrow \theta - \eta(g + \beta v)$: $z^2 - (1 + \beta -
  a(1+\beta))z + \beta(1-a)$, stable iff $a < 2(1+\beta)/(1+2\beta)$.

L2 weight decay $\delta$ adds $\delta I$ to the Hessian SGD follows, so the sharpness to compare
is $\lambda_{\max}(H) + \delta$. Dampening's first step (where torch does not dampen) does not
change the asymptotic rate.
"""

from __future__ import annotations

from sgdtemp.errors import UserError

__all__ = ["stability_threshold", "effective_lr_factor"]


def _check(momentum: float, dampening: float, nesterov: bool) -> None:
    if not 0.0 <= momentum < 1.0:
        raise UserError(f"momentum must lie in [0, 1), got {momentum}")
    if not 0.0 <= dampening < 1.0:
        raise UserError(f"dampening must lie in [0, 1), got {dampening}")
    if nesterov and (momentum == 0.0 or dampening != 0.0):
        raise UserError("Nesterov momentum needs momentum > 0 and zero dampening")


def stability_threshold(
    momentum: float = 0.0, *, dampening: float = 0.0, nesterov: bool = False
) -> float:
    r"""The largest stable $\eta\lambda$ of SGD on a quadratic of curvature $\lambda$.

    Args:
        momentum: $\beta \in [0, 1)$.
        dampening: $\tau \in [0, 1)$ (``torch.optim.SGD``'s ``dampening``).
        nesterov: Nesterov momentum (needs $\beta > 0$, $\tau = 0$).

    Returns:
        $2(1+\beta)/(1-\tau)$ for heavy ball (2 without momentum), $2(1+\beta)/(1+2\beta)$
        for Nesterov: SGD is stable along a direction iff $\eta\lambda$ is below it.

    Raises:
        UserError: on settings outside those ranges.

    Example:
        >>> stability_threshold(), stability_threshold(0.9)
        (2.0, 3.8)
        >>> round(stability_threshold(0.9, nesterov=True), 6)
        1.357143
    """
    _check(momentum, dampening, nesterov)
    if nesterov:
        return 2.0 * (1.0 + momentum) / (1.0 + 2.0 * momentum)
    return 2.0 * (1.0 + momentum) / (1.0 - dampening)


def effective_lr_factor(
    momentum: float = 0.0, *, dampening: float = 0.0, nesterov: bool = False
) -> float:
    r"""Long-run step per unit gradient over $\eta$: $(1-\tau)/(1-\beta)$.

    A constant gradient $g$ makes heavy-ball SGD move $\eta(1-\tau)g/(1-\beta)$ per step in the
    long run, and Nesterov ($\tau = 0$) $\eta(1 + \beta/(1-\beta))g = \eta g/(1-\beta)$, so the
    SDE's time step and temperature use $\eta(1-\tau)$ as the learning rate with
    $T = \eta(1-\tau)/(B(1-\beta))$ (:func:`sgdtemp.theory.temperature.temperature`).

    Example:
        >>> effective_lr_factor(0.9, dampening=0.5)
        5.000000000000001
    """
    _check(momentum, dampening, nesterov)
    return (1.0 - dampening) / (1.0 - momentum)
