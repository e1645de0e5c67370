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


def test_a_stationary_record_is_read_with_its_expectations_and_mechanisms(store):
    # the layout of a sweep run trained until stationary with [measure.mechanisms]
    cols = dict(lr=0.25, batch_size=32, momentum=0.0, temperature=0.25 / 32, seed=0)
    terms = {
        "vertical": 0.02,
        "shift_curvature": 0.01,
        "cross": -0.001,
        "bias_curvature": 0.0005,
        "covariance_curvature": 0.03,
        "covariance_curvature_se": 0.002,
        "sampling_term": 0.0,
        "total": 0.0595,
        "sum": 0.0595,
        "measured": 0.061,
        "measured_se": 0.003,
        "remainder": 0.0015,
        "eval_loss_mean": 0.79,
    }
    metrics = {
        "status": "ok",
        "weight_decay": 0.05,
        "epochs": [_epoch(0, 2.3, 2.3, 2.4), _epoch(1, 1.0, 1.1, 1.5)],
        "stationary": {"reached": True, "sde_time": 47.5, "epoch": 6.1, "max_sde_time": 60},
        "expectations": {"train": 0.74, "test": 0.78, "corrupt:fog:3": 0.82},
        "expectations_stderr": {"train": 0.004, "test": 0.005, "corrupt:fog:3": None},
        "at_mean": {"train": 0.72, "test": 0.76, "corrupt:fog:3": 0.8},
        "mechanisms": {
            "status": "ok",
            "converged": True,
            "message": "converged",
            "weight_decay": 0.05,
            "evals": {
                "test": {**terms, "converged": True, "message": "converged"},
                "corrupt:fog:3": {**terms, "converged": False, "message": "max_iters"},
            },
        },
    }
    config = {"lr": 0.25, "seed": 0, "stop": {"max_sde_time": 60}, "weight_decay": 0.05}
    _write(store, "s", config, cols, "ok", metrics)
    (run,) = load_runs(store, sweep="s")
    assert run.trained_to_stationarity and run.stationary_reached
    assert run.weight_decay == 0.05 and run.stop == {"max_sde_time": 60}
    assert run.expectations == {"train": 0.74, "test": 0.78, "corrupt:fog:3": 0.82}
    assert math.isnan(run.expectations_stderr["corrupt:fog:3"])
    m = run.mechanisms
    assert m.status == "ok" and m.converged and m.weight_decay == 0.05
    assert m.evals["test"]["shift_curvature"] == 0.01 and m.evals["test"]["sum"] == 0.0595
    assert m.problem("test") is None
    assert m.problem("corrupt:fog:3") == "the descent on corrupt:fog:3 did not converge (max_iters)"


def test_records_without_a_stop_rule_or_with_a_skipped_decomposition(store):
    cols = dict(lr=0.1, batch_size=16, momentum=0.0, temperature=0.1 / 16, seed=0)
    plain = {"status": "ok", "epochs": [_epoch(0, 2.3, 2.3, 2.4)]}
    _write(store, "s", {"lr": 0.1, "seed": 0}, cols, "ok", plain)
    skipped = {
        **plain,
        "stationary": {"reached": False, "sde_time_run": 60.0, "max_sde_time": 60},
        "mechanisms": {"status": "skipped", "reason": "the run did not become stationary"},
    }
    _write(store, "s", {"lr": 0.1, "seed": 1}, {**cols, "seed": 1}, "ok", skipped)
    first, second = sorted(load_runs(store, sweep="s"), key=lambda r: r.seed)
    assert not first.trained_to_stationarity and first.mechanisms is None
    assert first.expectations == {} and first.weight_decay == 0.0
    assert second.trained_to_stationarity and not second.stationary_reached
    assert second.mechanisms.problem("test") == "not measured (the run did not become stationary)"
