r"""Temperature of SGD: the one place where $T$ is computed.

SGD with learning rate $\eta$, batch size $B$ and heavy-ball momentum $\beta$ is approximated by
the SDE $d\theta = -\nabla L\,dt + \sqrt{T\,C(\theta)}\,dW$ with SDE time
$t = \text{steps}\cdot\eta/(1-\beta)$ and temperature

$$T = \frac{\eta}{B\,(1-\beta)}.$$

Sampling the minibatch without replacement from $N$ examples multiplies the gradient-noise
covariance by $(N-B)/(N-1)$ (:func:`without_replacement_factor`).
"""

from __future__ import annotations

from sgdtemp.errors import UserError, require_positive

__all__ = ["temperature", "without_replacement_factor", "lr_for_temperature"]


def temperature(lr: float, batch_size: float, momentum: float = 0.0) -> float:
    r"""Temperature $T = \eta / (B(1-\beta))$ of SGD.

    Args:
        lr: learning rate $\eta > 0$.
        batch_size: minibatch size $B > 0$.
        momentum: heavy-ball momentum $\beta \in [0, 1)$.

    Returns:
        The temperature.

    Raises:
        UserError: on a non-positive lr or batch size or a momentum outside [0, 1).

    Example:
        >>> temperature(0.1, 32)
        0.003125
        >>> round(temperature(0.01, 32, momentum=0.9), 12)
        0.003125
    """
    require_positive("lr", lr)
    require_positive("batch_size", batch_size)
    if not 0.0 <= momentum < 1.0:
        raise UserError(f"momentum must lie in [0, 1), got {momentum}")
    return lr / (batch_size * (1.0 - momentum))


def lr_for_temperature(temp: float, batch_size: float, momentum: float = 0.0) -> float:
    r"""The learning rate that gives temperature ``temp`` at ``batch_size``: $\eta = TB(1-\beta)$.

    Example:
        >>> lr_for_temperature(0.003125, 64)
        0.2
    """
    require_positive("temperature", temp)
    require_positive("batch_size", batch_size)
    if not 0.0 <= momentum < 1.0:
        raise UserError(f"momentum must lie in [0, 1), got {momentum}")
    return temp * batch_size * (1.0 - momentum)


def without_replacement_factor(n: int, batch_size: int) -> float:
    r"""Factor $(N-B)/(N-1)$ on the minibatch gradient covariance when sampling without replacement.

    Args:
        n: number of training examples $N \ge 2$.
        batch_size: minibatch size $1 \le B \le N$.

    Returns:
        The factor, 1 at $B = 1$ and 0 at $B = N$ (full batch: no noise).

    Raises:
        UserError: if the batch is larger than the data set or sizes are not positive.

    Example:
        >>> without_replacement_factor(1001, 1)
        1.0
        >>> without_replacement_factor(1001, 501)
        0.5
    """
    require_positive("n", n)
    require_positive("batch_size", batch_size)
    if batch_size > n:
        raise UserError(f"batch_size {batch_size} is larger than the data set ({n} examples)")
    if n < 2:
        raise UserError(f"need at least 2 examples to define gradient noise, got {n}")
    return (n - batch_size) / (n - 1)
