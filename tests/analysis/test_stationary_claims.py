"""Claims of a sweep trained until stationary: judged on stationary expectations and mechanisms."""

import math

import numpy as np
import pytest

from sgdtemp.analysis import (
    CLAIM_COMPARED_AT,
    DECOMPOSITION_KEYS,
    DOES_NOT_HOLD,
    HOLDS,
    MECHANISM_TERMS,
    NOT_MEASURED,
    Claim,
    all_claims,
    analyze,
    load_runs,
)
from sgdtemp.storage import Store
from sgdtemp.theory.temperature import lr_for_temperature

# A small grid: 2 batch sizes x 3 temperatures x 2 seeds = 12 runs.
TEMPS = (1 / 2048, 1 / 1024, 1 / 512)
GRID = dict(temperatures=TEMPS, batch_sizes=(16, 32), seeds=(0, 1), epochs=6)
N_RUNS = 12


def _claims(db):
    return {c.id: c for c in all_claims(analyze(db))}


def _cell(t, b):
    return (lr_for_temperature(t, b), b)


@pytest.mark.parametrize("sign", [1, -1])
def test_test_loss_claims_follow_the_stationary_expectations_not_the_epochs(make_store, sign):
    # the epoch curves improve with T (trend > 0) in both cases; the stationary expectations
    # improve (sign 1) or worsen (sign -1): the verdicts must follow the expectations
    db = make_store(**GRID, trend=0.02, stationary=True, stationary_trend=sign * 0.02)
    c = _claims(db)
    want = HOLDS if sign > 0 else DOES_NOT_HOLD
    for cid in ("C3", "C4", "C5"):
        assert c[cid].verdict == want, (cid, c[cid].measured)
        assert c[cid].compared_at == "stationary"
        assert c[cid].measured.startswith(f"at stationarity, {N_RUNS} of {N_RUNS} runs")
        assert "reference only" in c[cid].measured
    assert c["C6"].compared_at == "stationary"


def test_a_mixed_sweep_counts_and_leaves_out_the_runs_that_were_not_stationary(make_store):
    lost = [_cell(TEMPS[0], 16), _cell(TEMPS[2], 32)]  # 2 cells x 2 seeds
    db = make_store(**GRID, stationary=True, not_stationary=lost)
    analysis = analyze(db)
    assert (analysis.regime.runs_total, analysis.regime.runs_stationary) == (N_RUNS, 8)
    assert len(analysis.regime.not_stationary) == 4
    test = next(t for t in analysis.test_loss if t.eval_set == "test")
    assert (test.mode, test.n_runs, test.n_not_stationary) == ("stationary", 8, 4)
    # the points are the seed means of the stationary runs' expectations, nothing else
    with Store(db) as store:
        runs = [r for r in load_runs(store) if r.stationary_reached]
    for point in test.points:
        at_t = [r for r in runs if math.isclose(r.temperature, point.temperature, rel_tol=1e-5)]
        assert sorted(point.values) == pytest.approx(sorted(r.expectations["test"] for r in at_t))
    c = {x.id: x for x in all_claims(analysis)}
    text = "at stationarity, 8 of 12 runs (left out: 4 not stationary within budget)"
    assert c["C3"].measured.startswith(text)
    assert c["C3"].verdict == HOLDS


def test_a_sweep_where_no_run_became_stationary_measures_nothing(make_store):
    every = [_cell(t, b) for t in TEMPS for b in (16, 32)]
    c = _claims(make_store(**GRID, stationary=True, not_stationary=every, mechanisms=True))
    for cid in ("C3", "C4", "C5", "C6", "C10", "C11"):
        assert c[cid].verdict == NOT_MEASURED, (cid, c[cid].measured)
        assert c[cid].compared_at == "stationary"
    assert c["C3"].measured.startswith("at stationarity, 0 of 12 runs")
    assert "12 not stationary within budget" in c["C3"].measured


def test_a_fixed_epoch_sweep_keeps_its_comparison_and_says_so(make_store):
    c = _claims(make_store(**GRID))
    assert c["C3"].compared_at == "matched train loss"
    assert c["C3"].measured.startswith("fixed number of epochs (not trained until stationary)")
    assert c["C9"].compared_at == "final epoch"  # from the shift measured at the final weights
    assert c["C10"].verdict == c["C11"].verdict == NOT_MEASURED
    assert c["C1"].compared_at == c["C2"].compared_at == "epoch curves"


def test_every_claim_says_where_it_compared(make_store):
    db = make_store(**GRID, stationary=True, mechanisms=True)
    checks = {"checks": [{"claim": "x", "holds": True}]}
    claims = all_claims(analyze(db), two_minima=checks, stationary=checks)
    assert [c.id for c in claims][:11] == [f"C{i}" for i in range(1, 12)]
    for c in claims:
        assert c.compared_at in CLAIM_COMPARED_AT, c
        assert "compared_at" in c.to_dict()
    with pytest.raises(ValueError):
        Claim("X", "s", "c", HOLDS, "r", "m", compared_at="somewhere")


@pytest.mark.parametrize(("error", "verdict"), [(0.02, HOLDS), (0.3, DOES_NOT_HOLD)])
def test_c10_compares_the_sum_of_the_terms_with_the_measured_side(make_store, error, verdict):
    db = make_store(**GRID, stationary=True, mechanisms=True, decomposition_error=error)
    c = _claims(db)
    assert c["C10"].verdict == verdict, c["C10"].measured
    assert c["C10"].compared_at == "stationary"
    # |sum - measured| / |measured| = error / (1 + error) up to the 1e-4 noise
    expected = f"median {error / (1 + error):.1%}"
    assert expected in c["C10"].measured


@pytest.mark.parametrize(("covariance", "verdict"), [(0.01, HOLDS), (0.08, DOES_NOT_HOLD)])
def test_c11_names_the_largest_mechanism_at_the_smallest_temperature(
    make_store, covariance, verdict
):
    db = make_store(**GRID, stationary=True, mechanisms=True, covariance_curvature=covariance)
    c = _claims(db)
    assert c["C11"].verdict == verdict, c["C11"].measured
    largest = "shift-curvature largest" if verdict == HOLDS else "covariance-curvature largest"
    assert largest in c["C11"].measured
    assert f"T={TEMPS[0]:.3g}" in c["C11"].measured


def test_c9_uses_the_stationary_shift_curvature_when_measured(make_store):
    c = _claims(make_store(**GRID, stationary=True, mechanisms=True))
    assert c["C9"].compared_at == "stationary" and c["C9"].figure == "fig-mechanisms"
    assert c["C9"].verdict == HOLDS, c["C9"].measured  # 0.04 (1 - 0.1 per doubling)


def test_descents_that_did_not_converge_are_left_out_and_counted(make_store):
    failed = [(*_cell(TEMPS[1], 16), "train"), (*_cell(TEMPS[2], 32), "test")]
    db = make_store(**GRID, stationary=True, mechanisms=True, not_converged=failed)
    analysis = analyze(db)
    by_set = {d.eval_set: d for d in analysis.decomposition}
    assert by_set["heldout"].n_runs == N_RUNS - 2  # the train descent failed in 2 runs
    assert by_set["test"].n_runs == N_RUNS - 4  # and the test descent in 2 more
    assert len(by_set["test"].left_out) == 4
    assert any("did not converge (max_iters)" in line for line in by_set["test"].left_out)
    assert any("train minimum did not converge" in line for line in by_set["test"].left_out)
    c = {x.id: x for x in all_claims(analysis)}
    assert "left out 4" in c["C10"].measured
    assert c["C10"].verdict == HOLDS  # the converged runs still decide


def test_a_set_whose_every_descent_failed_leaves_the_verdict_to_the_others(make_store):
    failed = [(*_cell(t, b), "test") for t in TEMPS for b in (16, 32)]
    db = make_store(**GRID, stationary=True, mechanisms=True, not_converged=failed)
    c = _claims(db)
    assert c["C10"].verdict == HOLDS
    assert "test: no run usable" in c["C10"].measured
    assert "1 eval set(s) without a usable run left out" in c["C10"].measured


def test_runs_whose_seed_was_not_measured_are_skipped_not_left_out(make_store):
    db = make_store(**GRID, stationary=True, mechanisms=True, mechanism_seeds=(0,))
    (first, *_) = analyze(db).decomposition
    assert (first.n_runs, first.n_skipped, first.left_out) == (6, 6, ())


def test_the_decomposition_rows_are_seed_means_of_the_records(make_store):
    db = make_store(**GRID, stationary=True, mechanisms=True)
    analysis = analyze(db)
    rows = analysis.decomposition_rows
    assert len(rows) == 3 * 4  # temperatures x eval sets
    with Store(db) as store:
        records = [r.metrics for r in store.runs()]
    for row in rows:
        assert set(DECOMPOSITION_KEYS) <= set(row)
        # the slow obvious way: per seed the mean over batch sizes, then the mean over seeds
        at_t = [
            m for m in records if math.isclose(m["temperature"], row["temperature"], rel_tol=1e-5)
        ]
        for term in (*MECHANISM_TERMS, "sum", "measured"):
            per_seed = {}
            for m in at_t:
                value = m["mechanisms"]["evals"][row["eval_set"]][term]
                per_seed.setdefault(m["seed"], []).append(value)
            want = np.mean([np.mean(v) for v in per_seed.values()])
            assert row[term] == pytest.approx(want, rel=1e-12), (row["eval_set"], term)
        assert row["sum"] == pytest.approx(sum(row[t] for t in MECHANISM_TERMS), rel=1e-12)
        assert row["runs"] == 4 and row["measured_error"] > 0


def test_c9_falls_back_to_the_shift_when_no_decomposition_is_usable(make_store):
    failed = [(*_cell(t, b), "train") for t in TEMPS for b in (16, 32)]
    db = make_store(**GRID, stationary=True, mechanisms=True, not_converged=failed)
    c = _claims(db)
    assert c["C9"].compared_at == "final epoch" and c["C9"].figure == "fig-shift"
    assert c["C9"].measured.startswith("the stationary decomposition has no usable run")
    assert c["C10"].verdict == c["C11"].verdict == NOT_MEASURED
    assert "0 of 12 runs (left out: 12 whose descents did not converge" in c["C10"].measured
    # without a shift to fall back on, C9 is not measured, at stationarity
    c = _claims(
        make_store(**GRID, stationary=True, mechanisms=True, not_converged=failed, shift=False)
    )
    assert (c["C9"].verdict, c["C9"].compared_at) == (NOT_MEASURED, "stationary")
    assert "no usable run (see C10)" in c["C9"].measured
