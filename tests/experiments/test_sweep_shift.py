"""`[measure.shift]` in a sweep: the train → eval-set shift of each trained model, in its record."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

from sgdtemp.executors import LocalExecutor
from sgdtemp.experiments.sweep import run_spec
from sgdtemp.files import json_safe
from sgdtemp.storage import Store

pytestmark = pytest.mark.slow

EVAL_SETS = ["heldout", "corrupt:gaussian_noise:3"]
SPEC = textwrap.dedent(
    """\
    dataset = "digits"
    model = "mlp"
    epochs = 20
    seeds = [0, 1]
    eval = ["heldout", "test", "corrupt:gaussian_noise:3"]
    checkpoints = true

    [data]
    train_subset = 500
    heldout = 300
    seed = 1

    [model_args]
    width = 8

    [grid]
    lrs = [0.3]
    batch_sizes = [25]

    [measure.shift]
    eval_sets = ["heldout", "corrupt:gaussian_noise:3"]
    seeds = [0]
    examples = 300
    max_iters = 30
    max_cg_iters = 30
    """
)
OPTIONS = {"examples": 300, "max_iters": 30, "max_cg_iters": 30}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shift")
    (folder / "spec.toml").write_text(SPEC)
    with LocalExecutor(2) as pool:
        first = run_spec(folder / "spec.toml", store=folder / "runs.db", executor=pool)
        with Store(folder / "runs.db") as store:
            records = {r.seed: r for r in store.runs()}
        again = run_spec(folder / "spec.toml", store=folder / "runs.db", executor=pool)
    return folder, first, again, records


def direct(record, name):
    """The oracle: the trained weights and data loaded here, measure_shift called by hand."""
    import torch.nn.functional as F

    from sgdtemp.data import eval_set, load_dataset
    from sgdtemp.shift import measure_shift
    from sgdtemp.train import load_checkpoint

    model = load_checkpoint(record.metrics["checkpoint"], model_name="mlp").model
    splits = load_dataset("digits", train_subset=500, heldout=300, seed=1)
    n = OPTIONS["examples"]
    train = (splits.train.x[:n], splits.train.y[:n])
    data = eval_set(splits, name, seed=1)
    evaluation = (data.x[:n], data.y[:n])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = measure_shift(
            model,
            F.cross_entropy,
            train,
            evaluation,
            batch_size=500,
            max_iters=OPTIONS["max_iters"],
            max_cg_iters=OPTIONS["max_cg_iters"],
            hvp_mode="double_backward",
            generator=torch.Generator().manual_seed(0),
        )
        with torch.no_grad():
            losses = (F.cross_entropy(model(x), y).item() for x, y in (train, evaluation))
            train_loss, eval_loss = losses
    finally:
        torch.set_num_threads(threads)
    return result, train_loss, eval_loss


def test_shift_is_stored_with_the_run_and_resumes(swept):
    _, first, again, records = swept
    assert first.ok == 2 and first.failed == 0
    assert again.skipped == 2 and again.ok == 0  # a rerun measures nothing again
    shift = records[0].metrics["shift"]
    assert shift["status"] == "ok" and shift["examples"] == 300
    assert set(shift) == {"status", "examples", *EVAL_SETS}
    assert records[1].metrics["shift"] == {
        "status": "skipped",
        "reason": "seed 1 is not in measure.shift.seeds",
    }
    assert records[0].config["measure"] == {
        "shift": {**OPTIONS, "eval_sets": EVAL_SETS, "seeds": [0]}
    }


@pytest.mark.parametrize("name", EVAL_SETS)
def test_shift_terms_are_consistent(swept, name):
    _, _, _, records = swept
    m = records[0].metrics["shift"][name]
    assert m["objective"] == "proximal" and m["mu"] > 0 and m["weight_decay"] == 0.0
    # exact identity: gap = vertical shift + measured gap + the proximal share (θ* is where
    # both start; the vertical shift and the gap's F̃ carry no proximal term)
    assert m["generalization_gap"] == pytest.approx(
        m["vertical_shift"] + m["measured_gap"] + m["proximal_curvature"], abs=1e-5
    )
    # no weight decay: the shift-curvature is the data part, never the proximal μ share
    assert m["shift_curvature"] == m["data_shift_curvature"] and m["weight_decay_curvature"] == 0
    assert m["proximal_curvature"] == pytest.approx(0.5 * m["mu"] * m["shift_norm"] ** 2)
    # the descended objective's quadratic model: ½ sᵀ(H̃ + μ) s = ½ sᵀH̃s + ½ μ‖s‖²
    assert m["quadratic_gap"] == pytest.approx(
        m["shift_curvature"] + m["proximal_curvature"], rel=1e-12
    )
    assert math.isfinite(m["ratio"]) and m["ratio"] == pytest.approx(
        m["measured_gap"] / m["quadratic_gap"]
    )
    assert 0.5 < m["ratio"] < 2.0  # near the quadratic picture at this small a shift
    assert m["measured_gap"] > 0 and m["shift_norm"] > 0
    # the descent reached a stationary point of the eval objective
    assert m["grad_norm_at_eval_min"] < 0.05 * m["initial_grad_norm"]
    assert 1 <= m["iterations"] <= OPTIONS["max_iters"]


@pytest.mark.parametrize("name", EVAL_SETS)
def test_shift_matches_measure_shift_called_by_hand(swept, name):
    _, _, _, records = swept
    stored = records[0].metrics["shift"][name]
    result, train_loss, eval_loss = direct(records[0], name)
    assert stored == json_safe(result.summary())  # the options and data reached measure_shift
    # independent of the shift code: the objectives at θ* are the plain mean losses
    assert stored["train_objective"] == pytest.approx(train_loss, rel=1e-5)
    assert stored["eval_objective_at_train_min"] == pytest.approx(eval_loss, rel=1e-5)


def test_the_analysis_reads_the_shift_from_the_run(swept):
    from sgdtemp.analysis import run_view

    _, _, _, records = swept
    view = run_view(records[0])
    assert set(view.shift) == set(EVAL_SETS)
    stored = records[0].metrics["shift"]["heldout"]
    assert view.shift["heldout"]["shift_curvature"] == stored["shift_curvature"]
    assert view.shift["heldout"]["gap"] == stored["generalization_gap"]
    assert run_view(records[1]).shift == {}


def test_an_empty_heldout_set_fails_before_any_run(tmp_path):
    from sgdtemp.errors import UserError
    from sgdtemp.experiments.spec import parse_spec
    from sgdtemp.experiments.sweep import prepare_spec

    text = SPEC.replace("heldout = 300\n", "heldout = 0\n").replace(
        'eval = ["heldout", "test", ', 'eval = ["test", '
    )
    spec = parse_spec(text, source="s.toml")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("eval_sets"))
    with pytest.raises(UserError, match=rf"^s\.toml:{line}: measure\.shift\.eval_sets: .*heldout"):
        prepare_spec(spec)
