r"""Measurements of a trained model, one recipe each, shared by the CLI, the sweeps and reproduce.

- :func:`load_run`: a checkpoint with the data splits it was trained on (checked to belong
  together), ready to measure.
- :func:`measure_curvature`: Hessian trace (Hutchinson, with its standard error), the top
  eigenvalues (Lanczos) and optionally the gradient-noise trace $\mathrm{tr}\,C$ of the mean
  cross-entropy over the first ``examples`` images; what ``sgdtemp curvature`` prints and what a
  sweep's ``[measure.curvature]`` stores.
- :func:`measure_shifts`: the train → eval-set shift (:func:`sgdtemp.shift.measure_shift`) for
  several evaluation sets.
- :func:`measure_sharpness`: $\lambda_{\max}$ of a checkpoint's train loss (``sgdtemp scale``).

Every product is a fixed Hessian-vector-product formulation and every random draw comes from a
seeded generator, so the same checkpoint gives the same digits on every machine and executor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sgdtemp.errors import UserError

__all__ = [
    "LoadedRun",
    "load_run",
    "head",
    "CurvatureOptions",
    "CurvatureMeasurement",
    "measure_curvature",
    "measure_shifts",
    "measure_sharpness",
    "curvature_metrics",
    "shift_metrics",
    "mechanisms_metrics",
]


# ------------------------------------------------------------------------ checkpoints


@dataclass(frozen=True)
class LoadedRun:
    """A checkpoint with the data it was trained on, ready for measurements.

    Attributes:
        model: the trained network, in eval mode, on ``device`` in ``dtype``.
        config: the checkpoint's config (lr, batch size, data options, ...).
        dataset: the canonical data-set name.
        splits: the data splits rebuilt as in training (held-out size, subset, data seed).
        device: where the model sits.
        dtype: its floating dtype.
        checkpoint: the file it came from.
    """

    model: nn.Module
    config: dict[str, Any]
    dataset: str
    splits: Any
    device: torch.device
    dtype: torch.dtype
    checkpoint: str

    def eval_set(self, spec: str) -> Any:
        """The evaluation set ``spec`` of the run's splits (corruptions seeded as in training).

        Raises:
            UserError: for an unknown or empty set.
        """
        from sgdtemp.data import eval_set

        data = eval_set(self.splits, spec, seed=int(self.config.get("data_seed", 0) or 0))
        if len(data.y) == 0:
            raise UserError(f"evaluation set {spec} is empty for this checkpoint; choose another")
        return data


def load_run(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    data_root: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedRun:
    """Load a checkpoint and its data splits, checking that they belong together.

    Args:
        checkpoint: a checkpoint written by ``sgdtemp train`` or a sweep.
        dataset: the data set; must be the checkpoint's (default: the checkpoint's).
        data_root: folder of the data files, where the data set needs one (default: the one
            recorded in the checkpoint).
        device: where to put the model.
        dtype: its floating dtype.

    Returns:
        The run.

    Raises:
        UserError: for a missing or foreign checkpoint, a data set other than the checkpoint's,
            or data whose image shape or class count does not fit the model.
    """
    from sgdtemp.data import load_dataset
    from sgdtemp.data._datasets import canonical_name
    from sgdtemp.train import load_checkpoint, resolve_device

    dev = resolve_device(device)
    try:
        ckpt = load_checkpoint(checkpoint, map_location=dev)
    except UserError as err:  # torch's own reasons can span lines: keep the error to one
        raise UserError(" ".join(str(err).split())) from err
    config = dict(ckpt.config)
    trained_on = config.get("dataset")
    if dataset is None:
        if trained_on is None:
            raise UserError(f"checkpoint {checkpoint} does not name its data set; pass --dataset")
        dataset = str(trained_on)
    name = canonical_name(dataset)
    if trained_on is not None and canonical_name(str(trained_on)) != name:
        raise UserError(
            f"checkpoint {checkpoint} was trained on {trained_on}, not {dataset}; "
            f"pass --dataset {trained_on}"
        )
    splits = load_dataset(
        name,
        root=data_root if data_root is not None else config.get("data_root"),
        heldout=config.get("heldout"),
        train_subset=config.get("train_subset"),
        seed=int(config.get("data_seed", 0) or 0),
        test_subset=config.get("test_subset"),
    )
    shape = [int(s) for s in splits.train.x.shape[1:]]
    if shape != [int(s) for s in config["in_shape"]] or int(splits.train.n_classes) != int(
        config["n_classes"]
    ):
        raise UserError(
            f"checkpoint {checkpoint} expects images {config['in_shape']} with "
            f"{config['n_classes']} classes, but {dataset} has {shape} with "
            f"{splits.train.n_classes}; use the checkpoint's dataset"
        )
    model = ckpt.model.to(device=dev, dtype=dtype).eval()
    return LoadedRun(model, config, name, splits, dev, dtype, str(checkpoint))


def head(data: Any, examples: int, like: nn.Module | None = None) -> tuple[Any, Any]:
    """The first ``examples`` images and labels of a data set (all for 0).

    With ``like``, moved to that model's device and floating dtype.
    """
    x, y = (data.x, data.y) if hasattr(data, "x") else data
    n = int(y.shape[0]) if examples == 0 else min(int(examples), int(y.shape[0]))
    x, y = x[:n], y[:n]
    if like is not None:
        param = next(like.parameters())
        x, y = x.to(param.device, param.dtype), y.to(param.device)
    return x, y


# ------------------------------------------------------------------------- curvature


@dataclass(frozen=True)
class CurvatureOptions:
    r"""How to measure the curvature of a trained model's training loss.

    Attributes:
        examples: the Hessian is that of the mean cross-entropy over the first ``examples``
            training images (0: all).
        probes: Hutchinson probes of the trace.
        top_k: largest eigenvalues by Lanczos (0: none).
        eig_tol: relative residual tolerance of the Lanczos eigenpairs.
        batch_size: images per Hessian-vector-product batch.
        noise_trace: also measure $\mathrm{tr}\,C$, the trace of the per-example gradient
            covariance (per-example gradients; costlier than the trace).
        hvp_mode: the Hessian-vector-product formulation (see
            :class:`~sgdtemp.curvature.HessianOperator`).
        seed: seed of the probes and the Lanczos start vector.
    """

    examples: int = 1024
    probes: int = 16
    top_k: int = 1
    eig_tol: float = 1e-4
    batch_size: int = 256
    noise_trace: bool = False
    hvp_mode: str = "double_backward"
    seed: int = 0

    def __post_init__(self) -> None:
        for name, least in (("examples", 0), ("probes", 1), ("top_k", 0), ("batch_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise UserError(f"curvature {name} must be an integer >= {least}, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"curvature seed must be a non-negative integer, got {self.seed!r}")
        if not (self.eig_tol > 0 and math.isfinite(self.eig_tol)):
            raise UserError(f"curvature eig_tol must be a positive number, got {self.eig_tol}")


@dataclass(frozen=True)
class CurvatureMeasurement:
    r"""The curvature of a model's training loss.

    Attributes:
        examples: images the loss averages over.
        parameters: trainable parameters $d$.
        probes: Hutchinson probes.
        trace: Hutchinson estimate of $\mathrm{tr}\,H$.
        trace_stderr: its standard error.
        top_eigenvalues: the largest eigenvalues of $H$, descending (empty when not asked).
        eigenvalues_converged: whether Lanczos met its tolerance (None when not asked).
        trace_method: ``"taylor"`` (quadratic forms by forward Taylor mode) or ``"hvp"``.
        hvp_mode: the Hessian-vector-product formulation of the products.
        trace_products: operator products of the trace (Hessian-vector products, or quadratic
            forms in Taylor mode).
        lanczos_products: Hessian-vector products of Lanczos.
        noise_trace: $\mathrm{tr}\,C$, or None when not measured.
        options: the options of the measurement.
    """

    examples: int
    parameters: int
    probes: int
    trace: float
    trace_stderr: float
    top_eigenvalues: tuple[float, ...]
    eigenvalues_converged: bool | None
    trace_method: str
    hvp_mode: str
    trace_products: int
    lanczos_products: int
    noise_trace: float | None
    options: CurvatureOptions = field(repr=False)

    @property
    def products(self) -> int:
        """Operator products spent in all."""
        return self.trace_products + self.lanczos_products

    @property
    def lambda_max(self) -> float | None:
        r"""$\lambda_{\max}$, or None when no eigenvalue was measured."""
        return self.top_eigenvalues[0] if self.top_eigenvalues else None

    def lr_sharpness(self, lr: float | None) -> float | None:
        r"""$\eta\,\lambda_{\max}$ (SGD on a quadratic is unstable from 2), or None."""
        lam = self.lambda_max
        return None if lr is None or lam is None else float(lr) * lam

    def to_dict(self, *, lr: float | None = None) -> dict[str, Any]:
        """The measurement as JSON values, with ``lr_lambda_max`` when ``lr`` is given."""
        out: dict[str, Any] = {
            "examples": self.examples,
            "parameters": self.parameters,
            "probes": self.probes,
            "trace": self.trace,
            "trace_stderr": self.trace_stderr,
            "top_eigenvalues": list(self.top_eigenvalues),
            "lanczos_converged": self.eigenvalues_converged,
            "trace_method": self.trace_method,
            "hvp_mode": self.hvp_mode,
            "products": self.products,
        }
        if self.noise_trace is not None:
            out["noise_trace"] = self.noise_trace
        if lr is not None and self.lambda_max is not None:
            out["lr_lambda_max"] = self.lr_sharpness(lr)
        return out


def measure_curvature(
    model: nn.Module,
    data: Any,
    options: CurvatureOptions | None = None,
    *,
    loss_fn: Any = None,
) -> CurvatureMeasurement:
    r"""Hessian trace, top eigenvalues and (optionally) $\mathrm{tr}\,C$ of a model's loss.

    Args:
        model: the trained network (not modified).
        data: an ``ImageDataset`` or ``(x, y)`` tensors; the first ``options.examples`` count.
        options: the measurement's options (default :class:`CurvatureOptions`).
        loss_fn: ``loss_fn(output, target)`` averaging over its batch (default: cross-entropy).

    Returns:
        The measurement.

    Raises:
        UserError: for bad options or more eigenvalues than parameters.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(3, 2)).double()
        >>> x, y = torch.randn(32, 3, generator=g, dtype=torch.float64), torch.arange(32) % 2
        >>> m = measure_curvature(model, (x, y), CurvatureOptions(probes=4, top_k=2))
        >>> len(m.top_eigenvalues), m.top_eigenvalues[0] >= m.top_eigenvalues[1]
        (2, True)
    """
    from sgdtemp.curvature import (
        GradientCovarianceOperator,
        HessianOperator,
        hutchinson_trace,
        top_eigenvalues,
    )

    o = options or CurvatureOptions()
    loss = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if o.top_k > n_params:
        raise UserError(f"top_k {o.top_k} is larger than the number of parameters ({n_params})")
    x, y = head(data, o.examples, like=model)
    hessian = HessianOperator(
        model, loss, (x, y), batch_size=o.batch_size, hvp_mode=o.hvp_mode, batching="loop"
    )
    generator = torch.Generator(device=x.device).manual_seed(o.seed)
    trace = hutchinson_trace(hessian, o.probes, generator=generator)
    values: tuple[float, ...] = ()
    converged = None
    lanczos_products = 0
    if o.top_k:
        pairs = top_eigenvalues(hessian, o.top_k, tol=o.eig_tol, generator=generator)
        values = tuple(float(v) for v in pairs.values)
        converged = bool(pairs.converged)
        lanczos_products = pairs.num_matvecs
    noise = None
    if o.noise_trace:
        noise = float(
            GradientCovarianceOperator(model, loss, (x, y), batch_size=o.batch_size).trace()
        )
    return CurvatureMeasurement(
        examples=int(y.shape[0]),
        parameters=n_params,
        probes=o.probes,
        trace=float(trace.value),
        trace_stderr=float(trace.stderr),
        top_eigenvalues=values,
        eigenvalues_converged=converged,
        trace_method="taylor" if hessian.model_loss.uses_taylor else "hvp",
        hvp_mode=o.hvp_mode,
        trace_products=int(trace.num_products),
        lanczos_products=int(lanczos_products),
        noise_trace=noise,
        options=o,
    )


def measure_sharpness(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    data_root: str | Path | None = None,
    max_examples: int = 2048,
    seed: int = 0,
) -> tuple[float, int]:
    r"""Largest Hessian eigenvalue of a checkpoint's train loss, and its training-set size.

    The Hessian is that of the mean cross-entropy over the first ``max_examples`` training
    images of the checkpoint's own data split (:func:`load_run`), and $\lambda_{\max}$ comes from
    Lanczos with full reorthogonalization (:func:`measure_curvature`).

    Returns:
        ``(lambda_max, n_train)``.

    Raises:
        UserError: for an unreadable checkpoint or a data set other than the checkpoint's.
    """
    run = load_run(checkpoint, dataset=dataset, data_root=data_root)
    options = CurvatureOptions(examples=max_examples, probes=1, top_k=1, seed=seed)
    measured = measure_curvature(run.model, run.splits.train, options)
    assert measured.lambda_max is not None
    return measured.lambda_max, int(len(run.splits.train.y))


# ----------------------------------------------------------------------------- shift


def measure_shifts(
    model: nn.Module,
    train: Any,
    eval_data: Iterable[tuple[str, Any]],
    *,
    examples: int,
    seed: int,
    options: Any = None,
) -> dict[str, Any]:
    """:func:`sgdtemp.shift.measure_shift` from the training set to each evaluation set.

    Both objectives use the first ``examples`` images of their set, moved to the model's device
    and dtype; each measurement draws from a fresh generator seeded with ``seed``.

    Args:
        model: the trained model (its weights are the train minimum).
        train: the training ``ImageDataset``.
        eval_data: ``(name, ImageDataset)`` pairs, consumed one at a time.
        examples: images per objective.
        seed: seed of each measurement's generator.
        options: the :class:`~sgdtemp.shift.ShiftOptions` (weight decay included).

    Returns:
        ``{name: ShiftResult.summary()}`` in the order of ``eval_data``.
    """
    from sgdtemp.shift import measure_shift

    train_xy = head(train, examples, like=model)
    return {
        name: measure_shift(
            model,
            F.cross_entropy,
            train_xy,
            head(data, examples, like=model),
            options,
            generator=torch.Generator().manual_seed(seed),
        ).summary()
        for name, data in eval_data
    }


# ----------------------------------------------------------- a sweep's [measure] tables


def curvature_metrics(
    options: Mapping[str, Any], model: Any, train_set: Any, result: Any
) -> dict[str, Any]:
    """A sweep's ``[measure.curvature]`` of a trained run (:func:`measure_curvature`).

    Returns:
        ``{"status": "ok", **CurvatureMeasurement.to_dict(lr=...)}``, or ``{"status":
        "skipped", "reason": ...}`` for a run that did not train to the end.
    """
    if result.status != "ok":
        return {"status": "skipped", "reason": f"the run {result.status}"}
    measured = measure_curvature(model, train_set, CurvatureOptions(**options))
    return {"status": "ok", **measured.to_dict(lr=float(result.lr))}


def _table_options(
    table: str, defaults: Mapping[str, Any], options: Mapping[str, Any], result: Any, seed: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A ``[measure.TABLE]``'s options over its defaults (``seeds`` taken out) and a skip record.

    The record (``{"status": "skipped", "reason": ...}``) is what to store instead when the run
    did not train to the end or its seed is not measured; None otherwise.
    """
    o = {**defaults, **options}
    seeds = o.pop("seeds", None)
    if result.status != "ok":
        return o, {"status": "skipped", "reason": f"the run {result.status}"}
    if seeds is not None and seed not in seeds:
        return o, {"status": "skipped", "reason": f"seed {seed} is not in measure.{table}.seeds"}
    return o, None


def shift_metrics(
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
    r"""A sweep's ``[measure.shift]`` of a trained run (:func:`measure_shifts`).

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
    from sgdtemp.experiments.sources import eval_sets
    from sgdtemp.experiments.spec import SHIFT_DEFAULTS
    from sgdtemp.shift import ShiftOptions

    o, skipped = _table_options("shift", SHIFT_DEFAULTS, options, result, seed)
    if skipped is not None:
        return skipped
    n = int(o.pop("examples"))
    names = list(o.pop("eval_sets", None) or eval_set_names)
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


def mechanisms_metrics(
    options: Mapping[str, Any],
    model: nn.Module,
    splits: Any,
    result: Any,
    *,
    weight_decay: float,
    seed: int,
    eval_set_names: Sequence[str],
    eval_seed: int,
) -> dict[str, Any]:
    r"""A sweep's ``[measure.mechanisms]`` of a stationary run (:func:`measure_mechanisms`).

    The decomposition of each eval set's expected objective into vertical shift, shift-, cross,
    bias- and covariance-curvature (theory.md §1.7), from the run's window mean and reservoir.
    The train objective $F$ is the one the run trained on: the whole training set (or its first
    ``train_examples`` images, when given); each eval objective averages over the first
    ``examples`` images of its set. A subset of the training set would have a minimum of its
    own, shifted from the run's: on the quick profile's MLP, 1000 of the 4000 images put it 3.4
    times further from the window mean.

    Returns:
        ``{"status": "ok", "examples": n, **MechanismsResult.summary()}``, or ``{"status":
        "skipped", "reason": ...}`` for a run that did not become stationary, did not train to
        the end, or whose seed is not measured.
    """
    from sgdtemp.experiments.sources import eval_sets
    from sgdtemp.experiments.spec import MECHANISMS_DEFAULTS
    from sgdtemp.shift import ShiftOptions, measure_mechanisms

    o, skipped = _table_options("mechanisms", MECHANISMS_DEFAULTS, options, result, seed)
    if skipped is not None:
        return skipped
    if result.stationary_mean is None or result.stationary_iterates is None:
        return {"status": "skipped", "reason": "the run did not become stationary"}
    n = int(o.pop("examples"))
    n_train = int(o.pop("train_examples", 0))  # 0: all (see head)
    names = list(o.pop("eval_sets", None) or eval_set_names)
    data = {name: head(d, n, like=model) for name, d in eval_sets(splits, names, eval_seed).items()}
    measured = measure_mechanisms(
        model,
        F.cross_entropy,
        head(splits.train, n_train, like=model),
        data,
        result.stationary_mean,
        result.stationary_iterates,
        ShiftOptions(weight_decay=weight_decay, objective="minimum", **o),
    )
    return {"status": "ok", "examples": n, **measured.summary()}
