"""Reading optimizers: settings per group, T under schedulers and batch changes by hand values."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from sgdtemp.errors import UserError
from sgdtemp.monitor import TemperatureMonitor, TemperatureWarning, read_optimizer
from sgdtemp.train.trainer import SGD as TrainerSGD
from tests.monitor.conftest import make_problem

RTOL = 1e-12


def _params():
    return [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2))]


def test_torch_sgd_settings_per_group():
    a, b = _params()
    opt = torch.optim.SGD(
        [{"params": [a]}, {"params": [b], "weight_decay": 0.0}],
        lr=0.2,
        momentum=0.9,
        dampening=0.5,
        weight_decay=5e-4,
    )
    s = read_optimizer(opt)
    assert [g.num_params for g in s.groups] == [3, 2]
    assert [g.weight_decay for g in s.groups] == [5e-4, 0.0]
    assert s.is_sgd and s.uniform and s.why_undefined() is None
    assert s.temperature(16) == pytest.approx(0.2 * 0.5 / (16 * 0.1), rel=RTOL)
    assert s.effective_lr() == pytest.approx(0.2 * 0.5 / 0.1, rel=RTOL)
    assert s.stability_threshold() == pytest.approx(2 * 1.9 / 0.5, rel=RTOL)


def test_nesterov_and_plain():
    a, b = _params()
    s = read_optimizer(torch.optim.SGD([a, b], lr=0.1, momentum=0.5, nesterov=True))
    assert s.temperature(10) == pytest.approx(0.1 / (10 * 0.5), rel=RTOL)
    assert s.stability_threshold() == pytest.approx(2 * 1.5 / 2.0, rel=RTOL)
    plain = read_optimizer(torch.optim.SGD([a, b], lr=0.1))
    assert plain.temperature(10) == pytest.approx(0.01, rel=RTOL)
    assert plain.stability_threshold() == 2.0


def test_groups_that_differ():
    a, b = _params()
    lr_differs = read_optimizer(
        torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.2}], momentum=0.9)
    )
    assert lr_differs.temperature(8) is None
    assert "parameter groups differ" in lr_differs.why_undefined()
    assert lr_differs.stability_threshold() == pytest.approx(3.8)  # same momentum: defined
    assert lr_differs.lr == 0.2
    momentum_differs = read_optimizer(
        torch.optim.SGD(
            [{"params": [a], "momentum": 0.9}, {"params": [b], "momentum": 0.5}], lr=0.1
        )
    )
    assert momentum_differs.stability_threshold() is None
    frozen = read_optimizer(
        torch.optim.SGD([{"params": [a], "lr": 0.0}, {"params": [b], "lr": 0.3}], momentum=0.5)
    )
    assert frozen.uniform and frozen.temperature(3) == pytest.approx(0.2, rel=RTOL)


def test_the_trainers_sgd_is_read():
    a, b = _params()
    s = read_optimizer(TrainerSGD([a, b], lr=0.05, momentum=0.9, weight_decay=1e-3))
    assert s.is_sgd and s.groups[0].num_params == 5 and s.groups[0].weight_decay == 1e-3
    assert s.temperature(50) == pytest.approx(0.05 / (50 * 0.1), rel=RTOL)
    assert s.stability_threshold() == pytest.approx(3.8)


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop])
def test_adaptive_optimizers_have_no_temperature(cls):
    s = read_optimizer(cls(_params(), lr=1e-3))
    assert not s.is_sgd and s.temperature(32) is None and s.effective_lr() is None
    assert s.why_undefined().startswith(f"T undefined for {cls.__name__}")
    assert s.lr == 1e-3 and s.stability_threshold() is None


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        (object(), "cannot read an optimizer of type object"),
        (torch.nn.Linear(2, 2), "cannot read an optimizer of type Linear"),
    ],
)
def test_unreadable_optimizers_are_one_line_errors(optimizer, message):
    with pytest.raises(UserError, match=message) as err:
        read_optimizer(optimizer)
    assert "\n" not in str(err.value)


def test_an_optimizer_without_groups_is_an_error():
    opt = torch.optim.SGD(_params(), lr=0.1)
    opt.param_groups.clear()
    with pytest.raises(UserError, match="no parameter groups"):
        read_optimizer(opt)


# ---------------------------------------------------------------- T along a run


def _run(model, opt, x, y, steps, *, batch_sizes, scheduler=None, every=1000):
    monitor = TemperatureMonitor(
        model, opt, F.cross_entropy, probe=(x[:32], y[:32]), every=every, log_every=1
    )
    gen = torch.Generator().manual_seed(0)
    records = []
    for i in range(steps):
        b = batch_sizes(i)
        idx = torch.randint(0, x.shape[0], (b,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        records.append(monitor.step(batch_size=b))
        if scheduler is not None:
            scheduler.step()
    return monitor, records


def test_step_lr_by_hand():
    model, x, y = make_problem(200)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.1)
    with pytest.warns(TemperatureWarning, match="temperature changed x0.1 at step 11") as caught:
        monitor, records = _run(model, opt, x, y, 30, batch_sizes=lambda i: 8, scheduler=sched)
    assert len([w for w in caught if w.category is TemperatureWarning]) == 1  # once per kind
    lrs = [0.1] * 10 + [0.01] * 10 + [0.001] * 10
    for record, lr in zip(records, lrs):
        assert record.lr == pytest.approx(lr, rel=RTOL)
        assert record.temperature == pytest.approx(lr / (8 * 0.5), rel=RTOL)
    assert records[-1].sde_time == pytest.approx(sum(lr / 0.5 for lr in lrs), rel=1e-12)
    assert [r.step for r in records if r.events] == [11, 21]  # every jump is in its record


def _anneal_cos(start, end, pct):
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def test_one_cycle_by_hand():
    """OneCycleLR cycles lr and momentum; T follows both (PyTorch's schedule written out)."""
    model, x, y = make_problem(200)
    total, max_lr, div, final_div, pct_start = 40, 0.5, 25.0, 1e4, 0.3
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=max_lr, total_steps=total, pct_start=pct_start, div_factor=div,
        final_div_factor=final_div, base_momentum=0.85, max_momentum=0.95,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TemperatureWarning)
        _, records = _run(model, opt, x, y, total, batch_sizes=lambda i: 16, scheduler=sched)
    initial, end_up = max_lr / div, pct_start * total - 1
    for i, record in enumerate(records):
        if i <= end_up:
            pct = i / end_up
            lr, mom = _anneal_cos(initial, max_lr, pct), _anneal_cos(0.95, 0.85, pct)
        else:
            pct = (i - end_up) / (total - 1 - end_up)
            lr = _anneal_cos(max_lr, initial / final_div, pct)
            mom = _anneal_cos(0.85, 0.95, pct)
        assert record.lr == pytest.approx(lr, rel=1e-9)
        assert record.momentum == pytest.approx(mom, rel=1e-9)
        assert record.temperature == pytest.approx(lr / (16 * (1 - mom)), rel=1e-9)
        assert record.stability_threshold is None or record.stability_threshold > 0


def test_batch_size_change_by_hand():
    model, x, y = make_problem(200)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    with pytest.warns(TemperatureWarning, match=r"x0\.5 at step 6"):
        _, records = _run(model, opt, x, y, 10, batch_sizes=lambda i: 16 if i < 5 else 32)
    assert [r.temperature for r in records] == pytest.approx([0.0125] * 5 + [0.00625] * 5)
    assert [r.batch_size for r in records] == [16] * 5 + [32] * 5
    assert records[-1].sde_time == pytest.approx(10 * 0.2, rel=RTOL)


def test_adam_records_say_t_is_undefined():
    model, x, y = make_problem(200)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _, records = _run(model, opt, x, y, 4, batch_sizes=lambda i: 16, every=2)
    assert all(r.temperature is None and r.sde_time is None for r in records)
    assert records[1].to_dict()["temperature"] is None
    assert records[1].to_dict()["temperature_note"].startswith("T undefined for Adam")
    assert records[1].noise_scale is not None and records[1].stability_ratio is None
    assert records[1].noise_floor is None and records[1].lambda_max > 0
