"""``sgdtemp two-minima``: the synthetic SGD vs SDE vs Fokker–Planck study."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import numpy as np

from sgdtemp.cli._common import (
    add_output_args,
    emit_json,
    ensure_out_dir,
    progress_enabled,
)
from sgdtemp.errors import UserError
from sgdtemp.files import atomic_write, write_json

OUTPUTS = ("summary.json", "data.npz")


def register(subparsers: Any) -> None:
    """Add ``two-minima`` to the CLI."""
    parser = subparsers.add_parser(
        "two-minima",
        help="synthetic two-minima study: SGD vs SDE vs Fokker-Planck, basin probabilities vs T",
        description="Run the synthetic two-minima study for the isotropic (tilt) and translation "
        "noise models: wide-basin probability from SGD, the SDE and the exact Fokker-Planck law "
        "over a temperature grid (each T reached by two (lr, B) pairs), equilibration flags, and "
        "the test-loss decomposition under sampling and domain shift. Writes summary.json, "
        "data.npz and figures to --out.",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML file overriding defaults")
    parser.add_argument(
        "--quick", action="store_true", help="reduced chains/steps (about a minute on 2 cores)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace results already in --out (by default they are kept and the command stops)",
    )
    add_output_args(parser, out_required=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Validate everything, run the study, then write its results atomically."""
    from sgdtemp.experiments.two_minima import TwoMinimaConfig, load_config, run_two_minima
    from sgdtemp.plotting.two_minima import plot_two_minima

    if args.config is not None:
        config = load_config(args.config, quick=args.quick)
    else:
        config = TwoMinimaConfig.quick() if args.quick else TwoMinimaConfig()
    out: Path = args.out
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not args.overwrite:
        raise UserError(
            f"--out {out} already holds {existing[0]} from an earlier run; choose another folder "
            "or pass --overwrite"
        )
    out = ensure_out_dir(out)
    n_cells = sum(2 * len(nm.temperatures) for nm in config.noise_models.values())
    bar = None
    if progress_enabled(args.json):
        from tqdm import tqdm

        bar = tqdm(total=n_cells, desc="two-minima", unit="cell")

    def progress(label: str) -> None:
        if bar is not None:
            bar.set_postfix_str(label)
            bar.update(1)

    try:
        result = run_two_minima(config, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    summary = dict(result.summary)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **result.arrays)  # type: ignore[arg-type]
    atomic_write(out / "data.npz", buffer.getvalue())
    figures = plot_two_minima(summary, result.arrays, out)
    summary["files"] = {
        "summary": str(out / "summary.json"),
        "data": str(out / "data.npz"),
        "figures": [str(p) for p in figures],
    }
    write_json(out / "summary.json", summary)
    if args.json:
        emit_json(summary)
    else:
        _print_table(summary)
        print(f"\nwrote {out / 'summary.json'}, {out / 'data.npz'} and {len(figures)} figures")
    return 0


def _print_table(summary: dict[str, Any]) -> None:
    head = f"{'noise':<12}{'T':>8}{'B':>5}{'lr':>8}{'lr*λ':>7}{'SGD':>7}{'SDE':>7}{'FP':>7}"
    head += f"{'Gibbs':>7}{'eq':>4}{'test(s)':>9}{'test(d)':>9}"
    print(head)
    for c in summary["cells"]:
        print(
            f"{c['noise']:<12}{c['T']:>8.4g}{c['batch_size']:>5}{c['lr']:>8.3g}"
            f"{c['lr_sharpness']:>7.3f}{c['p_wide_sgd']:>7.3f}{c['p_wide_sde']:>7.3f}"
            f"{c['p_wide_fp']:>7.3f}{c['p_wide_gibbs']:>7.3f}{'y' if c['equilibrated'] else 'n':>4}"
            f"{c['test_loss']['sampling']:>9.4f}{c['test_loss']['domain']:>9.4f}"
        )
    print()
    for check in summary["checks"]:
        verdict = {True: "holds", False: "FAILS", None: "n/a"}[check["holds"]]
        print(f"[{verdict:>5}] {check['claim']}: {check['detail']}")
