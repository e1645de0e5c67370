import dataclasses
import json
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from sgdtemp.errors import UserError
from sgdtemp.experiments.reproduce import (
    PROFILES,
    Profile,
    ShiftOptions,
    StationaryConfig,
    profile_spec,
    reproduce,
    stationary_checks,
)
from sgdtemp.experiments.spec import load_spec
from sgdtemp.experiments.two_minima import TwoMinimaConfig, plan_two_minima

TINY_STATIONARY = StationaryConfig(
    temperatures=(0.1, 0.2, 0.4, 0.8), grid=64, sgd_chains=256, sgd_steps=600, witness=()
)

TINY_SPEC = """
name = "tiny"
dataset = "digits"
model = "mlp"
epochs = 2
seeds = [0, 1]
eval = ["heldout", "test", "corrupt:gaussian_noise:3"]
checkpoints = true
[data]
heldout = 300
train_subset = 400
[model_args]
width = 16
[grid]
temperatures = [0.001, 0.002]
batch_sizes = [16, 32]
[measure.curvature]
probes = 2
top_k = 1
examples = 128
"""


TINY_STATIONARY_SPEC = """
name = "tiny-stationary"
dataset = "digits"
model = "mlp"
seeds = [0]
weight_decay = 0.3
eval = ["heldout", "corrupt:gaussian_noise:3"]
[data]
heldout = 300
train_subset = 400
[model_args]
width = 16
[grid]
temperatures = [0.004, 0.008]
batch_sizes = [16]
[stop]
rule = "stationary"
max_sde_time = 60
probe_every = 0.2
reservoir = 4
[measure.mechanisms]
examples = 100
max_iters = 10
"""


def _tiny_two_minima() -> TwoMinimaConfig:
    q = TwoMinimaConfig.quick()
    fast = {"isotropic": (0.02, 0.04), "translation": (0.065,)}
    models = {k: dataclasses.replace(v, temperatures=fast[k]) for k, v in q.noise_models.items()}
    return dataclasses.replace(
        q,
        n_chains=32,
        n_steps=2000,
        min_steps=400,
        relaxation_multiple=4.0,
        grid_points=401,
        n_train=512,
        n_test=512,
        noise_models=models,
    )


def test_stationary_checks_agree_with_their_closed_forms():
    summary = stationary_checks(TINY_STATIONARY)
    assert [c["holds"] for c in summary["checks"]] == [True] * 5
    p = summary["p_wide"]
    assert p["temperatures"] == list(TINY_STATIONARY.temperatures)
    assert p["fokker_planck"] == sorted(p["fokker_planck"])  # more wide-basin mass at higher T
    # data noise: the laws whose basin masses depend on the box's walls are left out of S3
    left_out = [p is None for p in p["fokker_planck_data"]]
    assert left_out == [v is not None for v in p["fokker_planck_data_untrusted"]]
    assert not left_out[0] and any(left_out)
    assert summary["witness"] == []
    assert json.loads(json.dumps(summary)) == summary  # JSON values only


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_specs_are_valid_package_data(name):
    profile = PROFILES[name]
    text = resources.files("sgdtemp.experiments").joinpath("profiles", profile.spec).read_text()
    tomllib.loads(text)
    spec = profile_spec(profile, data_root="/data" if profile.needs_data_root else None)
    lrs = {}
    for c in spec.grid:
        lrs.setdefault(round(c.lr, 12), set()).add(c.batch_size)
    assert any(len(b) >= 2 for b in lrs.values())  # the grid holds fixed-lr control lines
    assert {c.seed for c in spec.grid} >= {0, 1}


def test_full_needs_a_data_root():
    with pytest.raises(UserError, match="--data-root"):
        profile_spec(PROFILES["full"])


def test_unknown_profile_and_bad_workers_fail_first(tmp_path):
    with pytest.raises(UserError, match="unknown"):
        reproduce("huge", tmp_path / "out")
    with pytest.raises(UserError, match="workers"):
        reproduce("smoke", tmp_path / "out", workers=0)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_reproduce_end_to_end_and_resume(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    companion = tmp_path / "tiny-stationary.toml"
    companion.write_text(TINY_STATIONARY_SPEC)
    profile = Profile(
        "tiny",
        spec,
        _tiny_two_minima(),
        TINY_STATIONARY,
        ShiftOptions(
            eval_sets=("heldout", "corrupt:gaussian_noise:3"),
            seeds=(0,),
            examples=100,
            max_iters=2,
            max_cg_iters=5,
        ),
        companions=(companion,),
    )
    out = tmp_path / "out"
    first = reproduce(profile, out, workers=2)
    assert first.sweep.ok == 8 and first.sweep.failed == 0
    assert first.shift.ok == 4  # seed 0 of each cell
    assert first.reused == ()
    for name in (
        "report.html",
        "analysis.json",
        "runs.db",
        "two_minima/summary.json",
        "stationary/summary.json",
    ):
        assert (out / name).exists(), name
    ids = [c.id for c in first.claims]
    assert ids[:9] == [f"C{i}" for i in range(1, 10)]
    assert any(i.startswith("TM") for i in ids) and "S5" in ids
    data = json.loads((out / "analysis.json").read_text())
    runs = data["analysis"]["runs"]
    assert len(runs) == 8 and all(r["lr_lambda_max"] is not None for r in runs)
    measured = {c["id"]: c for c in data["claims"]}
    assert measured["C8"]["verdict"] != "not measured"  # the shift reached the analysis
    stationary = first.sweeps["tiny-stationary"]
    assert stationary.ok == 2 and stationary.failed == 0
    assert (out / "sweeps" / "tiny-stationary" / "report.html").exists()  # the companion's report
    from sgdtemp.storage import Store

    with Store(out / "runs.db", readonly=True) as store:
        records = store.runs(sweep="tiny-stationary")
    assert all(r.metrics["stationary"]["max_sde_time"] == 60 for r in records)
    assert any(r.metrics["mechanisms"]["status"] == "ok" for r in records)

    second = reproduce(profile, out, workers=2)
    assert second.sweep.skipped == 8 and second.sweep.ok == 0
    assert second.sweeps["tiny-stationary"].skipped == 2
    assert second.shift.skipped == 4
    assert set(second.reused) == {"two-minima study", "stationary-law checks"}
    assert [c.verdict for c in second.claims] == [c.verdict for c in first.claims]


def test_a_changed_study_config_is_rerun_not_reused(tmp_path):
    from sgdtemp.experiments.reproduce import _stationary

    profile = Profile("p", Path("unused.toml"), None, TINY_STATIONARY)
    assert _stationary(profile, tmp_path) is False
    assert _stationary(profile, tmp_path) is True
    changed = dataclasses.replace(profile, stationary=dataclasses.replace(TINY_STATIONARY, seed=1))
    assert _stationary(changed, tmp_path) is False
    assert load_spec  # the spec loader is what profiles with a path use


def test_two_minima_choices():
    from sgdtemp.experiments.reproduce import _two_minima_config

    smoke, quick = _two_minima_config("smoke"), _two_minima_config("quick")
    assert smoke.n_chains * smoke.n_steps < quick.n_chains * quick.n_steps
    plan = plan_two_minima(smoke)  # a pipeline check that simulates every cell of both models
    assert plan.skipped == [] and {c.noise for c in plan.simulated} == set(smoke.noise_models)
    assert _two_minima_config(quick) is quick
    with pytest.raises(UserError, match="two_minima"):
        _two_minima_config("huge")
