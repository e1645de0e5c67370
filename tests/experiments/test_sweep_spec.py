"""Sweep spec files: grids, defaults, and errors that name the file, the line and the key."""

from __future__ import annotations

import re
import textwrap

import pytest

from sgdtemp.errors import UserError
from sgdtemp.experiments.spec import (
    RunConfig,
    Stability,
    iso_temperature_grid,
    load_spec,
    parse_spec,
    product_grid,
)
from sgdtemp.theory.temperature import temperature

FULL = textwrap.dedent(
    """\
    name = "iso"
    dataset = "digits"
    model = "mlp"
    epochs = 2
    seeds = [0, 1]
    momentum = 0.5
    weight_decay = 1e-4
    device = "cpu"
    replacement = true
    divergence_bound = 1e4
    eval = ["heldout", "test", "corrupt:gaussian_noise:3"]

    [data]
    heldout = 0.2
    train_subset = 500
    seed = 3

    [model_args]
    width = 32

    [grid]
    temperatures = [0.001, 0.004]
    batch_sizes = [
        16,
        64,
    ]

    [stability]
    sharpness = 40.0
    action = "skip"

    [measure.curvature]
    probes = 4
    top_k = 1

    [measure.shift]
    eval_sets = ["test"]
    seeds = [0]
    examples = 200
    max_iters = 5
    method = "newton_cg"
    objective = "proximal"
    """
)


def test_full_spec(tmp_path):
    path = tmp_path / "iso.toml"
    path.write_text(FULL)
    spec = load_spec(path)
    assert (spec.name, spec.dataset, spec.model, spec.device) == ("iso", "digits", "mlp", "cpu")
    assert spec.eval_sets == ("heldout", "test", "corrupt:gaussian_noise:3")
    assert spec.data.heldout == 0.2 and spec.data.train_subset == 500 and spec.data.seed == 3
    assert spec.model_args == {"width": 32} and spec.replacement is True
    assert spec.stability == Stability(40.0, "skip")
    assert spec.measure.curvature == {"probes": 4, "top_k": 1}
    assert spec.measure.shift == {
        "eval_sets": ["test"],
        "seeds": [0],
        "examples": 200,
        "max_iters": 5,
        "method": "newton_cg",
        "objective": "proximal",
    }
    assert spec.to_dict()["measure"]["shift"] == spec.measure.shift
    assert len(spec.grid) == 2 * 2 * 2
    expected = [
        (t * b * (1 - 0.5), b, seed) for t in (0.001, 0.004) for b in (16, 64) for seed in (0, 1)
    ]
    assert [c.lr for c in spec.grid] == pytest.approx([e[0] for e in expected])
    assert [(c.batch_size, c.seed) for c in spec.grid] == [e[1:] for e in expected]
    for config in spec.grid:
        assert config.momentum == 0.5 and config.epochs == 2 and config.weight_decay == 1e-4
    assert sorted({round(temperature(c.lr, c.batch_size, 0.5), 12) for c in spec.grid}) == [
        0.001,
        0.004,
    ]
    assert spec.to_dict()["grid"][0] == spec.grid[0].as_dict()


def test_defaults_and_file_stem_name(tmp_path):
    path = tmp_path / "my-sweep.toml"
    path.write_text('dataset = "digits"\nmodel = "mlp"\n[grid]\nlrs = [0.1]\nbatch_sizes = [8]\n')
    spec = load_spec(path)
    assert spec.name == "my-sweep" and spec.eval_sets == ("heldout", "test")
    assert spec.grid == (RunConfig(lr=0.1, batch_size=8, seed=0, epochs=1),)
    assert spec.stability.sharpness is None and spec.measure.as_dict() == {}


def test_grid_helpers():
    iso = iso_temperature_grid([0.01], [8, 32], epochs=1, momentum=0.9, seeds=[4])
    assert [c.lr for c in iso] == pytest.approx([0.01 * 8 * 0.1, 0.01 * 32 * 0.1])
    assert [c.temperature for c in iso] == pytest.approx([0.01, 0.01])
    explicit = product_grid([0.1, 0.2], [8], epochs=3, seeds=[0, 1])
    assert [(c.lr, c.seed) for c in explicit] == [(0.1, 0), (0.1, 1), (0.2, 0), (0.2, 1)]
    with pytest.raises(UserError, match="batch sizes"):
        product_grid([0.1], [0], epochs=1)
    with pytest.raises(UserError, match="lr must be a positive"):
        product_grid([-0.1], [8], epochs=1)


def test_stability_rule():
    rule = Stability(sharpness=20.0)
    assert rule.lr_sharpness(0.05) == pytest.approx(1.0)
    assert not rule.unstable(0.0999) and rule.unstable(0.1)  # lr * lambda >= 2 is unstable
    assert not Stability().unstable(100.0)  # unknown sharpness: never marked


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


BAD = [
    # (replace this line of FULL, with this, expected key, message fragment)
    ("epochs = 2", "epochs = 0", "epochs", "must be a positive integer"),
    ("seeds = [0, 1]", "seeds = [0, 0]", "seeds", "repeated"),
    ("momentum = 0.5", "momentum = 1.0", "momentum", "in [0, 1)"),
    ("width = 32", "width = 32\nwdith = 3", None, None),  # model args are free-form
    ("    16,", '    "16",', "grid.batch_sizes", "item 0 must be a positive integer"),
    ("temperatures = [0.001, 0.004]", "temperatures = [-1.0]", "grid.temperatures", "positive"),
    ('action = "skip"', 'action = "drop"', "stability.action", "mark, skip"),
    ("top_k = 1", "top_k = 0", "measure.curvature.top_k", "positive integer"),
    ("probes = 4", "probs = 4", "measure.curvature.probs", "did you mean 'probes'"),
    (
        'eval_sets = ["test"]',
        'eval_sets = ["corrupt:fog:9"]',
        "measure.shift.eval_sets",
        "severity",
    ),
    ('eval_sets = ["test"]', 'eval_sets = ["train"]', "measure.shift.eval_sets", "starts from"),
    ('eval_sets = ["test"]', 'eval_set = "test"', "measure.shift.eval_set", "'eval_sets'"),
    ("max_iters = 5", "steps = 5", "measure.shift.steps", "unknown key"),
    ("max_iters = 5", "max_iters = 0", "measure.shift.max_iters", "positive integer"),
    ("examples = 200", "examples = 2.5", "measure.shift.examples", "positive integer"),
    ('method = "newton_cg"', 'method = "sgd"', "measure.shift.method", "newton_cg, lbfgs"),
    ('objective = "proximal"', "objective = 1", "measure.shift.objective", "auto, minimum"),
    ("train_subset = 500", "train_subset = -5", "data.train_subset", "positive integer"),
    ("heldout = 0.2", "heldout = 1.5", "data.heldout", "fraction in (0, 1)"),
    ('device = "cpu"', 'devise = "cpu"', "devise", "did you mean 'device'"),
    (
        'eval = ["heldout", "test", "corrupt:gaussian_noise:3"]',
        'eval = ["valid"]',
        "eval",
        "unknown eval set",
    ),
]


@pytest.mark.parametrize("old, new, key, fragment", BAD, ids=[b[2] or "free" for b in BAD])
def test_errors_name_file_line_and_key(tmp_path, old, new, key, fragment):
    text = FULL.replace(old, new)
    assert text != FULL
    path = tmp_path / "bad.toml"
    path.write_text(text)
    if key is None:
        load_spec(path)
        return
    with pytest.raises(UserError) as info:
        load_spec(path)
    message = str(info.value)
    line = line_of(text, key.rsplit(".", 1)[-1] + " =")  # the line of the key itself
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert fragment in message and "\n" not in message


@pytest.mark.parametrize(
    "text, pattern",
    [
        ('model = "mlp"\n[grid]\nlrs = [0.1]\nbatch_sizes = [8]', r"^s\.toml: dataset: missing"),
        ('dataset = "d"\nmodel = "m"', r"^s\.toml: grid: missing"),
        (
            'dataset = "d"\nmodel = "m"\n[grid]\nlrs = [0.1]\ntemperatures = [1.0]\n'
            "batch_sizes = [8]",
            r"^s\.toml:3: grid: give exactly one of temperatures",
        ),
        (
            'dataset = "d"\nmodel = "m"\n[grid]\nlrs = [0.1]',
            r"^s\.toml:3: grid\.batch_sizes: missing",
        ),
        ('dataset = "d"\nmodel = = "m"', r"^s\.toml: not valid TOML: .*line 2"),
    ],
)
def test_structural_errors(text, pattern):
    with pytest.raises(UserError, match=pattern):
        parse_spec(text, source="s.toml")


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'nope.toml'}: no such sweep spec")):
        load_spec(tmp_path / "nope.toml")


def test_shift_keys_are_options_of_measure_shift():
    """Every [measure.shift] key is a field of ShiftOptions or picks its data."""
    import dataclasses

    from sgdtemp.experiments.spec import _SHIFT_KEYS, SHIFT_DEFAULTS
    from sgdtemp.shift import OBJECTIVES, ShiftOptions
    from sgdtemp.shift._solvers import SOLVERS

    params = {f.name: f for f in dataclasses.fields(ShiftOptions)}
    data_keys = {"eval_sets", "seeds", "examples", "seed"}  # what data, which runs, the generator
    assert set(_SHIFT_KEYS) - data_keys <= set(params)
    assert set(SHIFT_DEFAULTS) <= set(_SHIFT_KEYS)
    budget = {"max_iters", "max_cg_iters", "batch_size"}  # a smaller budget per run than one call
    for key in set(SHIFT_DEFAULTS) & set(params) - budget:
        assert SHIFT_DEFAULTS[key] == params[key].default, key
    assert _SHIFT_KEYS["method"] == "choice:" + ",".join(SOLVERS)
    assert _SHIFT_KEYS["objective"] == "choice:" + ",".join(OBJECTIVES)


def test_shift_true_means_the_defaults_and_needs_an_eval_set():
    base = 'dataset = "digits"\nmodel = "mlp"\neval = ["train", "test"]\n'
    grid = "[grid]\nlrs = [0.1]\nbatch_sizes = [8]\n"
    spec = parse_spec(base + "[measure]\nshift = true\n" + grid)
    assert spec.measure.shift == {}
    with pytest.raises(UserError, match=r"^s\.toml:5: measure\.shift\.eval_sets: missing"):
        parse_spec(
            base.replace('"train", "test"', '"train"') + "[measure]\nshift = true\n" + grid,
            source="s.toml",
        )


def test_measurements_built_in_python_are_checked_like_a_spec():
    from sgdtemp.experiments.spec import Measurements, check_measurements

    good = Measurements(curvature={"probes": 2}, shift={"eval_sets": ["test"], "top_k": 2})
    assert check_measurements(good, ["heldout"]) == good
    with pytest.raises(UserError, match=r"measure\.shift\.max_iter: unknown key; did you mean"):
        check_measurements(Measurements(shift={"max_iter": 3}), ["test"])
    with pytest.raises(UserError, match=r"measure\.shift\.mu: must be a positive number"):
        check_measurements(Measurements(shift={"mu": -1.0}), ["test"])
