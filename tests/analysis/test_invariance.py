import math

import numpy as np
import pytest

from sgdtemp.analysis import RunView, analyze, temperature_invariance


def _lines(analysis, kind, metric="test"):
    return [ln for ln in analysis.invariance.lines if ln.kind == kind and ln.metric == metric]


def test_iso_t_lines_collapse_and_controls_differ_when_the_truth_is_invariant(make_store):
    analysis = analyze(make_store())
    iso = _lines(analysis, "iso-T")
    assert iso and all(ln.differs is False for ln in iso if ln.differs is not None)
    assert sum(ln.differs is not None for ln in iso) >= 3
    for kind in ("fixed-lr", "fixed-B"):
        scored = [ln for ln in _lines(analysis, kind) if ln.differs is not None]
        assert scored and all(ln.differs for ln in scored)
        assert all("T changes" in ln.why for ln in scored)


def test_a_batch_size_effect_breaks_iso_t_lines_and_is_named(make_store):
    analysis = analyze(make_store(break_invariance=0.1))
    iso = [ln for ln in _lines(analysis, "iso-T", "train") if ln.differs is not None]
    assert any(ln.differs for ln in iso)
    broken = next(ln for ln in iso if ln.differs)
    assert broken.why.startswith("breaks at B=")
    assert broken.kappa > 2 and broken.p_value < 0.01


def test_one_seed_is_not_enough_to_score(make_store):
    analysis = analyze(make_store(seeds=(0,)))
    assert all(ln.differs is None for ln in analysis.invariance.lines)
    assert all(
        "seeds" in ln.why or "fewer than 2 cells" in ln.why for ln in analysis.invariance.lines
    )
    assert any("fewer than 2 seeds" in ln.why for ln in analysis.invariance.lines)


def test_diverged_cells_are_left_out_with_their_reason(make_store):
    analysis = analyze(make_store(diverge=[(0.0625, 128)]))  # T = 1/2048, B = 128
    line = next(ln for ln in _lines(analysis, "iso-T") if ln.value == pytest.approx(1 / 2048))
    cell = next(c for c in line.cells if c.batch_size == 128)
    assert cell.role == "excluded" and "diverged" in cell.reason
    assert 128 not in [c.batch_size for c in line.scored_cells]
    assert "left out: B=128" in line.why


def test_large_lr_cells_are_scored_apart(make_store):
    # synthetic lambda_max = 12 (T / T_min)^-0.5, so lr * lambda_max >= 1 for lr >= 1/12 at T_min
    analysis = analyze(make_store())
    roles = {(c.lr, c.batch_size): c for ln in analysis.invariance.lines for c in ln.cells}
    for (_lr, _), c in roles.items():
        assert c.lr_lambda_max is not None
        expected = (
            "scored" if c.lr_lambda_max < 1 else "large-lr" if c.lr_lambda_max < 2 else ("unstable")
        )
        assert c.role == expected
    assert any(c.role == "large-lr" for c in roles.values())
    with_large = [
        ln
        for ln in analysis.invariance.lines
        if any(c.role == "large-lr" for c in ln.cells) and ln.differs is not None
    ]
    assert with_large and all(math.isfinite(ln.kappa_stable) for ln in with_large)


def _view(lr, b, seed, curve):
    e = np.arange(len(curve), dtype=float)
    return RunView("k", "s", "ok", lr, b, 0.0, lr / b, seed, e, {"test": np.asarray(curve)}, {})


def test_kappa_is_the_spread_of_cell_means_over_the_seed_spread():
    # two cells, three seeds, curves over epochs 0..2; epoch 0 is left out of the score
    y = {
        16: [[2.3, 1.00, 0.60], [2.3, 1.10, 0.62], [2.3, 1.05, 0.55]],
        32: [[2.3, 1.20, 0.70], [2.3, 1.15, 0.66], [2.3, 1.30, 0.71]],
    }
    runs = [_view(0.001 * b, b, s, curve) for b, rows in y.items() for s, curve in enumerate(rows)]
    (line,) = [
        ln for ln in temperature_invariance(runs, metrics=["test"]).lines if ln.kind == "iso-T"
    ]
    a = np.array([y[16], y[32]])[:, :, 1:]  # (cells, seeds, epochs)
    ms_cell = (3 * ((a.mean(axis=1) - a.mean(axis=(0, 1))) ** 2).sum(axis=0)).mean() / 1
    ms_seed = ((a - a.mean(axis=1, keepdims=True)) ** 2).sum(axis=(0, 1)).mean() / 4
    assert line.kappa == pytest.approx(math.sqrt(ms_cell / ms_seed))
    finals = np.array([y[16], y[32]])[:, :, -1]
    assert line.spread_cells == pytest.approx(finals.mean(axis=1).std(ddof=1))
    assert line.spread_seed == pytest.approx(math.sqrt(finals.var(axis=1, ddof=1).mean()))
    assert line.n_seeds == 3
