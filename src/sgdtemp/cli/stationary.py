"""``sgdtemp stationary``: the Fokker–Planck stationary law of a synthetic landscape.

Parses the flags, calls :func:`sgdtemp.experiments.stationary.run_stationary` (and
:func:`~sgdtemp.experiments.stationary.write_stationary` with ``--out``) and prints the basin
probabilities next to the Gibbs law in L, the diagnostics and the warnings.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import torch

from sgdtemp.cli._common import add_output_args, emit_json, ensure_out_dir
from sgdtemp.errors import UserError, require_positive
from sgdtemp.experiments.stationary import (
    LANDSCAPES,
    NOISES,
    StationaryRequest,
    run_stationary,
    write_stationary,
)


def register(subparsers: Any) -> None:
    """Add ``stationary`` to the CLI."""
    names = ", ".join(f"{k} ({v.help})" for k, v in LANDSCAPES.items())
    parser = subparsers.add_parser(
        "stationary",
        help="Fokker-Planck stationary law and basin probabilities of a synthetic landscape",
        description="Stationary law of dθ = -∇L dt + sqrt(T C(θ)) dW: 2-D on a grid with the full, "
        "state-dependent noise tensor, 1-D exactly. Prints basin probabilities next to the Gibbs "
        f"law in L, the mass error and the stationary current. Landscapes: {names}.",
    )
    parser.add_argument("--landscape", required=True, metavar="NAME", help="landscape name")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="landscape parameter (repeatable); double-well-2d: t, g, and for --noise data "
        "translation (spread of the data translations) and n (examples); two-minima: m1, m2, "
        "w1, w2, pi1, translation, n",
    )
    parser.add_argument(
        "--noise",
        choices=NOISES,
        default="isotropic",
        help="isotropic: C = sigma^2 I (the Gibbs law is exact); data: C(θ) from per-example "
        "gradients of data drawn with --seed (anisotropic, state dependent)",
    )
    parser.add_argument(
        "--sigma",
        type=float,
        default=None,
        metavar="S",
        help="noise scale: C = S^2 I, or the spread of the data tilts under --noise data "
        "(default 1 for double-well-2d, 8 for two-minima)",
    )
    parser.add_argument("--temperature", type=float, required=True, metavar="T", help="T = lr/B")
    parser.add_argument(
        "--grid",
        type=int,
        default=200,
        metavar="N",
        help="about N x N cells in 2-D, shaped to the law (1-D: 50 N points)",
    )
    parser.add_argument(
        "--domain",
        type=float,
        nargs=4,
        metavar=("XMIN", "XMAX", "YMIN", "YMAX"),
        help="2-D box (default: chosen from the minima and the temperature)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of SGD")
    parser.add_argument(
        "--sgd-chains",
        type=int,
        default=2000,
        metavar="K",
        help="SGD chains for the --out histogram",
    )
    parser.add_argument(
        "--sgd-steps", type=int, default=2000, metavar="N", help="SGD steps for the --out histogram"
    )
    add_output_args(parser)
    parser.set_defaults(handler=run)


def _parse_params(items: list[str]) -> dict[str, float]:
    """``K=V`` strings as a mapping (names and values are checked by the study)."""
    params: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise UserError(f"--param {item!r} is not of the form K=V")
        try:
            params[key] = float(value)
        except ValueError:
            raise UserError(f"--param {key}={value!r} is not a number") from None
        if not math.isfinite(params[key]):
            raise UserError(f"--param {key} must be finite, got {value}")
    return params


def _print_table(summary: dict[str, Any]) -> None:
    print(
        f"{summary['landscape']} ({summary['noise']} noise, sigma={summary['sigma']:g}) at "
        f"T={summary['temperature']:g}, grid {' x '.join(map(str, summary['grid']))}"
    )
    print(f"{'basin':>6} {'location':>24} {'loss':>10} {'P (FP)':>10} {'P (Gibbs)':>10}")
    for k, (b, gb) in enumerate(zip(summary["basins"], summary["gibbs_basins"])):
        loc = ", ".join(f"{v:.4g}" for v in b["location"])
        print(
            f"{k:>6} {('(' + loc + ')'):>24} {b['loss']:>10.4g} {b['probability']:>10.4g} "
            f"{gb['probability']:>10.4g}"
        )
    balance = "holds" if summary["detailed_balance"] else "FAILS"
    print(
        f"mass error {summary['mass_error']:.2g}, max current {summary['max_current']:.3g} "
        f"(relative {summary['current_ratio']:.2g}: detailed balance {balance}), "
        f"min p {summary['min_density']:.2g}"
    )
    if "limited_cells" in summary:
        print(
            f"cells with limited cross-diffusion: {summary['limited_cells']} "
            f"(mass {summary['limited_mass']:.2g}, passages per passage between basins "
            f"{summary['limited_flux_ratio']:.2g}); mass on the box edge "
            f"{summary['boundary_mass']:.2g}; change under projecting walls "
            f"{summary['wall_sensitivity']:.2g}: basin probabilities "
            f"{'trusted' if summary['trusted'] else 'NOT trusted'}"
        )


def run(args: argparse.Namespace) -> int:
    """Handle ``sgdtemp stationary``."""
    # Everything here is small-tensor work, where intra-op threads only add contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    require_positive("--sgd-chains", args.sgd_chains)
    require_positive("--sgd-steps", args.sgd_steps)
    request = StationaryRequest(
        landscape=args.landscape,
        temperature=args.temperature,
        params=_parse_params(args.param),
        noise=args.noise,
        sigma=args.sigma,
        grid=args.grid,
        domain=tuple(args.domain) if args.domain is not None else None,
        seed=args.seed,
        sgd_chains=args.sgd_chains if args.out is not None else 0,
        sgd_steps=args.sgd_steps,
    )
    out = ensure_out_dir(args.out) if args.out is not None else None
    study = run_stationary(request)
    for line in study.warnings:
        print(f"sgdtemp stationary: warning: {line}", file=sys.stderr)
    summary = study.summary
    if out is not None:
        if "skipped" in summary.get("sgd", {}):
            print(
                f"sgdtemp stationary: SGD histogram skipped: {summary['sgd']['skipped']}",
                file=sys.stderr,
            )
        summary = write_stationary(study, out)
    if args.json:
        emit_json(summary)
    else:
        _print_table(summary)
        if out is not None:
            print(f"wrote {out}")
    return 0
