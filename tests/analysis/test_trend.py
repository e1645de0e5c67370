import math

import numpy as np
import pytest

from sgdtemp.analysis import (
    RunView,
    analyze,
    has_plateau,
    test_loss_vs_temperature,
)

LN2 = math.log(2.0)


def _view(t, b, seed, train, test, epochs=None):
    e = np.arange(len(train), dtype=float) if epochs is None else np.asarray(epochs, float)
    loss = {"train": np.asarray(train, float), "test": np.asarray(test, float)}
    return RunView("k", "s", "ok", t * b, b, 0.0, t, seed, e, loss, {})


def test_the_plateau_rule_uses_the_last_quarter_of_the_epochs():
    # 8 epochs: window of 2 epochs; 4% change is a plateau, 6% is not
    base = [2.0, 1.5, 1.2, 1.1, 1.05, 1.04, 1.04]
    assert has_plateau(_view(0.01, 8, 0, base + [1.0, 1.0], base + [1, 1]))
    assert not has_plateau(_view(0.01, 8, 0, base + [1.02, 0.98], base + [1, 1]))


def test_matched_train_loss_interpolates_in_epochs():
    # run A reaches 0.5 between epochs 1 and 2; run B ends at 0.5: the matched level
    a = _view(0.002, 16, 0, [2.0, 1.0, 0.0], [2.0, 1.5, 0.5])
    b = _view(0.001, 16, 0, [2.0, 1.0, 0.5], [2.0, 1.4, 0.9])
    (trend,), dropped = test_loss_vs_temperature([a, b], eval_sets=["test"])
    assert dropped == [] and trend.mode == "matched train loss"
    assert trend.target_train_loss == 0.5
    by_t = {p.temperature: p for p in trend.points}
    assert by_t[0.002].values == (pytest.approx(1.0),)  # halfway from 1.5 to 0.5
    assert by_t[0.002].epoch == pytest.approx(1.5)
    assert by_t[0.001].values == (pytest.approx(0.9),)


def test_plateau_mode_compares_final_losses():
    flat = [2.0, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    runs = [
        _view(t, 16, s, [v + 0.1 * i for v in flat], [v + 0.2 * i + 0.01 * s for v in flat])
        for i, t in enumerate((0.001, 0.002))
        for s in (0, 1)
    ]
    (trend,), _ = test_loss_vs_temperature(runs, eval_sets=["test"])
    assert trend.mode == "plateau" and math.isnan(trend.target_train_loss)
    assert [p.mean for p in trend.points] == pytest.approx([0.505, 0.705])


@pytest.mark.parametrize("trend", [0.02, -0.02])
def test_the_sign_of_the_test_loss_trend_is_recovered(make_store, trend):
    analysis = analyze(make_store(trend=trend))
    test = next(t for t in analysis.test_loss if t.eval_set == "test")
    assert test.mode == "matched train loss"
    assert test.slope.negative == (trend > 0)
    assert test.slope.positive == (trend < 0)


def test_a_fixed_epoch_comparison_would_fake_the_trend(make_store):
    # the gap grows with T (trend < 0), but low-T runs are under-trained at the last epoch, so
    # their final test loss is higher: only the matched comparison shows the truth
    analysis = analyze(make_store(trend=-0.02))
    test = next(t for t in analysis.test_loss if t.eval_set == "test")
    assert test.final_slope.negative
    assert test.slope.positive


def test_curvature_slope_matches_the_truth(make_store):
    power = 0.5
    analysis = analyze(make_store(curvature_power=power))
    trends = {c.measure: c for c in analysis.curvature}
    for c in trends.values():
        lo, hi = c.log_slope.ci
        assert lo <= -power * LN2 <= hi  # log(T^-p) falls by p ln 2 per doubling
        assert c.log_slope.negative


def test_shift_decomposition_is_read_per_eval_set(make_store):
    analysis = analyze(make_store())
    shifts = {s.eval_set: s for s in analysis.shift}
    assert set(shifts) == {
        "heldout",
        "test",
        "corrupt:gaussian_noise:2",
        "corrupt:gaussian_noise:5",
    }
    for s in shifts.values():
        assert s.slopes["shift_curvature"].negative  # it falls with T in the synthetic truth
        assert s.quadratic_ratio == pytest.approx(1.0, abs=0.15)  # drop = shift-curv. x noise
        assert s.dominant_term == "shift_curvature"  # 0.6 of the gap, vertical 0.3
    assert shifts["heldout"].kind == "sampling" and shifts["corrupt:gaussian_noise:5"].kind == (
        "domain"
    )


def test_no_measurement_no_trend(make_store):
    analysis = analyze(make_store(shift=False, seeds=(0, 1), epochs=3))
    assert analysis.shift == ()
