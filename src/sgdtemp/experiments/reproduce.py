r"""The paper end to end: the synthetic studies, a real-model sweep with measurements, the report.

:func:`reproduce` runs, into one folder,

1. ``two_minima/``: the synthetic two-minima study (:mod:`sgdtemp.experiments.two_minima`);
2. ``stationary/``: the stationary-law checks (:func:`stationary_checks`): the 2-D
   Fokker–Planck law against the Gibbs law and the Laplace crossover, the effective potential
   under data noise, the local Gaussian of the 1-D law, and SGD against the discrete Lyapunov
   law on a quadratic;
3. ``runs.db``: the profile's η × B sweep (iso-T lines × batch sizes × seeds) with the Hessian
   trace and λ_max of every trained model, through the sweep engine's local executor; then the
   train → eval-set shift of the trained models (:func:`sgdtemp.shift.measure_shift`) as a
   second sweep ``NAME:shift`` on the same store;
4. ``report.html`` and ``analysis.json``: the report (:mod:`sgdtemp.report`).

It is resumable: the sweep skips finished runs, and a study whose ``summary.json`` was written
with the same configuration is reused, not rerun. Profiles (:data:`PROFILES`): ``smoke`` (digits,
a minute), ``quick`` (Fashion-MNIST, about 15 minutes on 2 CPU cores), ``full`` (CIFAR-10 from
``data_root``, a GPU when present). Their sweep specs are package data in
``sgdtemp/experiments/profiles/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.experiments.spec import SweepSpec, load_spec, parse_spec
from sgdtemp.experiments.stationary_checks import StationaryConfig, stationary_checks
from sgdtemp.files import json_safe, write_json

__all__ = [
    "Profile",
    "ShiftOptions",
    "ShiftTask",
    "shift_jobs",
    "StationaryConfig",
    "ReproduceResult",
    "PROFILES",
    "profile_spec",
    "reproduce",
    "stationary_checks",
    "OUTPUTS",
]

#: What :func:`reproduce` writes into its folder.
OUTPUTS = ("two_minima", "stationary", "runs.db", "report.html", "analysis.json")


@dataclass(frozen=True)
class ShiftOptions:
    """The train → test shift measured on the trained models (:func:`sgdtemp.shift.measure_shift`).

    Attributes:
        eval_sets: evaluation sets to measure (default: the sweep's).
        seeds: measure the runs of these seeds only (None: every seed).
        examples: training and evaluation images the objectives average over.
        max_iters: Newton–CG iterations of the descent to the eval-set minimum.
        max_cg_iters: CG iterations per Newton step.
        batch_size: images per Hessian-vector-product batch.
    """

    eval_sets: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None
    examples: int = 1000
    max_iters: int = 10
    max_cg_iters: int = 20
    batch_size: int = 500

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON values."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclass(frozen=True)
class Profile:
    """A scale of the reproduction.

    Attributes:
        name: the profile name.
        spec: the sweep spec: a file name in ``sgdtemp/experiments/profiles/``, or a path.
        two_minima: ``"smoke"`` (a tiny study), ``"quick"`` or ``"full"``
            (:meth:`TwoMinimaConfig.quick` or the defaults),
            a :class:`~sgdtemp.experiments.two_minima.TwoMinimaConfig`, or None to skip it.
        stationary: the stationary-law checks.
        shift: the shift measurement as a second sweep (None: not measured; profiles that train
            until stationary measure the mechanisms inside their sweep instead).
        description: one line for ``--help``.
        needs_data_root: the data must come from ``data_root`` (CIFAR-10).
        companions: further sweep specs run into the same store after ``spec`` (another
            model, another weight decay), each with a report of its own.
    """

    name: str
    spec: str | Path
    two_minima: Any
    stationary: StationaryConfig = field(default_factory=StationaryConfig)
    shift: ShiftOptions | None = None
    description: str = ""
    needs_data_root: bool = False
    companions: tuple[str | Path, ...] = ()


#: The profiles of ``sgdtemp reproduce``.
PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        "smoke.toml",
        "smoke",
        StationaryConfig(
            temperatures=(0.1, 0.2, 0.4, 0.8),
            grid=64,
            sgd_chains=512,
            sgd_steps=800,
            witness=((0.5, 4.0),),
            witness_chains=2000,
        ),
        None,
        "digits, 8 tiny runs until stationary: checks the pipeline in about a minute",
    ),
    "quick": Profile(
        "quick",
        "quick.toml",
        "quick",
        StationaryConfig(),
        None,
        "Fashion-MNIST MLP trained until stationary, 36 runs: about 5 minutes on 2 CPU cores",
    ),
    "standard": Profile(
        "standard",
        "standard.toml",
        "full",
        StationaryConfig(),
        None,
        "Fashion-MNIST MLP at two weight decays and the reference CNN, until stationary, "
        "108 runs: about 40 minutes on 2 CPU cores",
        companions=("standard_wd.toml", "standard_cnn.toml"),
    ),
    "full": Profile(
        "full",
        "full.toml",
        "full",
        StationaryConfig(grid=120, sgd_chains=2048, sgd_steps=2000),
        None,
        "CIFAR-10 GroupNorm ResNet from --data-root with weight decay, until stationary, "
        "60 runs (GPU when present)",
        needs_data_root=True,
    ),
}


@dataclass(frozen=True)
class ReproduceResult:
    """What :func:`reproduce` did.

    Attributes:
        out: the output folder.
        db: the results store.
        report: the report page.
        claims: the claim table of the report.
        sweep: the sweep summary of this invocation (counts, skipped runs).
        sweeps: the summary of every sweep of the profile, by name (the main one first).
        shift: the summary of the shift measurements (None when not measured).
        reused: the studies reused from an earlier invocation.
        seconds: wall time per stage.
    """

    out: Path
    db: Path
    report: Path
    claims: tuple[Any, ...]
    sweep: Any
    shift: Any
    reused: tuple[str, ...]
    seconds: Mapping[str, float]
    sweeps: Mapping[str, Any] = field(default_factory=dict)


def profile_spec(
    profile: Profile,
    *,
    data_root: str | None = None,
    device: str | None = None,
    which: str | Path | None = None,
) -> SweepSpec:
    """The profile's sweep spec (or one of its companions), data root and device filled in.

    Raises:
        UserError: if the profile needs a data root and none is given.
    """
    source = profile.spec if which is None else which
    if isinstance(source, Path):
        spec = load_spec(source)
    else:
        ref = resources.files("sgdtemp.experiments").joinpath("profiles", source)
        text = ref.read_text(encoding="utf-8")
        spec = parse_spec(text, source=f"profiles/{source}", default_name=profile.name)
    if profile.needs_data_root and not data_root:
        raise UserError(
            f"--profile {profile.name} needs --data-root: the folder with the CIFAR-10 python "
            "files (cifar-10-python.tar.gz or cifar-10-batches-py/)"
        )
    if data_root:
        spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, root=str(data_root)))
    if device:
        spec = dataclasses.replace(spec, device=device)
    return spec


# --------------------------------------------------------------------------- file helpers


def _reusable(folder: Path, config: Any) -> bool:
    """Whether ``folder/summary.json`` exists and was written with ``config``."""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("config") == json_safe(config)


# ------------------------------------------------------------------------------ studies


def _two_minima_config(choice: Any) -> Any:
    from sgdtemp.experiments.two_minima import TwoMinimaConfig

    if isinstance(choice, TwoMinimaConfig):
        return choice
    if choice == "smoke":  # a pipeline check: few chains, small data, two fast temperatures each
        quick = TwoMinimaConfig.quick()
        fast = {"isotropic": (0.02, 0.04), "translation": (0.06, 0.065)}
        models = {
            k: dataclasses.replace(v, temperatures=fast[k]) for k, v in quick.noise_models.items()
        }
        # Six predicted relaxation times per cell (the slowest, translation T=0.06 B=1, needs
        # about 5500 steps) instead of ten: every cell is simulated, in a few seconds.
        return dataclasses.replace(
            quick,
            n_chains=64,
            n_steps=6000,
            min_steps=400,
            relaxation_multiple=6.0,
            grid_points=601,
            n_train=1024,
            n_test=1024,
            noise_models=models,
        )
    if choice == "quick":
        return TwoMinimaConfig.quick()
    if choice == "full":
        return TwoMinimaConfig()
    raise UserError(
        f"two_minima must be 'smoke', 'quick', 'full', a TwoMinimaConfig or None, not {choice!r}"
    )


def _two_minima(config: Any, folder: Path) -> bool:
    """Run (or reuse) the two-minima study into ``folder``; True when reused."""
    from sgdtemp.experiments.two_minima import run_two_minima, write_two_minima

    if _reusable(folder, dataclasses.asdict(config)):
        return True
    folder.mkdir(parents=True, exist_ok=True)
    write_two_minima(run_two_minima(config), folder)
    return False


def _stationary(profile: Profile, folder: Path) -> bool:
    """Run (or reuse) the stationary-law checks into ``folder``; True when reused."""
    if _reusable(folder, profile.stationary.to_dict()):
        return True
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "summary.json", stationary_checks(profile.stationary))
    return False


# --------------------------------------------------------------------------------- shift

_SPLITS: dict[Any, Any] = {}


def _splits(source: Any) -> Any:
    """The data splits of a source, loaded once per process (one kept)."""
    if source not in _SPLITS:
        _SPLITS.clear()
        _SPLITS[source] = source()
    return _SPLITS[source]


@dataclass(frozen=True)
class ShiftTask:
    """Measure the train → eval-set shift of one trained run (a sweep task; runs in a worker).

    Attributes:
        of: the training run's key.
        checkpoint: its saved weights.
        source: the data (:class:`sgdtemp.experiments.sources.DatasetSource`).
        eval_sets: where to measure.
        eval_seed: seed of the corruptions.
        weight_decay: the training weight decay (the shift objective uses the same).
        options: sizes of the measurement.
    """

    of: str
    checkpoint: str
    source: Any
    eval_sets: tuple[str, ...]
    eval_seed: int
    weight_decay: float
    options: ShiftOptions

    def __call__(self) -> Any:
        """Load the weights and data, measure every eval set, return the outcome."""
        from sgdtemp.data import eval_set
        from sgdtemp.experiments.engine import Outcome
        from sgdtemp.experiments.measure import measure_shifts
        from sgdtemp.shift import ShiftOptions
        from sgdtemp.train import load_checkpoint

        model = load_checkpoint(self.checkpoint).model
        param = next(model.parameters())
        splits = _splits(self.source)
        n = self.options.examples
        out = measure_shifts(
            model,
            splits.train,
            ((name, eval_set(splits, name, seed=self.eval_seed)) for name in self.eval_sets),
            examples=n,
            seed=0,
            options=ShiftOptions(
                weight_decay=self.weight_decay,
                max_iters=self.options.max_iters,
                max_cg_iters=self.options.max_cg_iters,
                batch_size=self.options.batch_size,
            ),
        )
        return Outcome("ok", {"of": self.of, "shift": out, "examples": n}, device=str(param.device))


def shift_jobs(spec: SweepSpec, db: Path, options: ShiftOptions) -> list[Any]:
    """One shift job per finished training run of the spec's sweep that saved its weights.

    Runs that diverged, failed or have no checkpoint get no job; ``options.seeds`` narrows the
    runs further. Jobs are keyed by the training run's key and the options, so a rerun skips
    finished measurements.
    """
    from sgdtemp.experiments.engine import Job
    from sgdtemp.experiments.sources import DatasetSource
    from sgdtemp.storage import NewRun, Store, run_key

    eval_sets = tuple(options.eval_sets or [s for s in spec.eval_sets if s != "train"])
    source = DatasetSource(spec.dataset, spec.data)
    jobs = []
    with Store(db) as store:
        records = store.runs(sweep=spec.name)
    for r in records:
        metrics = r.metrics or {}
        train_ok = r.status == "ok" or (
            r.status == "unstable" and metrics.get("train_status") == "ok"
        )
        checkpoint = metrics.get("checkpoint")
        if not train_ok or not isinstance(checkpoint, str) or not Path(checkpoint).is_file():
            continue
        if options.seeds is not None and r.seed not in options.seeds:
            continue
        config = {"shift_of": r.key, "eval_sets": list(eval_sets), **options.to_dict()}
        task = ShiftTask(
            of=r.key,
            checkpoint=checkpoint,
            source=source,
            eval_sets=eval_sets,
            eval_seed=spec.data.seed,
            weight_decay=float(r.config.get("weight_decay", 0.0)),
            options=options,
        )
        new = NewRun(run_key(config), config, dataset=r.dataset, model=r.model, seed=r.seed)
        jobs.append(Job(new, task))
    return jobs


# ------------------------------------------------------------------------------ pipeline


def reproduce(
    profile: Profile | str,
    out: str | os.PathLike[str],
    *,
    workers: int | None = None,
    data_root: str | None = None,
    device: str | None = None,
    stage: Callable[[str], None] | None = None,
    progress: Callable[[Any], None] | None = None,
    fuse: int | str | None = None,
) -> ReproduceResult:
    """Run the paper's experiments at a profile's scale, then write the report.

    Args:
        profile: a :class:`Profile` or the name of one in :data:`PROFILES`.
        out: the output folder (created; an earlier invocation's results are resumed).
        workers: parallel training runs (local process pool; default: the CPU count).
        data_root: where the data set's files are (required by ``full``).
        device: overrides the spec's training device (``cpu``, ``cuda``, ``auto``).
        stage: called with a short label when a stage starts.
        progress: the sweep's progress callback (:class:`sgdtemp.experiments.engine.SweepProgress`).
        fuse: runs of one batch size trained together
            (:func:`sgdtemp.experiments.sweep.fuse_size`: None the rule, K, or ``"off"``).

    Returns:
        The :class:`ReproduceResult`.

    Raises:
        UserError: for an unknown profile, a missing data root or data set, or an output path
            that is not a folder, before any work starts.
    """
    from sgdtemp.executors import make_executor
    from sgdtemp.experiments.sweep import (
        TRAIN_PRELOAD,
        execute,
        fuse_size,
        prepare_spec,
        worker_count,
    )
    from sgdtemp.report import build_report

    if isinstance(profile, str):
        if profile not in PROFILES:
            raise UserError(f"--profile {profile!r}: unknown; choose one of {', '.join(PROFILES)}")
        profile = PROFILES[profile]
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise UserError(f"--workers must be a positive integer, got {workers!r}")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} exists and is not a folder; choose another path")
    specs = [
        profile_spec(profile, data_root=data_root, device=device, which=which)
        for which in (profile.spec, *profile.companions)
    ]
    spec = specs[0]
    tm_config = None if profile.two_minima is None else _two_minima_config(profile.two_minima)
    db = folder / "runs.db"
    artifacts = db.parent / f"{db.stem}.artifacts"
    all_jobs = [prepare_spec(s, artifacts=artifacts) for s in specs]  # checks every data set
    fuses = [fuse_size(j, workers=worker_count("local", workers), fuse=fuse) for j in all_jobs]
    folder.mkdir(parents=True, exist_ok=True)

    def say(label: str) -> None:
        if stage is not None:
            stage(label)

    seconds: dict[str, float] = {}
    reused: list[str] = []
    with contextlib.ExitStack() as stack:
        # one pool for the sweep and the shift; its workers import torch while the studies run
        pool = stack.enter_context(
            make_executor("local", workers=workers, preload=(*TRAIN_PRELOAD, "sgdtemp.shift"))
        )
        if tm_config is not None:
            start = time.perf_counter()
            say("two-minima study")
            if _two_minima(tm_config, folder / "two_minima"):
                reused.append("two-minima study")
            seconds["two_minima"] = time.perf_counter() - start

        start = time.perf_counter()
        say("stationary-law checks")
        if _stationary(profile, folder / "stationary"):
            reused.append("stationary-law checks")
        seconds["stationary"] = time.perf_counter() - start

        summaries = {}
        for one, jobs, fuse_k in zip(specs, all_jobs, fuses):
            start = time.perf_counter()
            say(f"sweep {one.name} ({len(jobs)} runs)")
            summaries[one.name] = execute(
                jobs,
                store=db,
                sweep=one.name,
                executor=pool,
                retry_failed=True,  # a rerun completes what an earlier invocation could not
                spec=one.to_dict(),
                progress=progress,
                fuse=fuse_k,
            )
            seconds["sweep" if one is spec else f"sweep {one.name}"] = time.perf_counter() - start
        summary = summaries[spec.name]

        shift_summary = None
        if profile.shift is not None:
            from sgdtemp.analysis import SHIFT_SUFFIX

            start = time.perf_counter()
            measure = shift_jobs(spec, db, profile.shift)
            say(f"shift ({len(measure)} runs)")
            if measure:
                shift_summary = execute(
                    measure,
                    store=db,
                    sweep=spec.name + SHIFT_SUFFIX,
                    executor=pool,
                    retry_failed=True,
                    spec={"shift_of": spec.name, **profile.shift.to_dict()},
                    progress=progress,
                )
            seconds["shift"] = time.perf_counter() - start

    start = time.perf_counter()
    say("report")
    meta = {"profile": profile.name, "profile description": profile.description}
    for other in specs[1:]:  # each companion sweep gets a report of its own, linked from meta
        companion = build_report(
            db, folder / "sweeps" / other.name, sweep=other.name, extra_meta=meta
        )
        meta[f"companion sweep {other.name}"] = str(companion.html.relative_to(folder))
    result = build_report(db, folder, sweep=spec.name, extra_meta=meta)
    seconds["report"] = time.perf_counter() - start
    return ReproduceResult(
        out=folder,
        db=db,
        report=result.html,
        claims=result.claims,
        sweep=summary,
        shift=shift_summary,
        sweeps=summaries,
        reused=tuple(reused),
        seconds=seconds,
    )
