"""The stability threshold against torch.optim.SGD itself on a quadratic (the oracle)."""

import math

import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.theory import effective_lr_factor, stability_threshold

CASES = [
    {"momentum": 0.0},
    {"momentum": 0.5},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.5},
    {"momentum": 0.3, "dampening": 0.2},
    {"momentum": 0.9, "nesterov": True},
    {"momentum": 0.5, "nesterov": True},
]
MARGIN = 0.05  # run at (1 -/+ MARGIN) times the threshold
STEPS = 1500


def _final_size(lr_lambda: float, curvature: float, **opts) -> float:
    """|theta| after STEPS steps of torch.optim.SGD on curvature * theta^2 / 2 from theta = 1."""
    theta = torch.ones(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=lr_lambda / curvature, **opts)
    for _ in range(STEPS):
        opt.zero_grad()
        (0.5 * curvature * theta**2).sum().backward()
        opt.step()
        size = abs(theta.item())
        if not math.isfinite(size) or size > 1e12:
            return math.inf
    return abs(theta.item())


@pytest.mark.parametrize("opts", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_threshold_separates_convergence_from_divergence(opts):
    thr = stability_threshold(
        opts["momentum"], dampening=opts.get("dampening", 0.0), nesterov=opts.get("nesterov", False)
    )
    assert _final_size(thr * (1 - MARGIN), 3.0, **opts) < 1e-3
    assert _final_size(thr * (1 + MARGIN), 3.0, **opts) > 1e3


def test_closed_forms():
    assert stability_threshold() == 2.0
    assert stability_threshold(0.9) == pytest.approx(3.8)
    assert stability_threshold(0.9, dampening=0.9) == pytest.approx(38.0)
    assert stability_threshold(0.9, nesterov=True) == pytest.approx(3.8 / 2.8)
    assert effective_lr_factor(0.9) == pytest.approx(10.0)
    assert effective_lr_factor(0.9, nesterov=True) == pytest.approx(10.0)


def test_effective_lr_matches_the_long_run_step():
    """A constant gradient moves torch's SGD by lr * factor per step in the long run."""
    for opts in CASES:
        theta = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.SGD([theta], lr=0.01, **opts)
        for _ in range(600):
            opt.zero_grad()
            theta.sum().backward()  # gradient 1
            opt.step()
        before = theta.item()
        opt.zero_grad()
        theta.sum().backward()
        opt.step()
        step = before - theta.item()
        factor = effective_lr_factor(
            opts["momentum"],
            dampening=opts.get("dampening", 0.0),
            nesterov=opts.get("nesterov", False),
        )
        assert step == pytest.approx(0.01 * factor, rel=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"momentum": 1.0},
        {"momentum": -0.1},
        {"momentum": 0.5, "dampening": 1.0},
        {"momentum": 0.0, "nesterov": True},
        {"momentum": 0.5, "dampening": 0.1, "nesterov": True},
    ],
)
def test_bad_settings_are_one_line_errors(kwargs):
    momentum = kwargs.pop("momentum")
    with pytest.raises(UserError) as err:
        stability_threshold(momentum, **kwargs)
    assert "\n" not in str(err.value)
