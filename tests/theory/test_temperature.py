"""Temperature T = lr / (B (1 - momentum)) and its inverse."""

from __future__ import annotations

import pytest

from sgdtemp.errors import UserError
from sgdtemp.theory import lr_for_temperature, temperature, without_replacement_factor


@pytest.mark.parametrize("lr,batch,momentum", [(0.1, 32, 0.0), (0.01, 128, 0.9), (2.0, 1, 0.5)])
def test_round_trip(lr: float, batch: int, momentum: float) -> None:
    T = temperature(lr, batch, momentum)
    assert T == pytest.approx(lr / (batch * (1 - momentum)), rel=1e-15)
    assert lr_for_temperature(T, batch, momentum) == pytest.approx(lr, rel=1e-14)


def test_iso_temperature_line() -> None:
    # doubling the batch at fixed T doubles the learning rate
    T = temperature(0.05, 64)
    assert lr_for_temperature(T, 128) == pytest.approx(0.1, rel=1e-14)


def test_without_replacement_factor_limits() -> None:
    assert without_replacement_factor(100, 1) == 1.0
    assert without_replacement_factor(100, 100) == 0.0


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: temperature(0.0, 32), "lr"),
        (lambda: temperature(0.1, -1), "batch_size"),
        (lambda: temperature(0.1, 32, momentum=1.0), "momentum"),
        (lambda: lr_for_temperature(-1.0, 32), "temperature"),
        (lambda: without_replacement_factor(10, 11), "larger than"),
        (lambda: without_replacement_factor(1, 1), "at least 2"),
    ],
)
def test_bad_input_raises(call, match: str) -> None:
    with pytest.raises(UserError, match=match):
        call()
