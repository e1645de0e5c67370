"""The one exception type for user mistakes.

Anything a user can get wrong (a non-positive learning rate, a batch larger than the data, an
unknown landscape, a malformed config file) raises :class:`UserError` with a one-line message
that names the input and the fix. The command line turns it into ``sgdtemp: error: ...`` and exit
code 2, without a traceback; library callers get an ordinary ``ValueError`` subclass.
"""

from __future__ import annotations

__all__ = ["UserError", "require_positive"]


class UserError(ValueError):
    """A mistake in user input, reported as one line before any work starts."""


def require_positive(name: str, value: float) -> None:
    """Raise :class:`UserError` unless ``value`` is a finite number greater than zero.

    Args:
        name: how the user spells the input (e.g. ``"--lr"`` or ``"lr"``).
        value: the value to check.

    Raises:
        UserError: if the value is not positive and finite.

    Example:
        >>> require_positive("lr", 0.1)
        >>> require_positive("lr", -1)
        Traceback (most recent call last):
        ...
        sgdtemp.errors.UserError: lr must be a positive number, got -1
    """
    if not (value > 0 and value != float("inf")):
        raise UserError(f"{name} must be a positive number, got {value}")
