"""``fit(monitor=...)``: the trainer's hook runs the same monitor, training stays bit-identical."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.monitor import MonitorOptions, read_log
from sgdtemp.train import FitOptions, fit


def _data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 1, 4, 4, generator=gen)
    y = (x.flatten(1)[:, :8].sum(1) > 0).long() + (x.flatten(1)[:, 8:].sum(1) > 1).long()
    return x, y


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))


@pytest.mark.filterwarnings("ignore::sgdtemp.monitor.TemperatureWarning")
def test_fit_with_the_monitor_trains_the_same_and_records_its_probes(tmp_path):
    x, y = _data()
    options = FitOptions(lr=0.2, batch_size=20, epochs=3, momentum=0.5, device="cpu", seed=1)
    plain = fit(_model(), (x, y), options)
    path = tmp_path / "monitor.jsonl"
    monitored = fit(
        _model(), (x, y), options, monitor=MonitorOptions(probe_size=64, every=10, jsonl=str(path))
    )
    assert all(torch.equal(plain.state[k], monitored.state[k]) for k in plain.state)
    assert plain.epochs == monitored.epochs and "monitor" not in plain.to_dict()
    summary = monitored.to_dict()["monitor"]
    assert summary["steps"] == monitored.steps == 60
    assert [p["step"] for p in summary["probes"]] == [10, 20, 30, 40, 50, 60]
    probe = summary["probes"][0]
    assert probe["temperature"] == pytest.approx(options.temperature)
    assert probe["stability_threshold"] == pytest.approx(3.0)  # 2 (1 + 0.5)
    assert {"noise_scale_low", "lambda_max", "stability_ratio", "noise_floor"} <= set(probe)
    assert summary["meta"]["optimizer"] == "SGD" and summary["meta"]["trainer"] == "fit"
    log = read_log(path)
    assert [r["step"] for r in log.probes] == [10, 20, 30, 40, 50, 60]
    assert log.probes[0] == probe  # the record and the log carry the same fields
    json.dumps(summary)  # JSON-ready


def test_monitor_options_are_checked():
    with pytest.raises(UserError, match="every must be a positive integer"):
        MonitorOptions(every=0)
    with pytest.raises(UserError, match="budget"):
        MonitorOptions(budget=0.0)
