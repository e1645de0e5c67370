import math

import pytest

from sgdtemp.errors import UserError
from sgdtemp.theory import temperature
from sgdtemp.theory.scaling import DISCRETIZATION_LIMIT, scale_learning_rate


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("b, b2", [(32, 128), (256, 16), (7, 7)])
def test_temperature_is_kept(momentum, b, b2):
    a = scale_learning_rate(0.05, b, b2, momentum=momentum)
    assert math.isclose(temperature(a.lr, b2, momentum), temperature(0.05, b, momentum))
    assert math.isclose(a.lr, 0.05 * b2 / b)
    assert a.stable is None and a.lr_sharpness is None


def test_stability_verdict_at_the_edge():
    # lr' = 0.1 * 4 = 0.4; the edge lr * lambda = 2 is at lambda = 5.
    assert scale_learning_rate(0.1, 32, 128, sharpness=4.99).stable is True
    unstable = scale_learning_rate(0.1, 32, 128, sharpness=5.0)
    assert unstable.stable is False
    assert any("unstable" in w for w in unstable.warnings)


def test_discretization_warning_only_above_limit():
    lam = 1.0
    below = scale_learning_rate(DISCRETIZATION_LIMIT * 0.99, 32, 32, sharpness=lam)
    above = scale_learning_rate(DISCRETIZATION_LIMIT * 1.01, 32, 32, sharpness=lam)
    assert not any("discrete-time" in w for w in below.warnings)
    assert any("discrete-time" in w for w in above.warnings)


def test_finite_data_and_small_batch_warnings():
    a = scale_learning_rate(0.1, 64, 5000, n_train=10000)
    assert any("without replacement" in w for w in a.warnings)
    assert a.noise_factor_change == pytest.approx((10000 - 5000) / (10000 - 64))
    assert any("Gaussian" in w for w in scale_learning_rate(0.1, 64, 2).warnings)
    assert scale_learning_rate(0.1, 64, 128, n_train=60000).warnings == ()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-0.1, batch_size=32, to_batch_size=64), "lr"),
        (dict(lr=0.1, batch_size=0, to_batch_size=64), "batch_size"),
        (dict(lr=0.1, batch_size=32, to_batch_size=0), "to_batch_size"),
        (dict(lr=0.1, batch_size=32, to_batch_size=64, sharpness=-1.0), "sharpness"),
        (dict(lr=0.1, batch_size=32, to_batch_size=64, momentum=1.0), "momentum"),
        (dict(lr=0.1, batch_size=32, to_batch_size=640, n_train=600), "training set"),
    ],
)
def test_bad_input(kwargs, match):
    lr, b, b2 = kwargs.pop("lr"), kwargs.pop("batch_size"), kwargs.pop("to_batch_size")
    with pytest.raises(UserError, match=match):
        scale_learning_rate(lr, b, b2, **kwargs)
