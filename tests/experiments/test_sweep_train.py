"""Training sweeps: the trainer's numbers, curvature against a dense Hessian, stability, API."""

from __future__ import annotations

import functools
import textwrap

import pytest
import torch

from sgdtemp.executors import LocalExecutor
from sgdtemp.experiments.spec import (
    DataOptions,
    Stability,
    iso_temperature_grid,
    load_spec,
)
from sgdtemp.experiments.sweep import DatasetSource, run, run_spec
from sgdtemp.files import json_safe
from sgdtemp.storage import Store

pytestmark = pytest.mark.slow

SPEC = textwrap.dedent(
    """\
    dataset = "digits"
    model = "mlp"
    epochs = 2
    seeds = [0, 1]
    eval = ["heldout", "test", "corrupt:gaussian_noise:2"]
    checkpoints = true

    [data]
    train_subset = 200
    seed = 1

    [model_args]
    width = 8

    [grid]
    lrs = [0.3, 3.0]
    batch_sizes = [50]

    [stability]
    sharpness = 1.0
    action = "mark"

    [measure.curvature]
    probes = 8
    top_k = 2
    examples = 64
    """
)
TIMING = ("seconds", "train_seconds")


@pytest.fixture(scope="module")
def pool():
    with LocalExecutor(2) as executor:
        yield executor


@pytest.fixture(scope="module")
def swept(tmp_path_factory, pool):
    folder = tmp_path_factory.mktemp("train")
    (folder / "spec.toml").write_text(SPEC)
    # one by one: the records are then bit-identical to fit (test_sweep_fuse.py checks fused ones)
    summary = run_spec(folder / "spec.toml", store=folder / "runs.db", executor=pool, fuse="off")
    return folder, summary


def direct_fit(config, *, eval_sets):
    """The oracle: the trainer called here by hand, as `sgdtemp train` calls it."""
    from sgdtemp.data import eval_set, load_dataset
    from sgdtemp.train import build_model, fit

    splits = load_dataset("digits", train_subset=200, seed=1)
    model = build_model(
        "mlp",
        in_shape=(1, 8, 8),
        n_classes=10,
        width=8,
        generator=torch.Generator().manual_seed(config["seed"]),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return (
            fit(
                model,
                splits.train,
                lr=config["lr"],
                batch_size=config["batch_size"],
                epochs=config["epochs"],
                eval_sets={s: eval_set(splits, s, seed=1) for s in eval_sets},
                seed=config["seed"],
                device="cpu",
            ),
            model,
            splits,
        )
    finally:
        torch.set_num_threads(threads)


def test_records_match_the_trainer_called_directly(swept):
    folder, summary = swept
    assert summary.total == 4 and summary.unstable == 2 and summary.ok == 2
    with Store(folder / "runs.db") as store:
        records = store.runs()
    for record in records:
        result, _, _ = direct_fit(record.config, eval_sets=record.config["eval"])
        expected = json_safe({k: v for k, v in result.to_dict().items() if k not in TIMING})
        stored = {k: v for k, v in record.metrics.items() if k in expected}
        assert stored == expected  # bit-identical losses and accuracies, every epoch and set
        assert record.metrics["lr_sharpness"] == pytest.approx(record.lr * 1.0)


def test_unstable_cells_are_run_and_marked(swept):
    folder, _ = swept
    with Store(folder / "runs.db") as store:
        for record in store.runs():
            if record.lr >= 2.0:  # lr * lambda_max >= 2 with lambda_max = 1
                assert record.status == "unstable"
                assert record.metrics["train_status"] in ("ok", "diverged")
            else:
                assert record.status == "ok" and "train_status" not in record.metrics


def test_curvature_against_a_dense_hessian(swept):
    from torch.func import functional_call, jacrev

    from sgdtemp.train import load_checkpoint

    folder, _ = swept
    with Store(folder / "runs.db") as store:
        record = next(r for r in store.runs() if r.status == "ok")
    curvature = record.metrics["curvature"]
    model = load_checkpoint(record.metrics["checkpoint"], model_name="mlp").model.double()
    _, _, splits = direct_fit({**record.config, "epochs": 0}, eval_sets=[])
    x, y = splits.train.x[:64].double(), splits.train.y[:64]
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(theta):
        parts = torch.split(theta, [s.numel() for s in shapes])
        params = {n: p.view(s) for n, p, s in zip(names, parts, shapes)}
        return torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    dense = jacrev(jacrev(loss))(flat)  # reverse-over-reverse: no forward-mode AD
    eigs = torch.linalg.eigvalsh(dense)
    assert curvature["examples"] == 64 and curvature["probes"] == 8
    assert curvature["top_eigenvalues"] == pytest.approx(eigs[-2:].flip(0).tolist(), rel=1e-3)
    # Hutchinson: unbiased; 8 probes; within 4 standard errors (plus float32 slack).
    assert abs(curvature["trace"] - eigs.sum().item()) <= 4 * curvature["trace_stderr"] + 1e-3
    assert curvature["lr_lambda_max"] == pytest.approx(record.lr * eigs[-1].item(), rel=1e-3)


def test_checkpoints_land_in_the_artifacts_folder(swept):
    folder, _ = swept
    with Store(folder / "runs.db") as store:
        for record in store.runs():
            path = record.metrics["checkpoint"]
            assert path == str(store.artifacts / record.key / "checkpoint.pt")
            assert (store.artifacts / record.key / "checkpoint.pt").is_file()


def test_spec_with_skip_records_without_running(tmp_path, pool):
    spec = tmp_path / "skip.toml"
    spec.write_text(SPEC.replace('action = "mark"', 'action = "skip"'))
    summary = run_spec(load_spec(spec), store=tmp_path / "r.db", executor=pool)
    assert (summary.unstable, summary.ok) == (2, 2)
    with Store(tmp_path / "r.db") as store:
        skipped = store.runs(status="unstable")
        assert all(r.metrics["train_status"] == "skipped" and r.attempts == 0 for r in skipped)


def user_model():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def test_python_api_with_a_user_model_factory_and_data(tmp_path, pool):
    data = DatasetSource("digits", DataOptions(train_subset=100))
    grid = iso_temperature_grid([0.001, 0.002], [20], epochs=1, seeds=[3])
    summary = run(
        grid,
        user_model,
        data,
        store=tmp_path / "r.db",
        executor=pool,
        eval_sets=["test"],
        sweep="mine",
    )
    assert summary.ok == 2
    again = run(
        grid,
        user_model,
        data,
        store=tmp_path / "r.db",
        executor=pool,
        eval_sets=["test"],
        sweep="mine",
    )
    assert again.skipped == 2
    with Store(tmp_path / "r.db") as store:
        records = store.runs(sweep="mine")
    assert [r.model for r in records] == [f"{__name__}.user_model"] * 2
    assert records[0].dataset.startswith("DatasetSource(")
    # Oracle: the same seeded initialisation and trainer called directly.
    from sgdtemp.train import fit

    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = user_model()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        splits = data()
        from sgdtemp.data import eval_set

        result = fit(
            model,
            splits.train,
            lr=0.001 * 20,
            batch_size=20,
            epochs=1,
            seed=3,
            eval_sets={"test": eval_set(splits, "test")},
            device="cpu",
        )
    finally:
        torch.set_num_threads(threads)
    assert records[0].metrics["epochs"] == result.to_dict()["epochs"]


def test_picklable_partial_factory_label(tmp_path, pool):
    from sgdtemp.train import build_model

    factory = functools.partial(build_model, "mlp", in_shape=(1, 8, 8), n_classes=10, width=4)
    data = DatasetSource("digits", DataOptions(train_subset=64))
    summary = run(
        iso_temperature_grid([0.001], [16], epochs=1),
        factory,
        data,
        store=tmp_path / "r.db",
        executor=pool,
        stability=Stability(sharpness=1000.0, action="skip"),
    )
    assert summary.unstable == 1  # lr = 0.016, lr * 1000 >= 2
