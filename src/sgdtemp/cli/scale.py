"""``sgdtemp scale``: the learning rate that keeps the temperature when the batch size changes."""

from __future__ import annotations

import argparse
from typing import Any

from sgdtemp.cli._common import emit_json
from sgdtemp.errors import UserError
from sgdtemp.theory.scaling import scale_learning_rate


def register(subparsers: Any) -> None:
    """Add ``scale`` to the CLI."""
    parser = subparsers.add_parser(
        "scale",
        help="learning rate for a new batch size at the same temperature, with a stability check",
        description="Scale the learning rate with the batch size so that the temperature "
        "lr / (B (1 - momentum)) stays the same, check stability lr * lambda_max < 2 against the "
        "sharpness (given, or measured from a checkpoint) and warn where the SDE picture is known "
        "to break.",
    )
    parser.add_argument("--lr", type=float, required=True, help="current learning rate")
    parser.add_argument("--batch-size", type=int, required=True, help="current batch size")
    parser.add_argument("--to-batch-size", type=int, required=True, help="new batch size")
    parser.add_argument("--momentum", type=float, default=0.0, help="heavy-ball momentum")
    parser.add_argument("--sharpness", type=float, help="largest Hessian eigenvalue lambda_max")
    parser.add_argument("--n-train", type=int, help="training-set size (finite-data check)")
    parser.add_argument("--checkpoint", help="measure lambda_max from this checkpoint")
    parser.add_argument("--dataset", help="data set of --checkpoint (default: its own)")
    parser.add_argument("--data-root", help="folder of the data set, where it needs one")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run)


def _measure_sharpness(args: argparse.Namespace) -> tuple[float, int]:
    """lambda_max of the checkpoint's train loss, and its training-set size."""
    from sgdtemp.experiments.measure import measure_sharpness

    return measure_sharpness(args.checkpoint, dataset=args.dataset, data_root=args.data_root)


def run(args: argparse.Namespace) -> int:
    """Print the advice; exit code 0 even when unstable (the verdict is in the output)."""
    sharpness, n_train = args.sharpness, args.n_train
    if args.checkpoint is not None:
        if args.sharpness is not None:
            raise UserError("give either --sharpness or --checkpoint, not both")
        sharpness, measured_n = _measure_sharpness(args)
        n_train = n_train or measured_n
    elif args.dataset is not None:
        raise UserError("--dataset needs --checkpoint (it names the data of the checkpoint)")
    advice = scale_learning_rate(
        args.lr,
        args.batch_size,
        args.to_batch_size,
        momentum=args.momentum,
        sharpness=sharpness,
        n_train=n_train,
    )
    out = {
        "lr": advice.lr,
        "batch_size": advice.batch_size,
        "momentum": advice.momentum,
        "temperature": advice.temperature,
        "sharpness": sharpness,
        "lr_sharpness": advice.lr_sharpness,
        "stable": advice.stable,
        "noise_factor_change": advice.noise_factor_change,
        "warnings": list(advice.warnings),
    }
    if args.json:
        emit_json(out)
        return 0
    print(
        f"lr {advice.lr:.6g} at batch size {advice.batch_size} keeps T = {advice.temperature:.6g}"
        + (f" (momentum {advice.momentum:g})" if advice.momentum else "")
    )
    if advice.lr_sharpness is not None:
        verdict = "stable" if advice.stable else "UNSTABLE"
        print(
            f"lr * lambda_max = {advice.lr_sharpness:.3g} ({verdict}; lambda_max = {sharpness:.4g})"
        )
    else:
        print("stability unknown: pass --sharpness or --checkpoint to check lr * lambda_max < 2")
    for warning in advice.warnings:
        print(f"warning: {warning}")
    return 0
