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

import collections
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.executors import AbstractExecutor
from sgdtemp.experiments.engine import Job, Outcome, SweepProgress, SweepSummary, execute
from sgdtemp.experiments.sources import (
    DatasetSource,
    ModelSpec,
    describe,
    eval_sets,
    materialize,
    remember,
)
from sgdtemp.experiments.spec import (
    SHIFT_DEFAULTS,
    Measurements,
    RunConfig,
    Stability,
    SweepSpec,
    check_measurements,
)
from sgdtemp.files import json_safe
from sgdtemp.storage import CODE_VERSION, NewRun, Store, run_key

__all__ = [
    "TRAIN_PRELOAD",
    "TrainTask",
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


@dataclass(frozen=True)
class TrainTask:
    """Train one model on one config, measure it, and return its metrics (runs in a worker).

    The metrics are the record ``sgdtemp train --json`` prints (``status``, ``temperature``,
    ``epochs`` with the train and evaluation-set losses and accuracies per epoch, ``steps``,
    ``seconds``, ...), plus ``curvature`` and ``shift`` when measured (see :func:`_curvature` and
    :func:`_shift`) and ``lr_sharpness`` when the sharpness is known.

    Attributes:
        model_factory: a :class:`ModelSpec`, or a picklable callable with no arguments returning
            a fresh ``nn.Module`` (called under ``torch.random.fork_rng`` seeded with the run's
            seed, so its initialisation is reproducible).
        data: ``DataSplits``, an ``(x, y)`` pair, or a picklable callable returning one
            (called once per worker process: the way to ship large data).
        config: the run's training options.
        eval_sets: evaluation sets (``heldout``, ``test``, ``corrupt:NAME:SEVERITY``; they need
            ``DataSplits``).
        device: the trainer's device.
        replacement: sample minibatches with replacement.
        divergence_bound: loss above which the run counts as diverged (default: the trainer's).
        measure: per-run measurements after training.
        stability: the stability rule; with action ``mark`` an unstable cell is run and
            recorded ``unstable``, its trainer status kept as ``train_status``.
        eval_seed: seed of the corruptions of the evaluation sets.
        checkpoint: where to save the trained weights (named models only), or None.
        labels: extra entries of the record (``dataset``, ``model``, ``model_kwargs``).
    """

    model_factory: Callable[..., Any]
    data: Any
    config: RunConfig
    eval_sets: tuple[str, ...] = ()
    device: str = "cpu"
    replacement: bool = False
    divergence_bound: float | None = None
    measure: Measurements = Measurements()
    stability: Stability = Stability()
    eval_seed: int = 0
    checkpoint: str | None = None
    labels: Mapping[str, Any] = field(default_factory=dict)

    def fit_options(self) -> Any:
        """The run's :class:`~sgdtemp.train.FitOptions`."""
        from sgdtemp.train import FitOptions

        c = self.config
        return FitOptions(
            lr=c.lr,
            batch_size=c.batch_size,
            epochs=c.epochs,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
            seed=c.seed,
            replacement=self.replacement,
            device=self.device,
            divergence_bound=self.divergence_bound,
        )

    def _model(self) -> Any:
        import torch

        return self._factory(torch.Generator().manual_seed(self.config.seed))

    def _factory(self, generator: Any) -> Any:
        """A fresh model whose weights come from ``generator`` (seeded with the run's seed)."""
        import torch

        if isinstance(self.model_factory, ModelSpec):
            return self.model_factory(generator)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(generator.initial_seed())
            return self.model_factory()

    def _data(self) -> tuple[Any, Any, dict[str, Any]]:
        """The data (loaded once per worker), the training set and the evaluation sets."""
        data = materialize(self.data)
        if isinstance(data, tuple):
            if self.eval_sets or self.measure.shift is not None:
                raise UserError(
                    "eval sets and the shift measurement need DataSplits data, not an (x, y) pair"
                )
            return data, data, {}
        evals = eval_sets(data, [s for s in self.eval_sets if s != "train"], self.eval_seed)
        return data, data.train, evals

    def __call__(self) -> Outcome:
        """Train, evaluate, measure; return the outcome."""
        from sgdtemp import train

        train.keep_freed_memory()  # a worker is a training process (see the function)
        data, train_set, evals = self._data()
        model = self._model()
        result = train.fit(model, train_set, self.fit_options(), eval_sets=evals)
        return self.outcome(model, data, train_set, result)

    @classmethod
    def fuse(cls, tasks: Sequence[TrainTask]) -> Callable[[Any], None]:
        """The runs of ``tasks`` trained together (:func:`sgdtemp.train.fit_many`).

        The tasks must share model, data, batch size, device and evaluation sets (their
        :func:`group` is equal); each run is measured and reported the moment it finishes.
        """
        return _TrainGroup(tuple(tasks))

    def memory_bytes(self) -> int:
        """Estimated bytes this run needs while it trains, from one model and one example.

        Weights, gradients, momentum and scratch (four parameter-sized buffers) and one
        minibatch's saved activations and their gradients.
        """
        import torch

        data = materialize(self.data)
        x = data[0] if isinstance(data, tuple) else data.train.x
        model = self._factory(torch.Generator().manual_seed(0))
        param = next(model.parameters())
        size = param.element_size()
        n_params = sum(p.numel() for p in model.parameters())
        outputs = [0]

        def count(module: Any, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                outputs[0] += output.numel()

        leaves = [m for m in model.modules() if not any(True for _ in m.children())]
        hooks = [m.register_forward_hook(count) for m in leaves]
        try:
            with torch.no_grad():
                model(x[:1].to(param.dtype))
        finally:
            for hook in hooks:
                hook.remove()
        # saved activations and their gradients for the minibatch, 4 parameter-sized buffers
        return int(size * (4 * n_params + 3 * self.config.batch_size * outputs[0]))

    def group(self) -> tuple[Any, ...]:
        """What runs trained together must share (see :meth:`fuse`)."""
        return (
            describe(self.model_factory),
            describe(self.data),
            self.config.batch_size,
            self.device,
            self.eval_sets,
            self.eval_seed,
        )

    def outcome(self, model: Any, data: Any, train_set: Any, result: Any) -> Outcome:
        """Measure the trained ``model`` and turn its training ``result`` into the outcome."""
        c = self.config
        metrics: dict[str, Any] = {**result.to_dict(), **self.labels}
        if self.measure.curvature is not None:
            metrics["curvature"] = _curvature(self.measure.curvature, model, train_set, result)
        if self.measure.shift is not None:
            metrics["shift"] = _shift(
                self.measure.shift,
                model,
                data,
                result,
                weight_decay=c.weight_decay,
                seed=c.seed,
                eval_set_names=[s for s in self.eval_sets if s != "train"],
                eval_seed=self.eval_seed,
            )
        lr_sharpness = self.stability.lr_sharpness(c.lr)
        if lr_sharpness is not None:
            metrics["lr_sharpness"] = lr_sharpness
        if self.checkpoint is not None and isinstance(self.model_factory, ModelSpec):
            metrics["checkpoint"] = self._save(model, metrics)
        status = str(result.status)
        if self.stability.unstable(c.lr):
            metrics["train_status"] = status
            status = "unstable"
        return Outcome(status, metrics, device=str(result.device))

    def _save(self, model: Any, metrics: Mapping[str, Any]) -> str:
        from sgdtemp.train import save_checkpoint

        assert isinstance(self.model_factory, ModelSpec) and self.checkpoint is not None
        spec = self.model_factory
        path = Path(self.checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            **{k: v for k, v in self.labels.items() if k != "model_kwargs"},
            **self.config.as_dict(),
            "in_shape": list(spec.in_shape),
            "n_classes": spec.n_classes,
            "model_kwargs": dict(spec.kwargs),
            "eval_sets": list(self.eval_sets),
            "replacement": self.replacement,
            "divergence_bound": self.divergence_bound,
            "temperature": self.config.temperature,
        }
        save_checkpoint(
            path,
            model.cpu(),
            model_name=spec.name,
            model_kwargs=dict(spec.kwargs),
            config=json_safe(config),
            metrics=json_safe(metrics),
        )
        return str(path)


@dataclass(frozen=True)
class _TrainGroup:
    """Train tasks of one group together; report each run's outcome as soon as it finishes."""

    tasks: tuple[TrainTask, ...]

    def __call__(self, report: Callable[[int, Any], None]) -> None:
        import torch

        from sgdtemp import train

        train.keep_freed_memory()
        first = self.tasks[0]
        data, train_set, evals = first._data()

        def on_result(k: int, result: Any) -> None:
            task = self.tasks[k]
            model = task._factory(torch.Generator().manual_seed(task.config.seed))
            model.load_state_dict(result.state)
            param = next(model.parameters())
            model.to(device=result.device, dtype=param.dtype)
            report(k, task.outcome(model, data, train_set, result))

        train.fit_many(
            first._factory,
            train_set,
            [t.fit_options() for t in self.tasks],
            eval_sets=evals,
            on_result=on_result,
        )


#: Largest group the automatic rule fuses (beyond it, a group's memory grows with no gain in speed:
#: benchmarks/bench_sweep_fuse.py).
FUSE_MAX = 16
#: Share of the machine's available memory the fused groups of all workers may use.
FUSE_MEMORY_SHARE = 0.5


def _available_memory() -> int:
    """Bytes of memory available to new work (``MemAvailable``; physical memory elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def parse_fuse(text: str | int | None) -> int | str | None:
    """``--fuse`` as :func:`fuse_size` takes it: ``"auto"``/None, ``"off"`` or K >= 1.

    Raises:
        UserError: for anything else.

    Example:
        >>> parse_fuse("8"), parse_fuse("off"), parse_fuse("auto")
        (8, 'off', 'auto')
    """
    if text is None or text in ("auto", "off"):
        return text
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = 0
    if value < 1:
        raise UserError(f"--fuse must be a positive integer, auto or off, got {text!r}")
    return value


def worker_count(executor: AbstractExecutor | str | None, workers: int | None) -> int:
    """The parallelism a sweep will have: ``workers``, the executor's, or the usable CPUs."""
    from sgdtemp.executors import usable_cpus

    if workers is not None:
        return workers
    if isinstance(executor, AbstractExecutor):
        return executor.max_workers
    return usable_cpus()


def fuse_size(jobs: Sequence[Job], *, workers: int, fuse: int | str | None = None) -> int:
    """How many runs of one group train together (``--fuse``): the engine's ``fuse``.

    ``"off"`` (or 1): every run on its own. An integer: that many, checked against memory.
    ``None`` / ``"auto"``: the rule. Runs of one group (same model, data, batch size, device)
    train together; with fewer groups than ``workers`` each group is split so that every worker
    gets one, and no group holds more than :data:`FUSE_MAX` runs or more than its share of
    memory (:data:`FUSE_MEMORY_SHARE` of what is available, split over the workers, each run
    costing :meth:`TrainTask.memory_bytes`).

    Raises:
        UserError: for a non-positive K, or a K whose groups cannot fit in memory.
    """
    if fuse == "off":
        return 1
    if fuse not in (None, "auto") and (
        not isinstance(fuse, int) or isinstance(fuse, bool) or fuse < 1
    ):
        raise UserError(f"--fuse must be a positive integer, auto or off, got {fuse!r}")
    groups = collections.Counter(
        j.group for j in jobs if j.task is not None and j.group is not None
    )
    if not groups or fuse == 1:
        return 1
    first = next(j.task for j in jobs if j.task is not None and j.group is not None)
    per_run = max(int(first.memory_bytes()), 1) if isinstance(first, TrainTask) else 1
    budget = FUSE_MEMORY_SHARE * _available_memory() / max(workers, 1)
    fits = max(int(budget // per_run), 1)
    if isinstance(fuse, int):
        if fuse > fits:
            raise UserError(
                f"--fuse {fuse}: a group of {fuse} runs needs about {fuse * per_run / 2**30:.2g} "
                f"GiB per worker, more than the {budget / 2**30:.2g} GiB there is; choose at "
                f"most --fuse {fits}"
            )
        return fuse
    largest = max(groups.values())
    share = math.ceil(max(workers, 1) / len(groups))  # tasks per group to busy every worker
    return max(1, min(math.ceil(largest / share), FUSE_MAX, fits))


def _curvature(
    options: Mapping[str, Any], model: Any, train_set: Any, result: Any
) -> dict[str, Any]:
    """The ``[measure.curvature]`` of a trained run (one recipe: ``measure_curvature``).

    Returns:
        ``{"status": "ok", **CurvatureMeasurement.to_dict(lr=...)}``, or ``{"status":
        "skipped", "reason": ...}`` for a run that did not train to the end.
    """
    from sgdtemp.experiments.measure import CurvatureOptions, measure_curvature

    if result.status != "ok":
        return {"status": "skipped", "reason": f"the run {result.status}"}
    measured = measure_curvature(model, train_set, CurvatureOptions(**options))
    return {"status": "ok", **measured.to_dict(lr=float(result.lr))}


def _shift(
    options: Mapping[str, Any],
    model: Any,
    splits: Any,
    result: Any,
    *,
    weight_decay: float,
    seed: int,
    eval_set_names: Sequence[str],
    eval_seed: int,
) -> dict[str, Any]:
    r"""The ``[measure.shift]`` of a trained run (one recipe: ``measure_shifts``).

    For each evaluation set: from the trained weights $\theta^*$, descend on the eval objective
    (mean cross-entropy over its first ``examples`` images, the training weight decay, and for the
    proximal objective a pull toward $\theta^*$) to $\tilde\theta^*$, and report the shift
    $s = \theta^* - \tilde\theta^*$, the gap and its quadratic part
    (:meth:`sgdtemp.shift.ShiftResult.summary`). Options and defaults: ``[measure.shift]`` in
    :mod:`sgdtemp.experiments.spec`.

    Returns:
        ``{"status": "ok", "examples": n, EVAL_SET: summary, ...}``, or ``{"status":
        "skipped", "reason": ...}`` for a run that did not train to the end or whose seed is
        not measured.
    """
    from sgdtemp.experiments.measure import measure_shifts
    from sgdtemp.shift import ShiftOptions

    if result.status != "ok":
        return {"status": "skipped", "reason": f"the run {result.status}"}
    o = {**SHIFT_DEFAULTS, **options}
    if "seeds" in o and seed not in o["seeds"]:
        return {"status": "skipped", "reason": f"seed {seed} is not in measure.shift.seeds"}
    n = int(o.pop("examples"))
    names = list(o.pop("eval_sets", None) or eval_set_names)
    o.pop("seeds", None)
    measure_seed = int(o.pop("seed"))
    summaries = measure_shifts(
        model,
        splits.train,
        eval_sets(splits, names, eval_seed).items(),
        examples=n,
        seed=measure_seed,
        options=ShiftOptions(weight_decay=weight_decay, **o),
    )
    return {"status": "ok", "examples": n, **summaries}


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
    base = {"data": {**vars(spec.data)}, "model_args": dict(spec.model_args)}
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
