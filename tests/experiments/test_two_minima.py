import dataclasses
import json
import math

import numpy as np
import pytest

from sgdtemp.errors import UserError
from sgdtemp.experiments.two_minima import (
    NoiseModelConfig,
    TwoMinimaConfig,
    _checks,
    load_config,
    run_two_minima,
)
from sgdtemp.theory import temperature


def tiny_config(**overrides):
    base = dict(
        noise_models={
            "isotropic": NoiseModelConfig(0.02, 8.0, (0.004, 0.032)),
            "translation": NoiseModelConfig(0.5, 0.0, (0.04,)),
        },
        n_train=512,
        n_test=512,
        n_chains=64,
        n_steps=400,
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
        "p_wide_sgd",
        "p_wide_sde",
        "p_wide_fp",
        "p_wide_gibbs",
        "equilibrated",
        "lr_sharpness",
        "test_loss",
        "decomposition",
    }
    for c in s["cells"]:
        assert keys <= set(c)
        assert set(c["test_loss"]) == {"sampling", "domain"}
        for p in ("p_wide_sgd", "p_wide_sde", "p_wide_fp", "p_wide_gibbs"):
            assert 0.0 <= c[p] <= 1.0
    from sgdtemp.files import json_safe

    json.dumps(json_safe(s), allow_nan=False)


def test_arrays_contract(tiny_result):
    a = tiny_result.arrays
    for noise in ("isotropic", "translation"):
        for part in ("train", "test", "domain"):
            for var in ("x", "xi"):
                assert f"{noise}_{part}_{var}" in a
        assert a[f"{noise}_train_x"].shape == (512,)
    dens = [k for k in a if k.endswith("_fp_density")]
    assert dens
    grid = a["isotropic_grid"]
    for k in dens:
        if k.startswith("isotropic"):
            assert np.trapezoid(a[k], grid) == pytest.approx(1.0, abs=1e-6)


def test_domain_test_set_is_translated(tiny_result):
    a = tiny_result.arrays
    shift = tiny_result.summary["landscape"]["domain_shift"]
    assert a["isotropic_domain_x"].mean() - a["isotropic_test_x"].mean() == pytest.approx(
        shift, abs=0.01
    )


def test_deterministic():
    cfg = tiny_config(noise_models={"isotropic": NoiseModelConfig(0.02, 8.0, (0.016,))})
    a = run_two_minima(cfg).summary["cells"]
    b = run_two_minima(cfg).summary["cells"]
    assert [c["p_wide_sgd"] for c in a] == [c["p_wide_sgd"] for c in b]
    assert [c["p_wide_sde"] for c in a] == [c["p_wide_sde"] for c in b]


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(n_chains=3), "n_chains"),
        (dict(burn_in=1.0), "burn_in"),
        (dict(lr_scale=0.0), "lr_scale"),
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
        "n_chains = 128\nseed = 3\n[noise_models.isotropic]\ntemperatures = [0.01, 0.02]\n"
    )
    cfg = load_config(good)
    assert cfg.n_chains == 128 and cfg.seed == 3
    assert cfg.noise_models["isotropic"].temperatures == (0.01, 0.02)
    assert (
        cfg.noise_models["isotropic"].tilt_std
        == TwoMinimaConfig().noise_models["isotropic"].tilt_std
    )
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


def test_test_loss_claim_judges_the_domain_shift_and_shows_the_sampling_one(tiny_result):
    """The paper's claim is about the domain shift; the sampling series is context, not judged."""
    summary = {**tiny_result.summary, "cells": [dict(c) for c in tiny_result.summary["cells"]]}
    iso = sorted((c for c in summary["cells"] if c["noise"] == "isotropic"), key=lambda c: c["T"])
    temps = sorted({c["T"] for c in iso})
    for c in iso:  # domain loss falls with T, sampling loss rises
        rank = temps.index(c["T"])
        c["test_loss"] = {"domain": 3.0 - rank, "sampling": 1.0 + rank}
    claims = [
        check
        for check in _checks(summary, tiny_config())
        if check["claim"].startswith("isotropic: the domain-shift test loss")
    ]
    assert len(claims) == 1
    assert claims[0]["holds"] is True
    assert "domain test loss (SGD) by T: 3.0000, 2.0000" in claims[0]["detail"]
    assert "sampling test loss (SGD) by T: 1.0000, 2.0000" in claims[0]["detail"]
    for c in iso:  # now the domain loss rises too
        c["test_loss"] = {"domain": 1.0 + temps.index(c["T"]), "sampling": 1.0}
    verdicts = [
        check["holds"]
        for check in _checks(summary, tiny_config())
        if check["claim"].startswith("isotropic: the domain-shift test loss")
    ]
    assert verdicts == [False]
