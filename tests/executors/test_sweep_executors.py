"""One spec through `sgdtemp sweep` on local, Ray and Dask: identical keys and metrics."""

from __future__ import annotations

import json
import textwrap

import pytest

from sgdtemp import cli
from sgdtemp.cli import sweep as sweep_cmd
from sgdtemp.storage import Store

pytestmark = pytest.mark.slow

SPEC = textwrap.dedent(
    """\
    dataset = "digits"
    model = "mlp"
    epochs = 1
    seeds = [0]
    eval = ["test", "corrupt:contrast:3"]

    [data]
    train_subset = 120

    [model_args]
    width = 8

    [grid]
    temperatures = [0.004]
    batch_sizes = [30]

    [measure.curvature]
    probes = 2
    examples = 32

    [measure.shift]
    examples = 32
    max_iters = 3
    max_cg_iters = 5
    """
)
TIMING = ("seconds", "train_seconds")


def sweep(argv, capsys):
    parser = cli._Parser(prog="sgdtemp")
    sweep_cmd.register(parser.add_subparsers(dest="command", parser_class=cli._Parser))
    args = parser.parse_args(["sweep", *argv])
    code = args.handler(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def metrics_by_key(db):
    with Store(db) as store:
        return {
            r.key: {k: v for k, v in r.metrics.items() if k not in TIMING} for r in store.runs()
        }


def test_identical_metrics_through_local_ray_and_dask(tmp_path, capsys, ray_cluster, dask_cluster):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    runs = {
        "local": ["--executor", "local", "--workers", "1"],
        "ray": ["--executor", "ray", "--address", ray_cluster],
        "dask": ["--executor", "dask", "--address", dask_cluster],
    }
    results = {}
    for name, options in runs.items():
        db = tmp_path / f"{name}.db"
        summary = sweep([str(spec), "--db", str(db), "--json", *options], capsys)
        assert summary["ok"] == 1
        results[name] = metrics_by_key(db)
        with Store(db) as store:
            assert {r.environment["torch_threads"] for r in store.runs()} == {1}
    assert results["local"] == results["ray"] == results["dask"]
    first = next(iter(results["local"].values()))
    assert first["curvature"]["status"] == "ok" and "contrast:3" in first["epochs"][-1]["corrupt"]
    assert first["shift"]["status"] == "ok" and set(first["shift"]) >= {
        "test",
        "corrupt:contrast:3",
    }
