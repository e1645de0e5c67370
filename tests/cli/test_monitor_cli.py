"""``sgdtemp monitor``: the page and summary from a real log; bad logs are one-line errors."""

from __future__ import annotations

import json

import pytest

from sgdtemp.cli import main
from tests.monitor.conftest import write_monitor_log


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    path = tmp_path_factory.mktemp("monitor") / "log.jsonl"
    write_monitor_log(path)
    return path


def test_writes_the_page_figures_and_summary(log, tmp_path, capsys):
    out = tmp_path / "page"
    assert main(["monitor", str(log), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 40 and summary["probes"] == 8
    assert summary["last_probe"]["step"] == 40
    assert summary["batch_size"] == 64 and summary["meta"]["model"] == "tanh-mlp"
    jumps = [e for e in summary["events"] if "temperature changed" in e["event"]]
    assert [e["step"] for e in jumps] == [16, 21, 31]  # StepLR at 16 and 31, B x4 at 21
    for name in ("temperature", "noise_scale", "stability", "loss"):
        assert (out / f"{name}.png").stat().st_size > 1000
    html = (out / "monitor.html").read_text()
    assert html.count('<img src="data:image/png;base64,') == 4
    assert "lr·λ_max / threshold" in html and "http" not in html.replace("http-equiv", "")
    assert json.loads((out / "monitor.json").read_text())["records"] == summary["records"]


def test_plain_output(log, tmp_path, capsys):
    assert main(["monitor", str(log), "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("40 steps, 8 probes; last T = ")
    assert "wrote" in text and "monitor.html" in text


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such log file"), ('{"x": 1}\n', "no monitor records"), ("", "no monitor records")],
)
def test_bad_logs_are_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "log.jsonl"
    if content is not None:
        path.write_text(content)
    out = tmp_path / "out"
    assert main(["monitor", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()  # no debris for a failed command
