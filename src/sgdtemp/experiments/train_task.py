"""One training run of a sweep as a worker task, and runs of one group trained as one task.

Imports no torch at module level (a worker imports it when it trains).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.experiments.engine import Outcome
from sgdtemp.experiments.sources import ModelSpec, describe, eval_sets, materialize
from sgdtemp.experiments.spec import Measurements, RunConfig, Stability
from sgdtemp.files import json_safe

__all__ = ["TrainTask"]


@dataclass(frozen=True)
class TrainTask:
    """Train one model on one config, measure it, and return its metrics (runs in a worker).

    The metrics are the record ``sgdtemp train --json`` prints (``status``, ``temperature``,
    ``epochs`` with the train and evaluation-set losses and accuracies per epoch, ``steps``,
    ``seconds``, ...), plus ``curvature`` and ``shift`` when measured (see
    :func:`~sgdtemp.experiments.measure.curvature_metrics` and ``shift_metrics``) and
    ``lr_sharpness`` when the sharpness is known.

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
        stop: train until stationary (:class:`~sgdtemp.train.options.StationaryOptions`;
            ``config.epochs`` is then ignored), or None for ``config.epochs`` epochs.
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
    stop: Any = None

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
            stationary=self.stop,
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
        from sgdtemp.experiments.measure import (
            curvature_metrics,
            mechanisms_metrics,
            shift_metrics,
        )

        c = self.config
        metrics: dict[str, Any] = {**result.to_dict(), **self.labels}
        if self.measure.curvature is not None:
            metrics["curvature"] = curvature_metrics(
                self.measure.curvature, model, train_set, result
            )
        run: dict[str, Any] = {
            "weight_decay": c.weight_decay,
            "seed": c.seed,
            "eval_set_names": [s for s in self.eval_sets if s != "train"],
            "eval_seed": self.eval_seed,
        }
        for name, options, measure in (
            ("shift", self.measure.shift, shift_metrics),
            ("mechanisms", self.measure.mechanisms, mechanisms_metrics),
        ):
            if options is not None:
                metrics[name] = measure(options, model, data, result, **run)
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

    def _data_config(self) -> dict[str, Any]:
        """How the data were loaded, as ``sgdtemp train`` writes it into a checkpoint.

        :func:`~sgdtemp.experiments.measure.load_run` then rebuilds the same splits.
        """
        options = getattr(self.data, "options", None)
        if options is None:
            return {}
        return {
            "data_root": options.root,
            "heldout": options.heldout,
            "train_subset": options.train_subset,
            "test_subset": options.test_subset,
            "data_seed": options.seed,
        }

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
            **self._data_config(),
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
