import math

import numpy as np
import pytest

from sgdtemp.analysis import (
    SHIFT_SUFFIX,
    analyze,
    load_runs,
    pick_sweep,
    shift_terms,
)
from sgdtemp.storage import NewRun, Store, run_key


def _epoch(e, train, test, fog):
    return {
        "epoch": e,
        "step": 10 * e,
        "train": {"loss": train, "acc": 0.5},
        "test": {"loss": test, "acc": 0.4},
        "corrupt": {"fog:3": {"loss": fog, "acc": 0.3}},
    }


def _write(store, sweep, key_config, columns, status, metrics):
    key = run_key(key_config)
    store.register(sweep, [NewRun(key, key_config, **columns)])
    claim = store.claim(key, max_attempts=1)
    store.start(key, claim.token, pid=1, host="h", environment={"python": "3"})
    store.finish(key, claim.token, status=status, metrics=metrics)
    return key


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "runs.db") as s:
        yield s


def test_a_trainer_record_becomes_curves(store):
    cols = dict(lr=0.1, batch_size=16, momentum=0.0, temperature=0.1 / 16, seed=3)
    metrics = {
        "status": "ok",
        "epochs": [_epoch(0, 2.3, 2.3, 2.4), _epoch(1, 1.0, 1.1, 1.5), _epoch(2, 0.5, 0.7, 1.2)],
        "curvature": {
            "status": "ok",
            "trace": 50.0,
            "trace_stderr": 1.0,
            "top_eigenvalues": [8.0],
            "lr_lambda_max": 0.8,
        },
        "shift": {
            "eval_set": "test",
            "generalization_gap": 0.2,
            "vertical_shift": 0.05,
            "measured_gap": 0.15,
            "shift_curvature": 0.14,
            "shift_norm": 0.3,
        },
    }
    key = _write(store, "s", {"lr": 0.1, "seed": 3}, cols, "ok", metrics)
    (run,) = load_runs(store, sweep="s")
    assert run.key == key and run.seed == 3 and run.finished_ok
    assert run.eval_sets == ("train", "test", "corrupt:fog:3")
    np.testing.assert_array_equal(run.epochs, [0, 1, 2])
    np.testing.assert_array_equal(run.loss["corrupt:fog:3"], [2.4, 1.5, 1.2])
    assert run.n_train == 160  # 10 steps per epoch of B = 16
    assert run.curvature == {"trace": 50.0, "trace_stderr": 1.0, "lambda_max": 8.0}
    assert run.lr_lambda_max == pytest.approx(0.8)
    terms = run.shift["test"]
    assert terms["gap"] == 0.2 and terms["drop"] == 0.15
    assert terms["remainder"] == pytest.approx(0.2 - 0.05 - 0.14)


def test_a_diverged_record_keeps_its_reason_and_nan_losses(store):
    cols = dict(lr=1.0, batch_size=8, momentum=0.0, temperature=0.125, seed=0)
    metrics = {
        "status": "diverged",
        "reason": "loss is not finite at step 7",
        "epochs": [_epoch(0, 2.3, 2.3, 2.4), _epoch(1, None, None, None)],
    }
    _write(store, "s", {"lr": 1.0}, cols, "diverged", metrics)
    (run,) = load_runs(store)
    assert not run.finished_ok
    assert run.reason == "loss is not finite at step 7"
    assert math.isnan(run.loss["train"][1])


def test_unstable_runs_that_trained_count_as_finished(store):
    cols = dict(lr=0.5, batch_size=8, momentum=0.0, temperature=0.0625, seed=0)
    metrics = {
        "status": "ok",
        "train_status": "ok",
        "lr_sharpness": 3.0,
        "epochs": [_epoch(0, 2.3, 2.3, 2.4), _epoch(1, 1.0, 1.1, 1.5)],
    }
    _write(store, "s", {"lr": 0.5}, cols, "unstable", metrics)
    (run,) = load_runs(store)
    assert run.status == "unstable" and run.finished_ok
    assert run.lr_lambda_max == 3.0  # from the spec's sharpness when not measured


def test_records_without_lr_are_not_training_runs(store):
    _write(store, "s", {"x": 1}, {}, "ok", {"anything": 1})
    assert load_runs(store) == []


def test_shift_records_stored_apart_are_attached(store, tmp_path):
    cols = dict(lr=0.1, batch_size=16, momentum=0.0, temperature=0.1 / 16, seed=0)
    metrics = {"status": "ok", "epochs": [_epoch(0, 2.3, 2.3, 2.4), _epoch(1, 1.0, 1.1, 1.5)]}
    key = _write(store, "s", {"lr": 0.1}, cols, "ok", metrics)
    _write(
        store,
        "s" + SHIFT_SUFFIX,
        {"shift_of": key},
        {"seed": 0},
        "ok",
        {
            "of": key,
            "shift": {
                "heldout": {
                    "generalization_gap": 0.1,
                    "vertical_shift": 0.02,
                    "shift_curvature": 0.07,
                    "measured_gap": 0.08,
                }
            },
        },
    )
    assert pick_sweep(store) == "s"  # the shift sweep is never the one analyzed
    analysis = analyze(store)
    (run,) = analysis.runs
    assert run.shift["heldout"]["vertical"] == 0.02
    assert analysis.other_sweeps == ()


def test_shift_terms_fill_missing_terms_with_nan():
    t = shift_terms({"generalization_gap": 0.3})
    assert t["gap"] == 0.3 and math.isnan(t["vertical"]) and math.isnan(t["remainder"])


def test_pick_sweep_prefers_the_sweep_with_most_finished_runs(store):
    cols = dict(lr=0.1, batch_size=16, momentum=0.0, temperature=0.1 / 16, seed=0)
    _write(store, "small", {"a": 1}, cols, "ok", {"epochs": []})
    for i in range(2):
        _write(store, "big", {"b": i}, {**cols, "seed": i}, "ok", {"epochs": []})
    assert pick_sweep(store) == "big"
    assert pick_sweep(store, "small") == "small"
    with pytest.raises(KeyError):
        pick_sweep(store, "nope")
