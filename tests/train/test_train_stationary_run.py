"""Training until stationary: probes, the rule, the window, expectations; fused as one by one."""

from __future__ import annotations

import math

import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.experiments.spec import parse_spec
from sgdtemp.train import FitOptions, build_model, fit, fit_many
from sgdtemp.train.options import StationaryOptions


def _data(n=480, dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(n, 1, 6, 6, generator=g, dtype=dtype)
    w = torch.randn(36, 4, generator=g, dtype=dtype)
    y = (x.flatten(1) @ w + 0.3 * torch.randn(n, 4, generator=g, dtype=dtype)).argmax(1)
    return (x[:400], y[:400]), (x[400:], y[400:])


def _factory(g):
    return build_model("mlp", in_shape=(1, 6, 6), n_classes=4, width=8, generator=g).double()


STOP = StationaryOptions(max_sde_time=40.0, probe_examples=256, reservoir=6)


def _options(lr, seed=0, stop=STOP):
    return FitOptions(
        lr=lr, batch_size=16, weight_decay=0.1, seed=seed, device="cpu", stationary=stop
    )


def test_a_run_stops_once_its_window_is_complete():
    train, test = _data()
    r = fit(
        _factory(torch.Generator().manual_seed(0)), train, _options(0.4), eval_sets={"test": test}
    )
    s = r.stationary
    assert s["reached"] and 0 < s["sde_time"] <= s["sde_time_run"]
    spe = 400 // 16
    assert r.steps % spe == 0 and len(r.epochs) - 1 == r.steps // spe  # whole epochs
    window = s["window"]
    assert window["start"] == pytest.approx(s["sde_time"])
    # the window lasts window_fraction * t_s (to the end of that epoch), or hits the budget
    t_end = min(s["sde_time"] * 1.5, math.ceil(STOP.max_sde_time / 0.4 / spe) * spe * 0.4)
    assert window["end"] >= t_end - 1e-9 and window["end"] - t_end < spe * 0.4 + 1e-9
    assert window["reservoir"] == 6 and window["probes"] >= 6
    assert set(r.expectations) == {"train", "test"}
    for v in r.expectations.values():
        assert v["loss"] > 0 and 0 < v["stderr"] < v["loss"] and v["at_mean"] > 0
    record = r.to_dict()
    assert record["expectations"] == {k: v["loss"] for k, v in r.expectations.items()}
    assert record["stationary"]["reached"] is True
    assert r.stationary_iterates.shape == (6, sum(p.numel() for p in _factory(None).parameters()))


def test_a_run_that_runs_out_of_budget_is_never_declared():
    train, _ = _data()
    stop = StationaryOptions(max_sde_time=3.0, probe_examples=256, reservoir=4)
    r = fit(_factory(torch.Generator().manual_seed(0)), train, _options(0.1, stop=stop))
    assert not r.stationary["reached"] and r.stationary["sde_time"] is None
    assert r.expectations is None and r.stationary_mean is None
    spe = 400 // 16
    assert r.steps == math.ceil(math.ceil(3.0 / 0.1) / spe) * spe  # the budget, whole epochs
    assert r.to_dict()["stationary"]["reached"] is False and "expectations" not in r.to_dict()


def test_fused_runs_stop_where_they_would_alone():
    train, test = _data()
    runs = [_options(lr, seed) for lr in (0.2, 0.4, 0.8) for seed in (0, 1)]
    many = fit_many(_factory, train, runs, eval_sets={"test": test}, batched=True)
    for o, a in zip(runs, many):
        b = fit(_factory(torch.Generator().manual_seed(o.seed)), train, o, eval_sets={"test": test})
        assert a.stationary["step"] == b.stationary["step"]  # the same detection
        assert a.steps == b.steps and len(a.epochs) == len(b.epochs)  # the same stop
        if b.expectations is not None:
            for name in ("train", "test"):
                assert a.expectations[name]["loss"] == pytest.approx(
                    b.expectations[name]["loss"], rel=1e-9
                )
    assert sum(r.stationary["reached"] for r in many) >= 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(max_sde_time=0.0), "max_sde_time"),
        (dict(max_sde_time=math.inf), "max_sde_time"),
        (dict(max_sde_time=1.0, probe_every=2.0), "exceeds"),
        (dict(max_sde_time=1.0, reservoir=1), "reservoir"),
    ],
)
def test_bad_stationary_options(kwargs, match):
    with pytest.raises(UserError, match=match):
        StationaryOptions(**kwargs)


SPEC = """
dataset = "digits"
model = "mlp"
weight_decay = 0.05
[grid]
temperatures = [0.001]
batch_sizes = [16]
"""


def test_spec_stop_table():
    spec = parse_spec(SPEC + '[stop]\nrule = "stationary"\nmax_sde_time = 50\nalpha = 0.01\n')
    assert spec.stop.max_sde_time == 50 and spec.stop.rule.alpha == 0.01
    assert spec.to_dict()["stop"]["max_sde_time"] == 50
    assert parse_spec(SPEC).stop is None


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ('rule = "stationary"', "stop.max_sde_time: missing"),
        ("max_sde_time = 5", 'need rule = "stationary"'),
        ('rule = "stationary"\nmax_sde_time = 5\nwindows = 2', "did you mean 'window'"),
        ('rule = "until"\nmax_sde_time = 5', "must be one of epochs, stationary"),
        ('rule = "stationary"\nmax_sde_time = 5\nalpha = 2', "alpha"),
    ],
)
def test_spec_stop_errors_name_the_line_and_key(table, match):
    with pytest.raises(UserError, match=match) as info:
        parse_spec(SPEC + "[stop]\n" + table + "\n", source="s.toml")
    assert str(info.value).startswith("s.toml:")
