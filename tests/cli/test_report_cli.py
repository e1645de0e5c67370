import json
import sys

import pytest

from sgdtemp import cli
from sgdtemp.analysis.synthetic import SyntheticSweep, write_synthetic_sweep
from sgdtemp.cli import report as report_cli
from sgdtemp.cli import reproduce as reproduce_cli
from sgdtemp.errors import UserError
from sgdtemp.storage import Store


def run_cli(argv):
    """``sgdtemp ARGV`` through the real entry point once the commands are registered there."""
    if "report" in cli.COMMANDS and "reproduce" in cli.COMMANDS:
        return cli.main(argv)
    parser = cli._Parser(prog="sgdtemp")
    sub = parser.add_subparsers(dest="command", parser_class=cli._Parser)
    report_cli.register(sub)
    reproduce_cli.register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UserError as err:
        print(f"sgdtemp {args.command}: error: {err}", file=sys.stderr)
        return 2


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "runs.db"
    write_synthetic_sweep(
        path,
        SyntheticSweep(
            temperatures=(1 / 2048, 1 / 1024), batch_sizes=(16, 32), seeds=(0, 1), epochs=3
        ),
    )
    return path


def test_report_prints_the_claim_table(tmp_path, capsys):
    with Store(tmp_path / "empty.db"):
        pass
    assert (
        run_cli(["report", "--db", str(tmp_path / "empty.db"), "--out", str(tmp_path / "r")]) == 0
    )
    out = capsys.readouterr().out
    assert (tmp_path / "r" / "report.html").is_file()
    assert out.splitlines()[0].startswith("C0   not measured")
    assert "wrote" in out


def test_report_json(db, tmp_path, capsys):
    assert run_cli(["report", "--db", str(db), "--out", str(tmp_path / "r"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sweep"] == "synthetic" and data["figures"] >= 5
    assert (tmp_path / "r" / "report.html").is_file()
    assert {c["verdict"] for c in data["claims"]} <= {
        "holds",
        "does not hold at this scale",
        "not measured",
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "--db", "{tmp}/missing.db", "--out", "{tmp}/r"], "no such store"),
        (["report", "--db", "{db}", "--out", "{tmp}/r", "--sweep", "nope"], "not in"),
        (["report", "--db", "{db}", "--out", "{db}"], "not a folder"),
        (
            ["report", "--db", "{db}", "--out", "{tmp}/r", "--two-minima", "{tmp}/none"],
            "no such folder",
        ),
        (["reproduce", "--profile", "full", "--out", "{tmp}/o"], "--data-root"),
        (["reproduce", "--out", "{tmp}/o", "--workers", "0"], "--workers"),
        (["reproduce", "--out", "{tmp}/o", "--data-root", "{tmp}/nowhere"], "--data-root"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(db, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, db=db) for a in argv]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["report", "reproduce"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--out" in out
    if command == "reproduce":
        assert "quick" in out and "full" in out and "smoke" in out


def test_unknown_profile_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["reproduce", "--profile", "huge", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
