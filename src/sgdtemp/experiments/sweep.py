r"""Training sweeps: a grid of η × B (× seed) runs of one model, through the engine, into a store.

Three entry points, one engine (:mod:`sgdtemp.experiments.engine`):

- :func:`run_spec` runs a :class:`~sgdtemp.experiments.spec.SweepSpec` (a TOML file; what
  ``sgdtemp sweep`` calls) with the package's data sets and models;
- :func:`run` runs a grid of :class:`~sgdtemp.experiments.spec.RunConfig` with *your* model
  factory and data (picklable, so that process, Ray and Dask workers can rebuild them);
- :func:`~sgdtemp.experiments.engine.execute` runs any list of
  :class:`~sgdtemp.experiments.engine.Job`; the other two build jobs and call it.

Every run seeds its model and minibatches from its own seed, so the same config gives
bit-identical metrics through the ``local``, ``ray`` and ``dask`` executors. What a run measures
after training (``[measure.curvature]``, ``[measure.shift]``) is one recipe each, in
:mod:`sgdtemp.experiments.measure`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.executors import AbstractExecutor
from sgdtemp.experiments.engine import Job, Outcome, SweepProgress, SweepSummary, execute
from sgdtemp.experiments.fuse import fuse_size, parse_fuse, worker_count
from sgdtemp.experiments.sources import (
    DatasetSource,
    ModelSpec,
    describe,
    remember,
)
from sgdtemp.experiments.spec import (
    Measurements,
    RunConfig,
    Stability,
    SweepSpec,
    check_measurements,
)
from sgdtemp.experiments.train_task import TrainTask
from sgdtemp.resources import require_device
from sgdtemp.storage import CODE_VERSION, NewRun, Store, run_key

__all__ = [
    "TRAIN_PRELOAD",
    "TrainTask",
    # how many runs train together, re-exported
    "fuse_size",
    "parse_fuse",
    "worker_count",
    "run",
    "run_spec",
    "prepare_spec",
    # the engine and the workers' recipes, re-exported for one import
    "Outcome",
    "Job",
    "SweepProgress",
    "SweepSummary",
    "execute",
    "DatasetSource",
    "ModelSpec",
    "describe",
]

#: Modules a local worker imports as it starts when it will train models (``torch._dynamo`` is
#: imported by the first ``torch.optim`` optimizer: seconds that would otherwise delay the first
#: run of every worker).
TRAIN_PRELOAD = (
    "sgdtemp.experiments.engine",
    "sgdtemp.experiments.sweep",
    "torch",
    "torch._dynamo",
    "sgdtemp.train",
    "sgdtemp.data",
    "sgdtemp.curvature",
    "sgdtemp.shift",
)


def _train_job(
    task: TrainTask,
    *,
    dataset: str,
    model: str,
    base: Mapping[str, Any],
    code_version: str,
    artifacts: Path | None,
) -> Job:
    c = task.config
    config = {
        **base,
        "dataset": dataset,
        "model": model,
        "lr": c.lr,
        "batch_size": c.batch_size,
        "epochs": c.epochs,
        "momentum": c.momentum,
        "weight_decay": c.weight_decay,
        "seed": c.seed,
        "eval": list(task.eval_sets),
        "device": task.device,
        "replacement": task.replacement,
        "divergence_bound": task.divergence_bound,
        "measure": task.measure.as_dict(),
        **({} if task.stop is None else {"stop": task.stop.to_dict()}),
    }
    key = run_key(config, code_version=code_version)
    group = task.group()
    if artifacts is not None:
        task = replace(task, checkpoint=str(artifacts / key / "checkpoint.pt"))
    skip = task.stability.action == "skip" and task.stability.unstable(c.lr)
    new = NewRun(
        key=key,
        config=config,
        dataset=dataset,
        model=model,
        lr=c.lr,
        batch_size=c.batch_size,
        momentum=c.momentum,
        temperature=c.temperature,
        seed=c.seed,
        status="unstable" if skip else "pending",
        metrics=(
            {"lr_sharpness": task.stability.lr_sharpness(c.lr), "train_status": "skipped"}
            if skip
            else None
        ),
    )
    return Job(new, None if skip else task, group=None if skip else group)


def run(
    grid: Iterable[RunConfig],
    model_factory: Callable[[], Any],
    data: Any,
    *,
    store: Store | str | os.PathLike[str],
    sweep: str = "sweep",
    executor: AbstractExecutor | str | None = None,
    workers: int | None = None,
    eval_sets: Sequence[str] = (),
    device: str = "cpu",
    replacement: bool = False,
    divergence_bound: float | None = None,
    measure: Measurements | None = None,
    stability: Stability | None = None,
    stop: Any = None,
    model_name: str | None = None,
    data_name: str | None = None,
    max_attempts: int = 3,
    retry_failed: bool = False,
    code_version: str = CODE_VERSION,
    progress: Callable[[SweepProgress], None] | None = None,
    fuse: int | str | None = None,
) -> SweepSummary:
    """Sweep your own model and data over a grid; every run lands in the store.

    Args:
        grid: the runs (e.g. :func:`~sgdtemp.experiments.spec.iso_temperature_grid`).
        model_factory: picklable, no arguments, returns a fresh ``nn.Module`` (a module-level
            function or a ``functools.partial`` of one; Ray and Dask also take closures).
        data: ``DataSplits``, an ``(x, y)`` pair, or a picklable callable returning one.
        store: the store or its file.
        sweep: the sweep name.
        executor: an executor or its name (default ``local``).
        workers: parallelism when the executor is built here.
        eval_sets: evaluation sets (they need ``DataSplits``).
        device: the trainer's device.
        replacement: sample minibatches with replacement.
        divergence_bound: loss above which a run counts as diverged.
        measure: per-run measurements (default: none).
        stability: the ``lr · λ_max ≥ 2`` rule (default: sharpness unknown).
        stop: train every run until stationary
            (:class:`~sgdtemp.train.options.StationaryOptions`), or None for the grid's epochs.
        model_name: the model's label in the store (default: :func:`describe` of the factory).
        data_name: the data's label in the store (default: :func:`describe` of the data).
        max_attempts: claims of one run before a lost worker makes it ``failed``.
        retry_failed: requeue runs recorded ``failed`` earlier.
        code_version: folded into every key.
        progress: called with a :class:`SweepProgress` after every event.
        fuse: runs of one batch size trained together (:func:`fuse_size`: ``None`` the rule,
            an integer, or ``"off"``).

    Returns:
        The summary.

    Raises:
        UserError: on a bad argument or measurement option, or a shift measurement on
            ``(x, y)`` data (it needs ``DataSplits``), before any run starts.

    Example (not run here: it starts worker processes)::

        import functools, torch
        from sgdtemp.experiments.spec import iso_temperature_grid
        from sgdtemp.train import build_model

        x = torch.randn(64, 1, 2, 2); y = (x.flatten(1).sum(1) > 0).long()
        factory = functools.partial(build_model, "mlp", in_shape=(1, 2, 2), n_classes=2)
        grid = iso_temperature_grid([0.01], [8, 16], epochs=1, seeds=[0, 1])
        if __name__ == "__main__":  # worker processes import this module again
            summary = run(grid, factory, (x, y), store="runs.db", model_name="mlp")
            print(summary.counts())  # {'total': 4, 'ok': 4, ..., 'skipped': 0}
    """
    stability = stability or Stability()
    measure = measure or Measurements()
    if measure.shift is not None and isinstance(data, tuple):
        raise UserError(
            "measure.shift: the shift needs evaluation sets, so DataSplits data, not an (x, y) pair"
        )
    measure = check_measurements(measure, eval_sets)
    model = model_name or describe(model_factory)
    dataset = data_name or describe(data)
    template = TrainTask(
        model_factory,
        data,
        RunConfig(1.0, 1, 0, 1),
        eval_sets=tuple(eval_sets),
        device=device,
        replacement=replacement,
        divergence_bound=divergence_bound,
        measure=measure,
        stability=stability,
        stop=stop,
    )
    jobs = [
        _train_job(
            replace(template, config=config),
            dataset=dataset,
            model=model,
            base={},
            code_version=code_version,
            artifacts=None,
        )
        for config in grid
    ]
    return execute(
        jobs,
        store=store,
        sweep=sweep,
        executor=executor,
        workers=workers,
        max_attempts=max_attempts,
        retry_failed=retry_failed,
        progress=progress,
        preload=TRAIN_PRELOAD,
        fuse=fuse_size(jobs, workers=worker_count(executor, workers), fuse=fuse),
    )


def prepare_spec(
    spec: SweepSpec, *, artifacts: Path | None = None, code_version: str = CODE_VERSION
) -> list[Job]:
    """Check a spec against the data and models, and build its jobs (no run starts).

    Loads the data set once (so a missing file, a batch larger than the training set, a bad
    eval set or an unknown model fails here, before any work) and builds one model.

    Args:
        spec: the spec.
        artifacts: the store's artifacts folder (checkpoints go to ``artifacts/KEY/``).
        code_version: folded into every key.

    Returns:
        One job per cell of the grid.

    Raises:
        UserError: naming the spec file, line and key.
    """
    try:
        from sgdtemp.train import MODELS
    except ImportError as err:  # pragma: no cover - the trainer ships with the package
        raise spec.error("model", f"the trainer is not available ({err})") from err
    if spec.model not in MODELS:
        raise spec.error("model", f"unknown model; choose one of {', '.join(MODELS)}")
    try:  # a device this machine lacks fails here, before any run (spec files: when parsed)
        require_device(spec.device, option="device")
    except UserError as err:
        raise spec.error("device", str(err).removeprefix(f"device {spec.device}: ")) from err
    source = DatasetSource(spec.dataset, spec.data)
    try:
        splits = source()
    except UserError as err:
        key = "dataset" if "dataset" in str(err) else "data"
        raise spec.error(key, str(err)) from err
    n_train = len(splits.train)
    for config in spec.grid:
        if config.batch_size > n_train:
            raise spec.error(
                "grid.batch_sizes",
                f"batch size {config.batch_size} exceeds the {n_train} training images; "
                f"choose at most {n_train}",
            )
    if "heldout" in spec.eval_sets and len(splits.heldout) == 0:
        raise spec.error("eval", "the heldout set is empty; set [data] heldout or drop it")
    shift = spec.measure.shift
    if shift is not None and "heldout" in shift.get("eval_sets", ()) and len(splits.heldout) == 0:
        raise spec.error(
            "measure.shift.eval_sets", "the heldout set is empty; set [data] heldout or drop it"
        )
    model = ModelSpec(
        spec.model, tuple(splits.train.x.shape[1:]), splits.train.n_classes, spec.model_args
    )
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a confounded model warns in every worker anyway
            model()
    except UserError as err:
        raise spec.error("model_args", str(err)) from err
    except TypeError as err:
        raise spec.error("model_args", str(err)) from err
    remember(source, splits)
    # (test_subset enters a run's key only when set, so that older stores keep their keys)
    data = {k: v for k, v in vars(spec.data).items() if not (k == "test_subset" and v is None)}
    base = {"data": data, "model_args": dict(spec.model_args)}
    labels = {"dataset": spec.dataset, "model": spec.model, "model_kwargs": dict(spec.model_args)}
    template = TrainTask(
        model,
        source,
        RunConfig(1.0, 1, 0, 1),
        eval_sets=spec.eval_sets,
        device=spec.device,
        replacement=spec.replacement,
        divergence_bound=spec.divergence_bound,
        measure=spec.measure,
        stop=spec.stop,
        stability=spec.stability,
        eval_seed=spec.data.seed,
        labels=labels,
    )
    return [
        _train_job(
            replace(template, config=config),
            dataset=spec.dataset,
            model=spec.model,
            base=base,
            code_version=code_version,
            artifacts=artifacts if spec.checkpoints else None,
        )
        for config in spec.grid
    ]


def run_spec(
    spec: SweepSpec | str | Path,
    *,
    store: Store | str | os.PathLike[str],
    executor: AbstractExecutor | str | None = None,
    workers: int | None = None,
    max_attempts: int = 3,
    retry_failed: bool = False,
    progress: Callable[[SweepProgress], None] | None = None,
    fuse: int | str | None = None,
) -> SweepSummary:
    """Run a sweep spec (a :class:`SweepSpec` or a TOML file) into the store.

    Args:
        spec: the spec or its file.
        store: the store or its file.
        executor: an executor or its name (default ``local``).
        workers: parallelism when the executor is built here.
        max_attempts: claims of one run before a lost worker makes it ``failed``.
        retry_failed: requeue runs recorded ``failed`` earlier.
        progress: called with a :class:`SweepProgress` after every event.
        fuse: runs of one batch size trained together (:func:`fuse_size`).

    Returns:
        The summary.

    Raises:
        UserError: for an invalid spec or data, before any run starts.
    """
    if not isinstance(spec, SweepSpec):
        from sgdtemp.experiments.spec import load_spec

        spec = load_spec(spec)
    path = store.path if isinstance(store, Store) else Path(store)
    jobs = prepare_spec(spec, artifacts=path.parent / f"{path.stem}.artifacts")
    return execute(
        jobs,
        store=store,
        sweep=spec.name,
        executor=executor,
        workers=workers,
        max_attempts=max_attempts,
        retry_failed=retry_failed,
        spec=spec.to_dict(),
        progress=progress,
        preload=TRAIN_PRELOAD,
        fuse=fuse_size(jobs, workers=worker_count(executor, workers), fuse=fuse),
    )
