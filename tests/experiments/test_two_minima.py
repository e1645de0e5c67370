"""The two-minima study: its summary contract, its config, and what it says about its cells."""

import dataclasses
import json
import math

import numpy as np
import pytest

from sgdtemp.errors import UserError
from sgdtemp.experiments.two_minima import (
    NoiseModelConfig,
    TwoMinimaConfig,
    load_config,
    plan_two_minima,
    run_two_minima,
)
from sgdtemp.files import json_text
from sgdtemp.theory import temperature


def tiny_config(**overrides):
    """Both kinds of cell: isotropic T=0.004 and translation T=0.065 B=1 need more than the
    budget (not simulated); the others fit."""
    base = dict(
        noise_models={
            "isotropic": NoiseModelConfig(0.02, 8.0, (0.004, 0.032)),
            "translation": NoiseModelConfig(0.4, 1.75, (0.065,)),
        },
        n_train=512,
        n_test=512,
        n_chains=64,
        n_steps=3000,
        min_steps=200,
        record_every=4,
        grid_points=801,
    )
    base.update(overrides)
    return TwoMinimaConfig(**base)


@pytest.fixture(scope="module")
def tiny_result():
    return run_two_minima(tiny_config())


def test_cells_cover_grid_with_iso_temperature_pairs(tiny_result):
    cells = tiny_result.summary["cells"]
    assert len(cells) == 2 * 3
    for c in cells:
        assert math.isclose(temperature(c["lr"], c["batch_size"]), c["T"], rel_tol=1e-12)
    for group in tiny_result.summary["iso_temperature"]:
        assert len(set(group["batch_sizes"])) == 2
        assert len(set(group["lrs"])) == 2


def test_summary_contract_and_json(tiny_result):
    s = tiny_result.summary
    assert set(s["landscape"]) >= {"m", "w", "pi"}
    keys = {
        "noise",
        "T",
        "lr",
        "batch_size",
        "simulated",
        "equilibration",
        "p_wide_sgd",
        "p_wide_sde",
        "p_wide_fp",
        "p_wide_gibbs",
        "equilibrated",
        "lr_sharpness",
        "test_loss",
        "test_loss_fp",
        "decomposition",
        "decomposition_fp",
    }
    for c in s["cells"]:
        assert keys <= set(c)
        assert 0.0 <= c["p_wide_fp"] <= 1.0 and 0.0 <= c["p_wide_gibbs"] <= 1.0
        law = c["decomposition_fp"]["domain"]["per_basin"]
        assert law["wide"]["probability"] == pytest.approx(c["p_wide_fp"], abs=1e-12)
        if c["simulated"]:
            assert set(c["test_loss"]) == {"sampling", "domain"}
            for p in ("p_wide_sgd", "p_wide_sde"):
                assert 0.0 <= c[p] <= 1.0
            assert c["equilibration"]["steps_run"] == c["equilibration"]["steps_planned"] > 0
        else:  # said up front, nothing made up
            assert c["p_wide_sgd"] is None and c["test_loss"] is None
            assert c["equilibrated"] is False and c["equilibration"]["steps_run"] == 0
            assert "cannot equilibrate" in c["equilibration"]["note"]
    assert [n["cell"] for n in s["plan"]["not_simulated"]] == [
        "isotropic T=0.004 B=2",
        "isotropic T=0.004 B=4",
        "translation T=0.065 B=1",
    ]
    assert json.loads(json_text(s))["cells"][0]["noise"] == "isotropic"


def test_arrays_contract(tiny_result):
    a = tiny_result.arrays
    for noise in ("isotropic", "translation"):
        for part in ("train", "test", "domain"):
            for var in ("x", "xi"):
                assert f"{noise}_{part}_{var}" in a
        assert a[f"{noise}_train_x"].shape == (512,)
    dens = [k for k in a if k.endswith("_fp_density")]
    assert len(dens) == 6
    grid = a["isotropic_grid"]
    for k in dens:
        if k.startswith("isotropic"):
            assert np.trapezoid(a[k], grid) == pytest.approx(1.0, abs=1e-6)
    simulated = [c for c in tiny_result.summary["cells"] if c["simulated"]]
    hists = [k for k in a if k.endswith("_sgd_hist")]
    assert len(hists) == len(simulated) == 3


def test_domain_test_set_is_translated(tiny_result):
    a = tiny_result.arrays
    shift = tiny_result.summary["landscape"]["domain_shift"]
    assert a["isotropic_domain_x"].mean() - a["isotropic_test_x"].mean() == pytest.approx(
        shift, abs=0.01
    )


def test_translation_share_of_the_noise(tiny_result):
    """The translation model's noise is mostly translation at the sharp minimum, not at the
    wide one; the isotropic model's is tilt everywhere."""
    models = tiny_result.summary["noise_models"]
    trans, iso = models["translation"], models["isotropic"]
    sharp = 1 - [m == trans["wide_minimum"] for m in trans["minimizers"]].index(True)
    assert trans["translation_share_at_minima"][sharp] > 0.5
    assert trans["translation_share_at_minima"][1 - sharp] < 0.1
    assert max(iso["translation_share_at_minima"]) < 0.05


def test_deterministic():
    cfg = tiny_config(noise_models={"isotropic": NoiseModelConfig(0.02, 8.0, (0.032,))})
    a = run_two_minima(cfg).summary["cells"]
    b = run_two_minima(cfg).summary["cells"]
    assert [c["p_wide_sgd"] for c in a] == [c["p_wide_sgd"] for c in b]
    assert [c["p_wide_sde"] for c in a] == [c["p_wide_sde"] for c in b]


def test_a_plan_for_another_config_is_refused():
    cfg = tiny_config(noise_models={"isotropic": NoiseModelConfig(0.02, 8.0, (0.032,))})
    plan = plan_two_minima(cfg)
    with pytest.raises(ValueError, match="another config"):
        run_two_minima(dataclasses.replace(cfg, seed=1), plan=plan)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(n_chains=3), "n_chains"),
        (dict(burn_in=1.0), "burn_in"),
        (dict(lr_scale=0.0), "lr_scale"),
        (dict(relaxation_multiple=0.0), "relaxation_multiple"),
        (dict(min_steps=10**6), "min_steps"),
        (dict(n_steps=True), "n_steps"),
        (dict(noise_models={"bogus": NoiseModelConfig(0.1, 1.0, (0.1,))}), "bogus"),
        (dict(noise_models={"isotropic": NoiseModelConfig(0.1, 1.0, (-0.1,))}), "temperatures"),
        (dict(w=(0.5, -1.0)), "w"),
    ],
)
def test_bad_config_rejected(overrides, match):
    with pytest.raises(UserError, match=match):
        dataclasses.replace(TwoMinimaConfig(), **overrides)


def test_batch_larger_than_data_rejected():
    cfg = tiny_config(n_train=16)
    with pytest.raises(UserError, match="n_train"):
        cfg.batch_sizes(0.0001)


def test_load_config_overrides_and_errors(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(
        "n_chains = 128\nseed = 3\nrelaxation_multiple = 8\n"
        "[noise_models.isotropic]\ntemperatures = [0.01, 0.02]\n"
    )
    cfg = load_config(good)
    assert cfg.n_chains == 128 and cfg.seed == 3 and cfg.relaxation_multiple == 8.0
    assert cfg.noise_models["isotropic"].temperatures == (0.01, 0.02)
    assert (
        cfg.noise_models["isotropic"].tilt_std
        == TwoMinimaConfig().noise_models["isotropic"].tilt_std
    )
    assert load_config(good, quick=True).n_steps == TwoMinimaConfig.quick().n_steps
    bad_key = tmp_path / "bad_key.toml"
    bad_key.write_text("n_chain = 128\n")
    with pytest.raises(UserError, match="n_chain"):
        load_config(bad_key)
    bad_syntax = tmp_path / "bad_syntax.toml"
    bad_syntax.write_text("n_chains = = 3\n")
    with pytest.raises(UserError, match="line 1"):
        load_config(bad_syntax)
    bad_type = tmp_path / "bad_type.toml"
    bad_type.write_text('n_steps = "many"\n')
    with pytest.raises(UserError, match="n_steps"):
        load_config(bad_type)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
