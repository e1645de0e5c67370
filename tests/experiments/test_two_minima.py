"""The two-minima study: its summary contract, its config, and what it says about its cells."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.experiments.two_minima import (
    NoiseModelConfig,
    TwoMinimaConfig,
    load_config,
    plan_two_minima,
    run_two_minima,
)
from sgdtemp.files import json_text
from sgdtemp.simulate import run_sgd
from sgdtemp.theory import temperature, without_replacement_factor


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


def test_sampling_regime_and_comparison_contract(tiny_result):
    """SGD is judged with replacement (the theory's regime) and says so; reshuffled SGD runs
    beside it in the simulated cells with lr*lambda_max <= 0.3, tabulated, not judged."""
    s = tiny_result.summary
    assert s["sampling"]["replacement"] is True and s["sampling"]["theory_regime"] is True
    assert "with replacement" in s["sampling"]["note"]
    comparison = s["sampling_comparison"]
    assert comparison["judged"] is False
    assert comparison["shown_sampling"] == "reshuffled every epoch"
    shown = [c for c in s["cells"] if c["sampling_comparison"] is not None]
    expected = [c for c in s["cells"] if c["simulated"] and c["lr_sharpness"] <= 0.3]
    assert shown == expected and len(shown) == 1
    for c, row in zip(shown, comparison["cells"], strict=True):
        assert c["replacement"] is True and c["T_effective"] == c["T"]
        other = c["sampling_comparison"]
        assert other["replacement"] is False and other["sampling"] == "reshuffled every epoch"
        assert other["T_effective"] == pytest.approx(
            c["T"] * without_replacement_factor(512, c["batch_size"]), rel=1e-15
        )
        assert row["p_wide_sgd_with_replacement"] == c["p_wide_sgd"]
        assert row["p_wide_sgd_reshuffled"] == other["sgd"]["p_wide"]
        assert row["p_wide_fp"] == c["p_wide_fp"]
        assert row["p_wide_fp_without_replacement_factor"] == other["p_wide_fp"]
        assert other["sgd_vs_fp"] == pytest.approx(abs(other["sgd"]["p_wide"] - other["p_wide_fp"]))
        # a different run (its own seed and scheme), not a copy of the judged one
        assert other["sgd"]["p_wide"] != c["p_wide_sgd"]
    assert "not judged: SGD reshuffled every epoch" in comparison["statement"]
    tm5 = [c for c in s["checks"] if c["claim"].startswith("each noise model")][0]
    assert "sampling_comparison: not judged" in tm5["detail"]


def _direct_sgd(plan, cell_plan, config, replacement, seed):
    """Wide-basin fraction of the cell's SGD recomputed directly with run_sgd (its starts)."""
    land = plan.landscapes[cell_plan.noise]
    starts_wide = np.arange(config.n_chains) < config.n_chains // 2
    mins = land.basins.minimizers
    theta0 = np.where(starts_wide, mins[land.basins.wide], mins[1 - land.basins.wide])
    traj = run_sgd(
        land.train,
        torch.as_tensor(theta0).reshape(-1, 1),
        lr=cell_plan.lr,
        batch_size=cell_plan.batch_size,
        n_steps=cell_plan.steps,
        record_every=cell_plan.record_every,
        replacement=replacement,
        generator=torch.Generator().manual_seed(seed),
    )
    th = traj.thetas[..., 0].numpy()
    keep = th[int(round(config.burn_in * th.shape[0])) :]
    return float(land.basins.wide_mask(keep).mean())


@pytest.mark.parametrize("replacement", [True, False])
def test_the_configured_sampling_reaches_sgd_the_law_and_the_comparison(replacement):
    """The judged SGD is run_sgd with the configured scheme, the comparison the other scheme;
    the SDE / Fokker-Planck temperature carries the (N-B)/(N-1) factor only when reshuffled."""
    cfg = tiny_config(
        noise_models={"isotropic": NoiseModelConfig(0.02, 8.0, (0.04,))},
        n_train=16,  # B = 1, 2 of N = 16: a factor 14/15 at B = 2
        replacement=replacement,
    )
    plan = plan_two_minima(cfg)
    cells = run_two_minima(cfg, plan=plan).summary["cells"]
    assert [c["batch_size"] for c in cells] == [1, 2]
    b2 = cells[1]
    assert b2["T_effective"] == pytest.approx(0.04 * (1.0 if replacement else 14 / 15))
    assert b2["replacement"] is replacement
    first = plan.cells[0]
    assert cells[0]["p_wide_sgd"] == _direct_sgd(plan, first, cfg, replacement, first.seed)
    other = cells[0]["sampling_comparison"]
    assert other["replacement"] is (not replacement)
    assert other["sgd"]["p_wide"] == _direct_sgd(plan, first, cfg, not replacement, first.seed + 2)
    assert other["T_effective"] == pytest.approx(0.04)  # B = 1: no factor either way


def test_sampling_comparison_can_be_switched_off():
    cfg = tiny_config(
        noise_models={"isotropic": NoiseModelConfig(0.02, 8.0, (0.032,))}, compare_sampling=False
    )
    s = run_two_minima(cfg).summary
    assert all(c["sampling_comparison"] is None for c in s["cells"])
    assert s["sampling_comparison"]["cells"] == []
    assert s["sampling_comparison"]["statement"].startswith("not run")


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
        (dict(replacement="yes"), "replacement"),
        (dict(compare_sampling=1), "compare_sampling"),
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
        "n_chains = 128\nseed = 3\nrelaxation_multiple = 8\nreplacement = false\n"
        "[noise_models.isotropic]\ntemperatures = [0.01, 0.02]\n"
    )
    cfg = load_config(good)
    assert cfg.n_chains == 128 and cfg.seed == 3 and cfg.relaxation_multiple == 8.0
    assert cfg.replacement is False and cfg.compare_sampling is True
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
    bad_type.write_text("replacement = 1\n")
    with pytest.raises(UserError, match="replacement"):
        load_config(bad_type)
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
