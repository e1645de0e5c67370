"""``sgdtemp two-minima``: the synthetic SGD vs SDE vs Fokker–Planck study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sgdtemp.cli._common import (
    add_output_args,
    emit_json,
    ensure_out_dir,
    progress_enabled,
)
from sgdtemp.errors import UserError


def register(subparsers: Any) -> None:
    """Add ``two-minima`` to the CLI."""
    parser = subparsers.add_parser(
        "two-minima",
        help="synthetic two-minima study: SGD vs SDE vs Fokker-Planck, basin probabilities vs T",
        description="Run the synthetic two-minima study for the isotropic (tilt) and translation "
        "noise models: wide-basin probability from SGD, the SDE and the exact Fokker-Planck law "
        "over a temperature grid (each T reached by two (lr, B) pairs), equilibration flags, and "
        "the test-loss decomposition under sampling and domain shift. Each cell runs ten of its "
        "predicted relaxation times; cells that need more than the step budget are listed first "
        "and not simulated. SGD draws minibatches with replacement, the i.i.d. noise the "
        "Fokker-Planck law is derived for, and the checks judge it there; in the cells with "
        "lr*lambda_max <= 0.3 SGD reshuffled every epoch runs beside it and is shown (column "
        "'other'), not judged (config keys replacement, compare_sampling). Writes summary.json, "
        "data.npz and figures to --out.",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file overriding defaults")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer chains and a smaller step budget per cell (under 2 minutes on 2 cores)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results already in --out (by default they are kept and the command stops)",
    )
    add_output_args(parser, out_required=True)
    parser.set_defaults(handler=run)


def _check_resources(config: Any) -> None:
    """Refuse a study whose every simulated cell exceeds this machine, before any work.

    A cell runs at least ``min_steps`` steps and keeps at least ``min_steps / record_every``
    records (at most ``MAX_RECORDS``) of its SGD and SDE chains: a lower bound, so a study that
    fits is never refused.
    """
    from sgdtemp.experiments.two_minima.plan import MAX_RECORDS
    from sgdtemp.resources import (
        MAX_SIMULATED_STEPS,
        require_memory,
        require_steps,
        trajectory_bytes,
    )

    what = f"n_chains = {config.n_chains} with min_steps = {config.min_steps}"
    fix = "use fewer n_chains or min_steps"
    steps = min(config.min_steps, MAX_RECORDS * config.record_every)
    need = 2 * trajectory_bytes(config.n_chains, steps, config.record_every)
    require_memory(need, what=what, fix=fix)
    require_steps(config.n_chains * config.min_steps, what=what, fix=fix, limit=MAX_SIMULATED_STEPS)


def run(args: argparse.Namespace) -> int:
    """Validate everything, plan the cells, run them, then write the results atomically."""
    from sgdtemp.experiments.two_minima import (
        OUTPUTS,
        TwoMinimaConfig,
        load_config,
        plan_two_minima,
        run_two_minima,
        write_two_minima,
    )

    if args.config is not None:
        config = load_config(args.config, quick=args.quick)
    else:
        config = TwoMinimaConfig.quick() if args.quick else TwoMinimaConfig()
    _check_resources(config)
    out: Path = args.out
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not args.overwrite:
        raise UserError(
            f"--out {out} already holds {existing[0]} from an earlier run; choose another folder "
            "or pass --overwrite"
        )
    out = ensure_out_dir(out)
    plan = plan_two_minima(config)
    if not args.json:
        _print_plan(plan)
    bar = None
    if progress_enabled(args.json):
        from tqdm import tqdm

        bar = tqdm(total=len(plan.simulated), desc="two-minima", unit="cell")

    def progress(label: str) -> None:
        if bar is not None:
            bar.set_postfix_str(label)
            bar.update(1)

    try:
        result = run_two_minima(config, plan=plan, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    summary = write_two_minima(result, out)
    if args.json:
        emit_json(summary)
    else:
        _print_table(summary)
        n_figures = len(summary["files"]["figures"])
        print(f"\nwrote {out / 'summary.json'}, {out / 'data.npz'} and {n_figures} figures")
    return 0


def _print_plan(plan: Any) -> None:
    """The plan, before anything runs: which cells cannot equilibrate within the budget."""
    from sgdtemp.experiments.two_minima.sampling import sampling_label

    print(
        f"plan: {len(plan.simulated)} of {len(plan.cells)} cells simulated, each for "
        f"{plan.config.relaxation_multiple:g} predicted relaxation times (budget "
        f"{plan.config.n_steps} steps per cell); SGD minibatches "
        f"{sampling_label(plan.config.replacement)}"
    )
    for cell in plan.skipped:
        print(f"  not simulated: {cell.label()}: {cell.summary()['note']}")
    print()


def _num(value: float | None, fmt: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"


def _print_table(summary: dict[str, Any]) -> None:
    head = f"{'noise':<12}{'T':>7}{'B':>4}{'lr':>7}{'lr*λ':>6}{'relax':>9}{'steps':>8}"
    head += f"{'SGD':>7}{'±':>6}{'other':>7}{'±':>6}{'SDE':>7}{'FP':>7}{'Gibbs':>7}{'eq':>4}"
    print(summary["sampling"]["note"])
    comparison = summary["sampling_comparison"]
    print(f"other: SGD {comparison['shown_sampling']}, shown, not judged")
    print(head)
    for c in summary["cells"]:
        eq = c["equilibration"]
        sgd = c["sgd"] or {}
        other = (c["sampling_comparison"] or {}).get("sgd") or {}
        print(
            f"{c['noise']:<12}{c['T']:>7.4g}{c['batch_size']:>4}{c['lr']:>7.3g}"
            f"{c['lr_sharpness']:>6.2f}{_num(eq['predicted_relaxation_steps'], '.3g', 9)}"
            f"{eq['steps_run']:>8}{_num(c['p_wide_sgd'], '.3f', 7)}"
            f"{_num(sgd.get('stderr'), '.3f', 6)}{_num(other.get('p_wide'), '.3f', 7)}"
            f"{_num(other.get('stderr'), '.3f', 6)}{_num(c['p_wide_sde'], '.3f', 7)}"
            f"{c['p_wide_fp']:>7.3f}{c['p_wide_gibbs']:>7.3f}"
            f"{('y' if c['equilibrated'] else 'n') if c['simulated'] else '-':>4}"
        )
    print(f"\nsampling comparison: {comparison['statement']}\n")
    for check in summary["checks"]:
        verdict = {True: "holds", False: "FAILS", None: "n/a"}[check["holds"]]
        print(f"[{verdict:>5}] {check['claim']}: {check['detail']}")
