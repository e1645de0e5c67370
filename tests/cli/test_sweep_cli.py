"""`sgdtemp sweep` and `sgdtemp export` end to end on the digits data set."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import textwrap

import pytest

from sgdtemp import cli
from sgdtemp.cli import export as export_cmd
from sgdtemp.cli import sweep as sweep_cmd
from sgdtemp.storage import Store

SPEC = textwrap.dedent(
    """\
    name = "digits-iso"
    dataset = "digits"
    model = "mlp"
    epochs = 1
    seeds = [0]
    eval = ["heldout", "test"]

    [data]
    train_subset = 256

    [model_args]
    width = 16

    [grid]
    temperatures = [0.002]
    batch_sizes = [32, 64]
    """
)


def sgdtemp(argv, capsys):
    """Run the command line in-process; returns (exit code, stdout, stderr)."""
    if {"sweep", "export"} <= set(cli.COMMANDS):
        code = cli.main(argv)
    else:  # until the lead lists the commands: the same parser class and error handling
        parser = cli._Parser(prog="sgdtemp")
        sub = parser.add_subparsers(dest="command", parser_class=cli._Parser)
        sweep_cmd.register(sub)
        export_cmd.register(sub)
        try:
            args = parser.parse_args(argv)
            code = args.handler(args)
        except cli.UserError as err:
            print(f"sgdtemp {argv[0]}: error: {err}", file=__import__("sys").stderr)
            code = 2
        except SystemExit as exc:
            code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One sweep through the command line (module-wide): its folder and its ``--json`` output."""
    import contextlib
    import sys

    folder = tmp_path_factory.mktemp("sweep")
    (folder / "spec.toml").write_text(SPEC)
    argv = [
        "sweep",
        str(folder / "spec.toml"),
        "--db",
        str(folder / "runs.db"),
        "--workers",
        "1",
        "--json",
    ]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        parser = cli._Parser(prog="sgdtemp")
        sweep_cmd.register(parser.add_subparsers(dest="command", parser_class=cli._Parser))
        args = parser.parse_args(argv)
        code = args.handler(args)
    assert code == 0, err.getvalue()
    print(err.getvalue(), file=sys.stderr)
    return folder, json.loads(out.getvalue())


def test_sweep_json_then_rerun_skips(swept, capsys):
    folder, first = swept
    assert first == {
        "total": 2,
        "ok": 2,
        "diverged": 0,
        "failed": 0,
        "unstable": 0,
        "skipped": 0,
        "failed_earlier": 0,
    }
    spec, db = str(folder / "spec.toml"), str(folder / "runs.db")
    code, out, _ = sgdtemp(["sweep", spec, "--db", db, "--json"], capsys)
    assert code == 0 and json.loads(out)["skipped"] == 2
    code, out, _ = sgdtemp(["sweep", spec, "--db", db], capsys)
    assert code == 0 and "0 ok" in out and "2 already done" in out
    with Store(db) as store:
        records = store.runs(sweep="digits-iso")
        assert [r.batch_size for r in records] == [32, 64]
        assert [r.lr for r in records] == pytest.approx([0.002 * 32, 0.002 * 64])
        for record in records:
            assert record.metrics["status"] == "ok" and record.metrics["dataset"] == "digits"
            assert set(record.metrics["epochs"][-1]) >= {"train", "heldout", "test"}
            assert record.environment["torch_threads"] == 1


def test_export_csv_to_stdout(swept, capsys):
    swept, _ = swept
    code, out, err = sgdtemp(["export", "--db", str(swept / "runs.db")], capsys)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    with Store(swept / "runs.db") as store:
        records = store.runs()
    assert [r["key"] for r in rows] == [r.key for r in records]
    for row, record in zip(rows, records):
        assert float(row["lr"]) == record.lr and int(row["batch_size"]) == record.batch_size
        assert float(row["temperature"]) == pytest.approx(record.temperature)
        assert row["metric.status"] == "ok"
        assert json.loads(row["metrics"]) == record.metrics


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow not installed")
def test_export_parquet(swept, capsys):
    import pyarrow.parquet as pq

    swept, _ = swept
    out = swept / "runs.parquet"
    code, stdout, err = sgdtemp(
        [
            "export",
            "--db",
            str(swept / "runs.db"),
            "--format",
            "parquet",
            "--out",
            str(out),
            "--sweep",
            "digits-iso",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(stdout) == {"rows": 2, "format": "parquet", "out": str(out)}
    table = pq.read_table(out).to_pylist()
    with Store(swept / "runs.db") as store:
        assert [row["key"] for row in table] == [r.key for r in store.runs()]
        assert [row["seed"] for row in table] == [r.seed for r in store.runs()]


def test_export_errors(tmp_path, capsys, monkeypatch):
    code, _, err = sgdtemp(["export", "--db", str(tmp_path / "none.db")], capsys)
    assert code == 2 and "no such store" in err
    Store(tmp_path / "r.db").close()
    code, _, err = sgdtemp(["export", "--db", str(tmp_path / "r.db"), "--sweep", "x"], capsys)
    assert code == 2 and "--sweep x: not in" in err
    code, _, err = sgdtemp(
        ["export", "--db", str(tmp_path / "r.db"), "--format", "parquet"], capsys
    )
    assert code == 2 and "--out FILE.parquet" in err
    # Fault injection: neither pyarrow nor pandas importable.
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("pyarrow", "pandas") else real(name, *a),
    )
    code, _, err = sgdtemp(
        [
            "export",
            "--db",
            str(tmp_path / "r.db"),
            "--format",
            "parquet",
            "--out",
            str(tmp_path / "x.parquet"),
        ],
        capsys,
    )
    assert code == 2 and "pip install pyarrow" in err and err.count("\n") == 1
    assert not (tmp_path / "x.parquet").exists()


def test_sweep_input_errors_are_one_line_before_any_work(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("batch_sizes = [32, 64]", "batch_sizes = [32, 4096]"))
    db = tmp_path / "runs.db"
    code, _, err = sgdtemp(["sweep", str(spec), "--db", str(db)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{spec}:16: grid.batch_sizes: batch size 4096 exceeds the 256 training images" in err
    spec.write_text(SPEC.replace('model = "mlp"', 'model = "transformer"'))
    code, _, err = sgdtemp(["sweep", str(spec), "--db", str(db)], capsys)
    assert code == 2 and f"{spec}:3: model: unknown model" in err
    spec.write_text(SPEC)
    for executor in ("ray", "dask"):
        code, _, err = sgdtemp(
            [
                "sweep",
                str(spec),
                "--db",
                str(db),
                "--executor",
                executor,
                "--address",
                "127.0.0.1:1",
            ],
            capsys,
        )
        installed = importlib.util.find_spec({"ray": "ray", "dask": "distributed"}[executor])
        expected = "--address 127.0.0.1:1: no" if installed else "pip install"
        assert code == 2 and expected in err and err.count("\n") == 1
    code, _, err = sgdtemp(["sweep", str(spec), "--db", str(db), "--address", "h:1"], capsys)
    assert code == 2 and "--address needs --executor ray or dask" in err
    assert not db.exists()  # nothing was written
    code, _, err = sgdtemp(["sweep", str(tmp_path / "no.toml"), "--db", str(db)], capsys)
    assert code == 2 and "no such sweep spec" in err


def test_progress_bar_renders_runs_running_and_failed(capsys):
    from sgdtemp.experiments.engine import SweepProgress

    bar = sweep_cmd._Bar()
    bar(SweepProgress(total=5, skipped=1, done=0, running=2, failed=0, waiting=0))
    bar(SweepProgress(total=5, skipped=1, done=3, running=1, failed=1, waiting=0))
    bar.close()
    err = capsys.readouterr().err
    assert "3/4" in err and "running=1" in err and "failed=1" in err


def test_parsers_have_help():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    sweep_cmd.register(sub)
    export_cmd.register(sub)
    for name in ("sweep", "export"):
        assert sub.choices[name].format_help().startswith("usage:")
