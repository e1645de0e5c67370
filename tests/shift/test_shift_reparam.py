"""Reparametrization check on a 2-layer ReLU net (theory.md §1.4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.shift import measure_shift, relu_rescaling, reparametrization_check

INVARIANT_RTOL = 1e-8  # float64: the invariant terms agree to rounding


def test_invariant_terms_unchanged_trace_and_sharpness_changed(helpers):
    wd = 1e-2
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (50,), generator=gen)
    xe = x + 0.2 * torch.randn(50, 3, generator=gen, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    helpers.to_train_minimum(model, nn.CrossEntropyLoss(), x, y, wd)
    shift = measure_shift(model, nn.CrossEntropyLoss(), (x, y), (xe, y), weight_decay=wd)
    check = reparametrization_check(
        model,
        nn.CrossEntropyLoss(),
        (x, y),
        (xe, y),
        shift,
        scales=relu_rescaling(model, 3.0),
        num_probes=64,
        generator=torch.Generator().manual_seed(0),
    )
    assert check.output_change < 1e-12
    assert check.max_invariant_relative_change() < INVARIANT_RTOL
    for before, _ in check.invariant.values():
        assert abs(before) > 1e-8  # non-trivial values
    tr_before, tr_after = check.variant["trace"]
    se = max(check.trace_stderr)
    assert abs(tr_after - tr_before) > 0.1 * abs(tr_before)
    assert abs(tr_after - tr_before) > 5 * se
    lam_before, lam_after = check.variant["lambda_max"]
    assert abs(lam_after - lam_before) > 0.1 * lam_before


def test_relu_rescaling_finds_chains_and_rejects_others():
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 2)
    )
    scales = relu_rescaling(net, 2.0)
    assert scales == {
        "1.weight": 2.0,
        "1.bias": 2.0,
        "3.weight": 2.0,
        "3.bias": 4.0,
        "5.weight": 0.25,
    }
    with pytest.raises(UserError, match="no rescalable"):
        relu_rescaling(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 2)))
    with pytest.raises(UserError, match="factor"):
        relu_rescaling(net, 1.0)


def test_a_rescaling_that_changes_the_function_is_refused(helpers):
    x = torch.randn(10, 2, dtype=torch.float64)
    y = torch.randint(0, 2, (10,))
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    shift = measure_shift(model, nn.CrossEntropyLoss(), (x, y), (x, y), weight_decay=0.1)
    with pytest.raises(UserError, match="changes the model's outputs"):
        reparametrization_check(
            model,
            nn.CrossEntropyLoss(),
            (x, y),
            (x, y),
            shift,
            scales={"0.weight": 2.0, "2.weight": 0.5},
        )
