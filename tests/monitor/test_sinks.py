"""Sinks read back by real readers: JSONL, TensorBoard's event reader, an MLflow SQLite store."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from sgdtemp.errors import UserError
from sgdtemp.monitor import (
    JSONLSink,
    MLflowSink,
    TemperatureMonitor,
    TensorBoardSink,
    read_log,
    scalar_tags,
)
from tests.monitor.conftest import make_problem

quiet = pytest.mark.filterwarnings("ignore::sgdtemp.monitor.TemperatureWarning")


def _train(sinks, steps=12):
    model, x, y = make_problem(300)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    with TemperatureMonitor(
        model, opt, F.cross_entropy, probe=(x[:64], y[:64]), every=4, log_every=2, sinks=sinks
    ) as monitor:
        for _ in range(steps):
            idx = torch.randint(0, 300, (8,), generator=gen)
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            monitor.step(batch_size=8, loss=loss)
    return monitor


@quiet
def test_tensorboard_scalars_match_the_jsonl_log(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _train([JSONLSink(tmp_path / "log.jsonl"), TensorBoardSink(tmp_path / "tb")])
    log = read_log(tmp_path / "log.jsonl")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"sgdtemp/temperature", "sgdtemp/lr", "sgdtemp/noise_scale"} <= tags
    assert {"sgdtemp/lambda_max", "sgdtemp/stability_ratio", "sgdtemp/batch_size"} <= tags
    for name in ("temperature", "noise_scale", "stability_ratio", "loss"):
        steps, values = log.series(name)
        got = events.Scalars(f"sgdtemp/{name}")
        assert [e.step for e in got] == steps
        assert [e.value for e in got] == pytest.approx(values, rel=1e-6)  # float32 on disk


@quiet
def test_mlflow_sqlite_store_holds_the_same_metrics(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri
    sink = MLflowSink(tracking_uri=uri, experiment="monitor-test", flush_every=7)
    _train([JSONLSink(tmp_path / "log.jsonl"), sink])
    log = read_log(tmp_path / "log.jsonl")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(sink.run_id)
    assert run.info.status == "FINISHED"  # the sink started the run, so it ended it
    assert client.get_experiment(run.info.experiment_id).name == "monitor-test"
    for name in ("temperature", "lambda_max", "noise_scale"):
        steps, values = log.series(name)
        history = sorted(client.get_metric_history(sink.run_id, f"sgdtemp/{name}"), key=_step)
        assert [m.step for m in history] == steps
        assert [m.value for m in history] == pytest.approx(values, rel=1e-12)


def _step(metric):
    return metric.step


def test_mlflow_sink_logs_to_the_active_run(mlflow_uri, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    with mlflow.start_run() as run:
        sink = MLflowSink()
        sink.write({"step": 3, "temperature": 0.5, "critical_batch": "near"})
        sink.close()
        assert sink.run_id == run.info.run_id
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "sgdtemp/temperature")
    assert [(m.step, m.value) for m in history] == [(3, 0.5)]


def test_jsonl_log_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    sink = JSONLSink(path)
    sink.write_meta({"optimizer": "SGD"})
    sink.write({"step": 1, "lr": 0.1, "temperature": 0.01})
    sink.close()
    with path.open("a") as handle:
        handle.write('{"step": 2, "lr": 0.1, "tempera')  # a run killed mid-write
    log = read_log(path)
    assert log.meta == {"optimizer": "SGD"} and len(log.records) == 1 and log.skipped == 1
    assert json.loads(path.read_text().splitlines()[1])["temperature"] == 0.01


def test_reading_a_file_that_is_not_a_log_is_a_user_error(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(UserError, match="no monitor records"):
        read_log(tmp_path / "x.jsonl")
    with pytest.raises(UserError, match="no such log file"):
        read_log(tmp_path / "missing.jsonl")


def test_scalar_tags_skip_what_is_not_a_number():
    tags = scalar_tags(
        {"step": 4, "lr": 0.1, "events": ["x"], "critical_batch": "near", "temperature": None}
    )
    assert tags == {"sgdtemp/lr": 0.1}


def test_tensorboard_sink_needs_a_place():
    with pytest.raises(UserError, match="either log_dir or writer"):
        TensorBoardSink()
