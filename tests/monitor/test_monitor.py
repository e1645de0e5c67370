"""The monitor in a loop: no effect on training, probes, warnings, bad input, failing sinks."""

from __future__ import annotations

import copy
import time
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sgdtemp.curvature import ModelLoss
from sgdtemp.errors import UserError
from sgdtemp.monitor import (
    JSONLSink,
    TemperatureMonitor,
    TemperatureWarning,
    measure_noise_scale,
    read_log,
)
from sgdtemp.train.trainer import SGD as TrainerSGD
from tests.monitor.conftest import make_problem

# B = 16 is above 2 B_noise on this problem: tests about other things silence that notice
quiet = pytest.mark.filterwarnings("ignore::sgdtemp.monitor.TemperatureWarning")


def _loop(model, opt, x, y, steps, *, batch=16, monitor=None, seed=0, sched=None):
    gen = torch.Generator().manual_seed(seed)
    records = []
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if monitor is not None and monitor._hook is None:
            records.append(monitor.step(batch_size=batch, loss=loss))
        if sched is not None:
            sched.step()
    return records


def _dropout_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 3)).double()


@quiet
@pytest.mark.parametrize("hook", [False, True], ids=["step-call", "optimizer-hook"])
def test_training_is_bit_identical_with_and_without_the_monitor(hook):
    """The probe touches no parameter, gradient, mode, buffer or global random state."""
    _, x, y = make_problem(300)
    runs = []
    for monitored in (False, True):
        model = _dropout_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        monitor = None
        if monitored:
            monitor = TemperatureMonitor(
                model, opt, F.cross_entropy, probe=(x[:64], y[:64]), every=3, hook=hook,
                batch_size=16,
            )  # fmt: skip
        torch.manual_seed(123)  # dropout masks come from the global generator
        _loop(model, opt, x, y, 12, monitor=monitor)
        assert model.training
        runs.append([p.detach().clone() for p in model.parameters()])
        if monitor is not None:
            assert monitor.steps == 12 and len(monitor.probes) == 4
            monitor.close()
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_a_hooked_monitor_warns_at_the_users_optimizer_step():
    model, x, y = make_problem(300)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    TemperatureMonitor(
        model, opt, F.cross_entropy, probe=(x[:64], y[:64]), every=1, hook=True, batch_size=64
    )
    with pytest.warns(TemperatureWarning, match="noise scale") as caught:
        _loop(model, opt, x, y, 1, batch=64)
    assert caught[0].filename == __file__


@quiet
def test_probe_records_and_log(tmp_path):
    model, x, y = make_problem(400)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    path = tmp_path / "log.jsonl"
    with TemperatureMonitor(
        model, opt, F.cross_entropy, probe=(x[:128], y[:128]), every=5, log_every=2,
        sinks=[JSONLSink(path)], meta={"model": "tanh-mlp"},
    ) as monitor:  # fmt: skip
        records = _loop(model, opt, x, y, 11, monitor=monitor)
    probe = records[4]
    assert probe.is_probe and not records[3].is_probe
    assert probe.noise_method == "per-example" and probe.noise_units == 128
    assert probe.noise_floor == pytest.approx(probe.temperature / 4 * probe.trace_cov)
    assert probe.stability_threshold == pytest.approx(3.0)
    assert probe.stability_ratio == pytest.approx(probe.lr_lambda_max / 3.0)
    assert probe.lambda_max_converged and probe.probe_seconds > 0
    log = read_log(path)
    assert log.meta["model"] == "tanh-mlp" and log.meta["noise_method"] == "per-example"
    assert [r["step"] for r in log.records] == [2, 4, 5, 6, 8, 10, 11]  # 11: sent at close
    assert [r["step"] for r in log.probes] == [5, 10]
    first = log.records[0]
    assert {"step", "lr", "batch_size", "temperature", "sde_time", "loss"} <= set(first)
    assert "noise_scale" not in first
    assert {"noise_scale", "lambda_max", "stability_ratio"} <= set(log.probes[0])
    assert log.records[1]["loss"] == pytest.approx(float(records[3].loss))


@quiet
def test_noise_scale_in_the_record_is_the_probe_estimate():
    model, x, y = make_problem(400)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = TemperatureMonitor(model, opt, F.cross_entropy, probe=(x[:64], y[:64]), every=1)
    record = _loop(model, opt, x, y, 1, monitor=monitor)[0]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    direct = measure_noise_scale(ModelLoss(model, F.cross_entropy, (x[:64], y[:64])), theta)
    assert record.noise_scale == pytest.approx(direct.value, rel=1e-12)
    assert (record.noise_scale_low, record.noise_scale_high) == pytest.approx(
        (direct.low, direct.high), rel=1e-12
    )


def test_edge_of_stability_warns_once():
    """Least squares: H = 2 X^T X / n exactly; an lr past 2 / lambda_max is flagged."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64) + 0.1 * torch.randn(
        128, generator=gen, dtype=torch.float64
    )
    model = nn.Linear(4, 1, bias=False).double()
    feats = x[:64]
    lam = float(torch.linalg.eigvalsh(2 * feats.T @ feats / 64)[-1])
    lr = 1.2 * 2 / lam
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def loss_fn(out, target):
        return F.mse_loss(out[:, 0], target)

    monitor = TemperatureMonitor(model, opt, loss_fn, probe=(feats, y[:64]), every=1)
    with pytest.warns(TemperatureWarning, match="past the edge of stability") as caught:
        for _ in range(3):
            opt.zero_grad()
            loss_fn(model(x[:16]), y[:16]).backward()
            opt.step()
            record = monitor.step(batch_size=16)
    assert sum("edge of stability" in str(w.message) for w in caught) == 1
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert abs(record.lr_lambda_max - lr * lam) <= record.lambda_max_residual + 1e-12
    assert record.stability_ratio == pytest.approx(1.2, rel=1e-3)
    assert any("edge of stability" in e for e in record.events)


def test_large_batch_warns_against_the_noise_scale():
    model, x, y = make_problem(2000)  # B_noise about 4.5 at this initialization
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = TemperatureMonitor(model, opt, F.cross_entropy, probe=(x[:256], y[:256]), every=1)
    with pytest.warns(TemperatureWarning, match="over 2x the noise scale"):
        record = _loop(model, opt, x, y, 1, batch=256, monitor=monitor)[0]
    assert record.critical_batch == "above" and record.noise_scale < 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = _loop(model, opt, x, y, 1, batch=256, monitor=monitor)[0]  # warned once already
    assert again.critical_batch == "above" and "over 2x the noise scale" in again.events[0]


@quiet
def test_the_trainers_sgd_and_adam():
    model, x, y = make_problem(300)
    params = [p for p in model.parameters()]
    opt = TrainerSGD(params, lr=0.1, momentum=0.9)
    monitor = TemperatureMonitor(model, opt, F.cross_entropy, probe=(x[:64], y[:64]), every=2)
    for _ in range(2):
        loss = F.cross_entropy(model(x[:16]), y[:16])
        opt.step(torch.autograd.grad(loss, params))
        record = monitor.step(batch_size=16)
    assert record.temperature == pytest.approx(0.1 / (16 * 0.1))
    assert record.stability_threshold == pytest.approx(3.8) and record.is_probe
    with pytest.raises(UserError, match="hook=True needs a torch.optim optimizer"):
        TemperatureMonitor(
            model, opt, F.cross_entropy, probe=(x[:64], y[:64]), hook=True, batch_size=8
        )


@quiet
def test_per_group_lrs_weight_the_noise_scale():
    model, x, y = make_problem(300)
    first, second = model[0], model[2]
    opt = torch.optim.SGD(
        [{"params": first.parameters(), "lr": 0.1}, {"params": second.parameters(), "lr": 0.025}]
    )
    monitor = TemperatureMonitor(model, opt, F.cross_entropy, probe=(x[:64], y[:64]), every=1)
    record = _loop(model, opt, x, y, 1, monitor=monitor)[0]
    assert record.temperature is None and "groups differ" in record.temperature_note
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    scale = torch.cat([torch.full((56,), 1.0), torch.full((27,), 0.5)]).double()
    direct = measure_noise_scale(
        ModelLoss(model, F.cross_entropy, (x[:64], y[:64])), theta, scale=scale
    )
    assert record.noise_scale == pytest.approx(direct.value, rel=1e-12)
    assert record.lambda_max is None and record.stability_ratio == pytest.approx(
        record.lr_lambda_max / 2.0
    )


class _NoVmap(nn.Module):
    """A model whose forward branches on data: torch.func.vmap cannot run it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3).double()

    def forward(self, x):
        if float(x.sum()) > 1e9:
            return self.lin(2 * x)
        return self.lin(x)


@quiet
def test_micro_batches_when_vmap_fails():
    _, x, y = make_problem(300)
    model = _NoVmap()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = TemperatureMonitor(model, opt, F.cross_entropy, probe=(x[:64], y[:64]), every=1)
    assert monitor.unit_size == 4 and monitor.meta["noise_method"] == "micro-batch"
    record = _loop(model, opt, x, y, 1, monitor=monitor)[0]
    assert record.noise_method == "micro-batch" and record.noise_units == 16
    with pytest.raises(UserError, match="per-example gradients"):
        TemperatureMonitor(model, opt, F.cross_entropy, probe=(x[:64], y[:64]), per_example=True)


@quiet
def test_adaptive_cadence_keeps_the_budget():
    """With every=None a probe runs only when it still fits in budget x training time."""
    model, x, y = make_problem(400)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = TemperatureMonitor(
        model, opt, F.cross_entropy, probe=(x[:64], y[:64]), budget=0.2, log_every=1000
    )
    records, worst = [], 0.0
    for _ in range(300):
        time.sleep(0.002)  # a slower training step (data loading, a larger model)
        records += _loop(model, opt, x, y, 1, monitor=monitor)
        worst = max(worst, monitor.monitor_seconds - 0.2 * monitor.train_seconds)
    assert not records[0].is_probe  # the first probe waits until it fits in the budget
    longest = max(p.probe_seconds for p in monitor.probes)
    assert worst <= longest  # over budget by at most a misjudged probe
    assert len(monitor.probes) >= 3
    assert monitor.overhead == monitor.monitor_seconds / monitor.train_seconds


class _Failing:
    def __init__(self):
        self.calls = 0

    def write(self, record):
        self.calls += 1
        raise OSError("disk full")

    def close(self):
        raise OSError("disk full")


@quiet
def test_a_failing_sink_warns_once_and_training_goes_on(tmp_path):
    model, x, y = make_problem(300)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    bad, path = _Failing(), tmp_path / "log.jsonl"
    with pytest.warns(TemperatureWarning, match="sink _Failing failed") as caught:
        monitor = TemperatureMonitor(
            model, opt, F.cross_entropy, probe=(x[:64], y[:64]), every=4, log_every=1,
            sinks=[bad, JSONLSink(path)],
        )  # fmt: skip
        _loop(model, opt, x, y, 8, monitor=monitor)
        monitor.close()
    assert sum("sink" in str(w.message) for w in caught) == 1
    assert bad.calls == 8 and monitor.sink_failures[0] == 9 and monitor.sink_failures[1] == 0
    assert len(read_log(path).records) == 8


@quiet
def test_a_failing_probe_warns_once_and_training_goes_on():
    model, x, y = make_problem(300)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    broken = {"now": False}

    def loss_fn(out, target):
        if broken["now"]:
            raise RuntimeError("out of memory")
        return F.cross_entropy(out, target)

    monitor = TemperatureMonitor(model, opt, loss_fn, probe=(x[:64], y[:64]), every=2)
    broken["now"] = True
    with pytest.warns(TemperatureWarning, match="noise scale failed at step 2") as caught:
        records = _loop(model, opt, x, y, 6, monitor=monitor)
    assert len(caught) == 3  # noise scale, lambda_max, probe loss: each kind once
    assert [r.probe_error is not None for r in records] == [False, True] * 3
    data = records[1].to_dict()
    assert "noise_scale" not in data and "lambda_max" not in data
    assert "lambda_max failed at step 2 (RuntimeError: out of memory)" in data["probe_error"]
    assert "noise scale failed at step 4" in records[3].to_dict()["probe_error"]


# ---------------------------------------------------------------- bad input at attach time


def _bad(**changes):
    model, x, y = make_problem(100)
    kwargs = {
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "loss_fn": F.cross_entropy,
        "probe": (x[:32], y[:32]),
    }
    kwargs.update(changes)
    return kwargs


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": object()}, "cannot read an optimizer of type object"),
        ({"optimizer": torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.1)}, "not trainable"),
        ({"probe": (torch.zeros(32, 5, dtype=torch.float64), torch.zeros(32).long())}, "probe"),
        ({"probe": (torch.zeros(32, 6), torch.zeros(31).long())}, "first (example) axis"),
        ({"probe": (torch.zeros(4, 6), torch.zeros(4).long())}, "at least 8 examples"),
        ({"probe": torch.zeros(32, 6)}, "pair (x, y)"),
        ({"loss_fn": lambda out, y: out.sum(dim=1)}, "scalar"),
        ({"every": 0}, "every must be"),
        ({"budget": 1.5}, "budget"),
        ({"hook": True}, "hook=True needs batch_size"),
        ({"batch_factor": 1.0}, "greater than 1"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_input_is_a_one_line_error_at_attach(changes, message):
    kwargs = _bad(**changes)
    model, optimizer, loss_fn = kwargs.pop("model"), kwargs.pop("optimizer"), kwargs.pop("loss_fn")
    with pytest.raises(UserError) as err:
        TemperatureMonitor(model, optimizer, loss_fn, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_calling_step_on_a_hooked_monitor_is_an_error():
    kwargs = _bad(hook=True, batch_size=8)
    monitor = TemperatureMonitor(
        kwargs.pop("model"), kwargs.pop("optimizer"), kwargs.pop("loss_fn"), **kwargs
    )
    with pytest.raises(UserError, match="do not call step"):
        monitor.step(batch_size=8)
    monitor.close()
    assert monitor._hook is None


def test_model_is_left_untouched_by_attach():
    model, x, y = make_problem(100)
    model.train()
    before = copy.deepcopy(model.state_dict())
    TemperatureMonitor(
        model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, probe=(x, y)
    )
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
