"""Sweep specs: a TOML file (or Python objects) describing an η × B grid of training runs.

A spec names the data, the model, the training options, the evaluation sets, the per-run
measurements and the grid, either as iso-temperature lines (``temperatures × batch_sizes``, with
``lr = T·B·(1 − momentum)`` from :func:`sgdtemp.theory.temperature.lr_for_temperature`) or
explicitly (``lrs × batch_sizes``), and what to do with cells whose ``lr·λ_max ≥ 2`` when the
sharpness ``λ_max`` is known. Example (every key but ``dataset``, ``model`` and the grid is
optional)::

    name = "fmnist-iso-T"          # default: the file's stem
    dataset = "fashion-mnist"      # sgdtemp.data.DATASETS
    model = "mlp"                  # sgdtemp.train model registry
    epochs = 2
    seeds = [0, 1]
    momentum = 0.0
    weight_decay = 0.0
    device = "cpu"                 # or "auto", "cuda"
    replacement = false            # minibatches with replacement
    divergence_bound = 1e4         # loss above this counts as divergence
    checkpoints = false            # save each run's weights in the store's artifacts folder
    eval = ["heldout", "test", "corrupt:gaussian_noise:3"]

    [data]                         # passed to sgdtemp.data.load_dataset
    root = "/path/to/files"
    heldout = 10000                # count, or a fraction in (0, 1)
    train_subset = 5000
    test_subset = 2000             # the first test images (and corrupted copies of them)
    seed = 0

    [model_args]                   # passed to the model builder
    width = 256

    [grid]
    temperatures = [1e-3, 3e-3]    # or: lrs = [0.05, 0.1]
    batch_sizes = [32, 64, 128]

    [stability]
    sharpness = 40.0               # λ_max, when known
    action = "mark"                # "mark": run and record `unstable`; "skip": record only

    [stop]                         # train until stationary instead of for `epochs`
    rule = "stationary"            # or "epochs" (the default)
    max_sde_time = 120             # budget in SDE time t = steps * lr (whole epochs)
    reservoir = 8                  # and probe_every, probe_examples, window_fraction,
                                   # expectation_examples, window, batches, alpha, kappa
                                   # (sgdtemp.train.options.StationaryOptions)

    [measure.curvature]            # per-run Hessian measurements after training
    probes = 16                    # Hutchinson probes for the trace
    top_k = 1                      # largest eigenvalues (Lanczos)
    examples = 1024                # training images the Hessian averages over
    [measure.shift]                # train → eval-set minimum shift after training
    eval_sets = ["heldout", "corrupt:gaussian_noise:3"]   # default: the `eval` sets
    seeds = [0]                    # measure the runs of these seeds only (default: all)
    examples = 1000                # training and eval images the two objectives average over
    max_iters = 10                 # Newton–CG iterations of the descent to the eval minimum

Every key of ``[measure.shift]`` (see :class:`Measurements` and :data:`SHIFT_DEFAULTS`) is an
option of :func:`sgdtemp.shift.measure_shift` or says which data it sees; ``measure.shift = true``
measures with the defaults. The result lands in each run's metrics under ``"shift"``.

Errors name the file, the line and the key: ``spec.toml:12: grid.batch_sizes: ...``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.experiments._toml import TomlReader, located_error
from sgdtemp.experiments.grid import RunConfig, iso_temperature_grid, product_grid
from sgdtemp.resources import require_device

__all__ = [
    "RunConfig",
    "DataOptions",
    "Stability",
    "Measurements",
    "SweepSpec",
    "STABILITY_ACTIONS",
    "SHIFT_DEFAULTS",
    "iso_temperature_grid",
    "product_grid",
    "load_spec",
    "parse_spec",
    "check_measurements",
]

#: What to do with a cell whose ``lr · λ_max ≥ 2``.
STABILITY_ACTIONS = ("mark", "skip")

# Options of the per-run measurements and their kinds (see _Reader.check).
_CURVATURE_KEYS = {
    "probes": "int>0",
    "top_k": "int>0",
    "examples": "int>0",
    "batch_size": "int>0",
    "seed": "int>=0",
}
_SHIFT_KEYS = {
    "eval_sets": "list:str",
    "seeds": "list:int>=0",
    "examples": "int>0",
    "batch_size": "int>0",
    "method": "choice:newton_cg,lbfgs",
    "objective": "choice:auto,minimum,proximal",
    "mu": "num>0",
    "max_iters": "int>0",
    "max_cg_iters": "int>0",
    "grad_tol": "num>0",
    "rel_grad_tol": "num>0",
    "top_k": "int>=0",
    "seed": "int>=0",
    "smoothing": "choice:auto,off",
}

# [measure.mechanisms]: the decomposition of a stationary run's expected eval objective
# (sgdtemp.shift.measure_mechanisms); the descents' options are ShiftOptions'.
_MECHANISMS_KEYS = {
    "eval_sets": "list:str",
    "seeds": "list:int>=0",
    "examples": "int>0",
    "train_examples": "int>0",
    "smoothing": "choice:auto,off",
    "batch_size": "int>0",
    "method": "choice:newton_cg,lbfgs",
    "max_iters": "int>0",
    "max_cg_iters": "int>0",
    "grad_tol": "num>0",
    "rel_grad_tol": "num>0",
}

#: Defaults of the ``[measure.mechanisms]`` options (``train_examples``: the whole training set).
#: Smoothing is off: on the quick profile's Fashion-MNIST MLP (T = 1/1024, B = 16, seed 0) the
#: continuation's first stage (softplus, beta = 10) carried the descent from the window mean to a
#: point 3.9 away (|theta-bar| = 4.0), where the quadratic sum missed the measured gap 15-fold;
#: on the network as it is, the descent stayed 0.74 away and the sum came within 6 %.
MECHANISMS_DEFAULTS: Mapping[str, Any] = {
    "smoothing": "off",
    "examples": 1000,
    "batch_size": 500,
    "method": "newton_cg",
    "max_iters": 100,
    "max_cg_iters": 50,
    "grad_tol": 1e-6,
    "rel_grad_tol": 1e-4,
}

#: Defaults of the ``[measure.shift]`` options that have one (``eval_sets``: the sweep's
#: evaluation sets; ``seeds``: every seed; ``mu``: :func:`sgdtemp.shift.measure_shift`'s).
SHIFT_DEFAULTS: Mapping[str, Any] = {
    "examples": 1000,
    "batch_size": 500,
    "method": "newton_cg",
    "objective": "auto",
    "max_iters": 10,
    "max_cg_iters": 20,
    "grad_tol": 1e-6,
    "rel_grad_tol": 1e-4,
    "top_k": 0,
    "seed": 0,
}


@dataclass(frozen=True)
class DataOptions:
    """How to load the data set (:func:`sgdtemp.data.load_dataset`'s options)."""

    root: str | None = None
    heldout: int | float | None = None
    train_subset: int | None = None
    seed: int = 0
    test_subset: int | None = None


@dataclass(frozen=True)
class Stability:
    """The stability rule: a cell is unstable when ``lr · sharpness ≥ 2``.

    Attributes:
        sharpness: the top Hessian eigenvalue λ_max at the relevant minimum, when known.
        action: ``"mark"`` (run it, record ``unstable`` with the outcome kept in the metrics)
            or ``"skip"`` (record ``unstable`` without running it).

    Example:
        >>> Stability(sharpness=40.0).unstable(0.05), Stability(sharpness=40.0).unstable(0.01)
        (True, False)
    """

    sharpness: float | None = None
    action: str = "mark"

    def lr_sharpness(self, lr: float) -> float | None:
        """``lr · λ_max``, or None when the sharpness is unknown."""
        return None if self.sharpness is None else lr * self.sharpness

    def unstable(self, lr: float) -> bool:
        """Whether ``lr · λ_max ≥ 2`` (False when the sharpness is unknown)."""
        value = self.lr_sharpness(lr)
        return value is not None and value >= 2.0


@dataclass(frozen=True)
class Measurements:
    """Per-run measurements after training (None: not measured).

    Attributes:
        curvature: options of the Hessian measurement of the trained model on the first
            ``examples`` (1024) training images: Hutchinson trace with ``probes`` (16) probes and
            the ``top_k`` (1) largest eigenvalues by Lanczos, HVPs over batches of
            ``batch_size`` (256), probes seeded by ``seed`` (0).
        shift: options of the train → eval-set shift measurement
            (:func:`sgdtemp.shift.measure_shift`) of the trained model, on each of
            ``eval_sets`` (default: the sweep's evaluation sets but ``train``), for the runs of
            ``seeds`` (default: all): both objectives average over the first ``examples``
            (1000) images of the training and the evaluation set in batches of ``batch_size``
            (500); the descent is ``method`` (``"newton_cg"``; or ``"lbfgs"``) on the
            ``objective`` (``"auto"``, ``"minimum"`` or ``"proximal"`` with weight ``mu``) for
            at most ``max_iters`` (10) iterations of ``max_cg_iters`` (20) CG steps, to a
            gradient norm of ``grad_tol`` (1e-6) or ``rel_grad_tol`` (1e-4) times the initial
            one; ``top_k`` (0) projects the shift on the top eigenvectors of the eval Hessian,
            Lanczos seeded by ``seed`` (0). The training weight decay is the objectives'.
        mechanisms: options of the decomposition of a stationary run's expected eval objective
            into vertical shift, shift-, cross, bias- and covariance-curvature
            (:func:`sgdtemp.shift.measure_mechanisms`, theory.md §1.7), on ``eval_sets`` for the
            runs of ``seeds``, from the window's mean and reservoir; objectives over the first
            ``examples`` (1000) images; descents as for the shift (``max_iters`` 100,
            ``max_cg_iters`` 50). Needs ``[stop] rule = "stationary"`` and weight decay > 0.
    """

    curvature: Mapping[str, Any] | None = None
    shift: Mapping[str, Any] | None = None
    mechanisms: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Only the requested measurements, as plain dicts."""
        out: dict[str, Any] = {}
        if self.curvature is not None:
            out["curvature"] = dict(self.curvature)
        if self.shift is not None:
            out["shift"] = dict(self.shift)
        if self.mechanisms is not None:
            out["mechanisms"] = dict(self.mechanisms)
        return out


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep spec (see the module docstring for the file format)."""

    name: str
    dataset: str
    model: str
    grid: tuple[RunConfig, ...]
    model_args: Mapping[str, Any] = field(default_factory=dict)
    data: DataOptions = DataOptions()
    eval_sets: tuple[str, ...] = ("heldout", "test")
    device: str = "cpu"
    replacement: bool = False
    divergence_bound: float | None = None
    checkpoints: bool = False
    stability: Stability = Stability()
    measure: Measurements = Measurements()
    stop: Any = None
    source: str | None = None
    lines: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    def error(self, key: str, message: str) -> UserError:
        """A :class:`UserError` naming the spec file, the key's line and the key."""
        return located_error(self.source, self.lines, key, message)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON values (stored with the sweep)."""
        return {
            "name": self.name,
            "dataset": self.dataset,
            "model": self.model,
            "model_args": dict(self.model_args),
            "data": asdict(self.data),
            "eval": list(self.eval_sets),
            "device": self.device,
            "replacement": self.replacement,
            "divergence_bound": self.divergence_bound,
            "checkpoints": self.checkpoints,
            "stability": asdict(self.stability),
            "measure": self.measure.as_dict(),
            "stop": None if self.stop is None else self.stop.to_dict(),
            "grid": [c.as_dict() for c in self.grid],
            "source": self.source,
        }


# ------------------------------------------------------------------------------------ parsing

_TOP = (
    "name",
    "dataset",
    "model",
    "epochs",
    "seeds",
    "momentum",
    "weight_decay",
    "device",
    "replacement",
    "divergence_bound",
    "checkpoints",
    "eval",
    "data",
    "model_args",
    "grid",
    "stability",
    "measure",
    "stop",
)

# [stop] keys: the stationary options (sgdtemp.train.options.StationaryOptions) and the
# stopping rule's (sgdtemp.train.stationarity.StationarityRule).
_STOP_KEYS = {
    "rule": "choice:epochs,stationary",
    "max_sde_time": "num>0",
    "probe_every": "num>0",
    "probe_examples": "int>0",
    "window_fraction": "num>0",
    "reservoir": "int>0",
    "expectation_examples": "int>=0",
    "window": "num>0",
    "batches": "int>0",
    "alpha": "num>0",
    "kappa": "num>0",
    "capacity": "int>0",
}
_RULE_KEYS = ("window", "batches", "alpha", "kappa", "capacity")


def _stop(r: TomlReader, table: Mapping[str, Any]) -> Any:
    """The ``[stop]`` table: None (fixed epochs) or the stationary options."""
    from sgdtemp.train.options import StationaryOptions
    from sgdtemp.train.stationarity import StationarityRule

    r.unknown(table, _STOP_KEYS, "stop.")
    values = {k: r.check(v, _STOP_KEYS[k], f"stop.{k}") for k, v in table.items()}
    if values.pop("rule", "epochs") == "epochs":
        if values:
            raise r.error("stop.rule", 'the other [stop] keys need rule = "stationary"')
        return None
    if "max_sde_time" not in values:
        raise r.error("stop.max_sde_time", "missing; the stationary rule needs a budget")
    rule = {k: values.pop(k) for k in _RULE_KEYS if k in values}
    try:
        return StationaryOptions(**values, rule=StationarityRule(**rule))
    except UserError as err:
        raise r.error("stop", str(err)) from err


def parse_spec(text: str, *, source: str = "<spec>", default_name: str = "sweep") -> SweepSpec:
    r"""Parse and validate a sweep spec from TOML text.

    Args:
        text: the TOML text.
        source: how errors name the file.
        default_name: the sweep name when the spec has no ``name``.

    Returns:
        The spec, with its grid expanded.

    Raises:
        UserError: for a TOML syntax error or an invalid, missing or unknown key; the message
            reads ``FILE:LINE: KEY: what is wrong``.

    Example:
        >>> spec = parse_spec('''
        ... dataset = "digits"
        ... model = "mlp"
        ... seeds = [0, 1]
        ... [grid]
        ... temperatures = [0.001]
        ... batch_sizes = [16, 32]
        ... ''')
        >>> [(c.lr, c.batch_size, c.seed) for c in spec.grid]
        [(0.016, 16, 0), (0.016, 16, 1), (0.032, 32, 0), (0.032, 32, 1)]
        >>> parse_spec('dataset = "d"\nmodel = "m"\n[grid]\nlrs = [0.1]\nbatch_size = [8]')
        ... # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sgdtemp.errors.UserError: <spec>:5: grid.batch_size: unknown key; did you mean 'batch_s...'?
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{source}: not valid TOML: {err}") from err
    r = TomlReader(source, text)
    r.unknown(raw, _TOP, "")
    name = r.value(raw, "name", "str", default=default_name)
    dataset = r.value(raw, "dataset", "str", required=True)
    model = r.value(raw, "model", "str", required=True)
    epochs = r.value(raw, "epochs", "int>0", default=1)
    seeds = r.value(raw, "seeds", "list:int>=0", default=[0])
    momentum = float(r.value(raw, "momentum", "momentum", default=0.0))
    weight_decay = float(r.value(raw, "weight_decay", "num>=0", default=0.0))
    device = r.value(raw, "device", "str", default="cpu")
    try:  # a device this machine lacks fails now, not in every run
        require_device(device, option="device")
    except UserError as err:
        raise r.error("device", str(err).removeprefix(f"device {device}: ")) from err
    replacement = r.value(raw, "replacement", "bool", default=False)
    bound = r.value(raw, "divergence_bound", "num>0")
    checkpoints = r.value(raw, "checkpoints", "bool", default=False)
    eval_sets = r.value(raw, "eval", "list:str", default=["heldout", "test"])
    eval_sets = _check_eval_sets(r, eval_sets)

    data_table = r.value(raw, "data", "table", default={})
    r.unknown(data_table, ("root", "heldout", "train_subset", "test_subset", "seed"), "data.")
    data = DataOptions(
        root=r.value(data_table, "root", "str", "data."),
        heldout=r.value(data_table, "heldout", "count|fraction", "data."),
        train_subset=r.value(data_table, "train_subset", "int>0", "data."),
        seed=r.value(data_table, "seed", "int>=0", "data.", default=0),
        test_subset=r.value(data_table, "test_subset", "int>0", "data."),
    )
    model_args = dict(r.value(raw, "model_args", "table", default={}))

    if "grid" not in raw:
        raise r.error("grid", "missing; give [grid] with temperatures or lrs, and batch_sizes")
    grid_table = r.check(raw["grid"], "table", "grid")
    r.unknown(grid_table, ("temperatures", "lrs", "batch_sizes"), "grid.")
    batch_sizes = r.value(grid_table, "batch_sizes", "list:int>0", "grid.", required=True)
    has_t, has_lr = "temperatures" in grid_table, "lrs" in grid_table
    if has_t == has_lr:
        raise r.error(
            "grid", "give exactly one of temperatures (iso-temperature lines) or lrs (explicit)"
        )
    options = dict(epochs=epochs, seeds=seeds, momentum=momentum, weight_decay=weight_decay)
    if has_t:
        temps = r.value(grid_table, "temperatures", "list:num>0", "grid.")
        grid = iso_temperature_grid(temps, batch_sizes, **options)
    else:
        lrs = r.value(grid_table, "lrs", "list:num>0", "grid.")
        grid = product_grid([float(x) for x in lrs], batch_sizes, **options)

    stab = r.value(raw, "stability", "table", default={})
    r.unknown(stab, ("sharpness", "action"), "stability.")
    action = r.value(stab, "action", "str", "stability.", default="mark")
    if action not in STABILITY_ACTIONS:
        raise r.error("stability.action", f"must be one of {', '.join(STABILITY_ACTIONS)}")
    sharpness = r.value(stab, "sharpness", "num>0", "stability.")
    stability = Stability(None if sharpness is None else float(sharpness), action)

    measurements = _measurements(r, r.value(raw, "measure", "table", default={}), eval_sets)
    stop = _stop(r, r.value(raw, "stop", "table", default={}))
    if measurements.mechanisms is not None:
        if stop is None:
            raise r.error(
                "measure.mechanisms", 'needs [stop] rule = "stationary" (the window\'s iterates)'
            )
        if weight_decay <= 0:
            raise r.error("measure.mechanisms", "needs weight_decay > 0 (only then minima exist)")

    return SweepSpec(
        name=name,
        dataset=dataset,
        model=model,
        grid=tuple(grid),
        model_args=model_args,
        data=data,
        eval_sets=tuple(eval_sets),
        device=device,
        replacement=replacement,
        divergence_bound=None if bound is None else float(bound),
        checkpoints=checkpoints,
        stability=stability,
        measure=measurements,
        stop=stop,
        source=source,
        lines=r.lines,
    )


def _measurements(
    r: TomlReader, measure: Mapping[str, Any], eval_sets: Sequence[str]
) -> Measurements:
    r.unknown(measure, ("curvature", "shift", "mechanisms"), "measure.")
    curvature = _measurement(r, measure, "curvature", _CURVATURE_KEYS)
    shift = _measurement(r, measure, "shift", _SHIFT_KEYS)
    mechanisms = _measurement(r, measure, "mechanisms", _MECHANISMS_KEYS)
    for name, table in (("shift", shift), ("mechanisms", mechanisms)):
        if table is None:
            continue
        key = f"measure.{name}.eval_sets"
        if "eval_sets" in table:
            table["eval_sets"] = _check_eval_sets(r, table["eval_sets"], key=key)
        measured = table.get("eval_sets", [s for s in eval_sets if s != "train"])
        if "train" in measured:
            raise r.error(key, "train is where the shift starts from; list other sets")
        if not measured:
            raise r.error(key, "missing; the sweep's eval sets hold none but train, list some here")
    return Measurements(curvature=curvature, shift=shift, mechanisms=mechanisms)


def check_measurements(measure: Measurements, eval_sets: Sequence[str]) -> Measurements:
    """Validate measurements built in Python as a spec's ``[measure]`` table would be.

    Args:
        measure: the measurements.
        eval_sets: the sweep's evaluation sets (the default of ``shift.eval_sets``).

    Returns:
        The measurements, eval-set names canonical.

    Raises:
        UserError: naming the bad key, e.g. ``<measure>: measure.shift.max_iter: unknown key``.

    Example:
        >>> check_measurements(Measurements(shift={"max_iters": 3}), ["test"]).shift
        {'max_iters': 3}
    """
    r = TomlReader("<measure>", "")
    return _measurements(r, {**measure.as_dict()}, eval_sets)


def _measurement(
    r: TomlReader, measure: Mapping[str, Any], name: str, keys: Mapping[str, str]
) -> dict[str, Any] | None:
    if name not in measure:
        return None
    prefix = f"measure.{name}."
    value = measure[name]
    if value is True:
        return {}
    table = r.check(value, "table", f"measure.{name}")
    r.unknown(table, keys, prefix)
    return {k: r.check(v, keys[k], prefix + k) for k, v in table.items()}


def _check_eval_sets(r: TomlReader, specs: list[str], *, key: str = "eval") -> list[str]:
    try:
        from sgdtemp.data import parse_eval_sets
    except ImportError:  # pragma: no cover - the data layer ships with the package
        return specs
    try:
        return parse_eval_sets(",".join(specs))
    except UserError as err:
        raise r.error(key, str(err)) from err


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec file (see :func:`parse_spec`).

    Raises:
        UserError: if the file is missing or unreadable, or the spec is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise UserError(f"{path}: no such sweep spec") from err
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the sweep spec ({err})") from err
    return parse_spec(text, source=str(path), default_name=path.stem)
