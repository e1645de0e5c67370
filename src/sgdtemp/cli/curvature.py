r"""`sgdtemp curvature`: Hessian trace, top eigenvalues and gradient-noise trace of a checkpoint.

    sgdtemp curvature run/checkpoint.pt --dataset fashion-mnist [--split train] [--probes 16]
        [--top-k 5] [--max-examples 4096] [--json]

The data splits are rebuilt exactly as in training (held-out size, subset and data seed from the
checkpoint's config). ``lr_sharpness`` is the learning rate of the run times the measured
$\lambda_{\max}$; SGD on a quadratic is unstable when it reaches 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sgdtemp.cli._common import emit_json, progress_enabled
from sgdtemp.errors import UserError

__all__ = [
    "register",
    "LoadedRun",
    "load_run",
    "add_run_args",
    "add_json_arg",
    "subset",
    "pick_set",
]

DEFAULT_MAX_EXAMPLES = 4096


@dataclass(frozen=True)
class LoadedRun:
    """A checkpoint with the data it was trained on, ready for curvature measurements."""

    model: nn.Module
    config: dict[str, Any]
    dataset: str
    splits: Any
    device: torch.device
    dtype: torch.dtype


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``curvature`` and ``shift``: checkpoint, data and numerics."""
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint.pt written by sgdtemp train")
    parser.add_argument(
        "--dataset", required=True, help="dataset the checkpoint was trained on (checked)"
    )
    parser.add_argument("--data-root", default=None, help="folder of the dataset files")
    parser.add_argument(
        "--max-examples",
        type=int,
        default=DEFAULT_MAX_EXAMPLES,
        metavar="N",
        help=f"use the first N examples of each set (0: all; default {DEFAULT_MAX_EXAMPLES})",
    )
    parser.add_argument(
        "--batch-size", type=int, default=512, help="examples per evaluation batch (default 512)"
    )
    parser.add_argument(
        "--hvp-mode",
        choices=("auto", "double_backward", "forward_over_reverse"),
        default="auto",
        help="Hessian-vector-product formulation (auto: the fastest, measured)",
    )
    parser.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="computation dtype"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of probes and Lanczos starts")


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    """``--json``: print a machine-readable summary on stdout (these commands write no files)."""
    parser.add_argument(
        "--json", action="store_true", help="print a machine-readable summary on stdout"
    )


def load_run(args: argparse.Namespace) -> LoadedRun:
    """Load the checkpoint and its data splits, checking that they belong together.

    Raises:
        UserError: for a missing or foreign checkpoint, a dataset other than the checkpoint's,
            data whose image shape or class count does not fit the model, or bad options.
    """
    from sgdtemp.data import load_dataset
    from sgdtemp.data._datasets import canonical_name
    from sgdtemp.train import load_checkpoint, resolve_device

    if args.max_examples < 0:
        raise UserError(f"--max-examples must be >= 0, got {args.max_examples}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {args.seed}")
    device = resolve_device(args.device)
    dataset = canonical_name(args.dataset)
    try:
        ckpt = load_checkpoint(args.checkpoint, map_location=device)
    except UserError as err:  # torch's own reasons can span lines: keep the error to one
        raise UserError(" ".join(str(err).split())) from err
    config = ckpt.config
    trained_on = config.get("dataset")
    if trained_on is not None and canonical_name(str(trained_on)) != dataset:
        raise UserError(
            f"checkpoint {args.checkpoint} was trained on {trained_on}, not {args.dataset}; "
            f"pass --dataset {trained_on}"
        )
    root = args.data_root if args.data_root is not None else config.get("data_root")
    splits = load_dataset(
        dataset,
        root=root,
        heldout=config.get("heldout"),
        train_subset=config.get("train_subset"),
        seed=int(config.get("data_seed", 0) or 0),
    )
    shape = [int(s) for s in splits.train.x.shape[1:]]
    if shape != [int(s) for s in config["in_shape"]] or int(splits.train.n_classes) != int(
        config["n_classes"]
    ):
        raise UserError(
            f"checkpoint {args.checkpoint} expects images {config['in_shape']} with "
            f"{config['n_classes']} classes, but {args.dataset} has {shape} with "
            f"{splits.train.n_classes}; use the checkpoint's dataset"
        )
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    model = ckpt.model.to(device=device, dtype=dtype).eval()
    return LoadedRun(model, dict(config), dataset, splits, device, dtype)


def subset(data: Any, max_examples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``max_examples`` images and labels (all for 0)."""
    n = len(data.y) if max_examples == 0 else min(max_examples, len(data.y))
    return data.x[:n], data.y[:n]


def pick_set(run: LoadedRun, spec: str) -> Any:
    """The evaluation set ``spec`` of the run's splits (corruptions seeded as in training).

    Raises:
        UserError: for an unknown or empty set.
    """
    from sgdtemp.data import eval_set

    data = eval_set(run.splits, spec, seed=int(run.config.get("data_seed", 0) or 0))
    if len(data.y) == 0:
        raise UserError(f"evaluation set {spec} is empty for this checkpoint; choose another")
    return data


def _status(enabled: bool, text: str) -> None:
    if enabled:
        print(f"sgdtemp curvature: {text}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    from sgdtemp.curvature import (
        GradientCovarianceOperator,
        HessianOperator,
        hutchinson_trace,
        top_eigenvalues,
    )
    from sgdtemp.theory.temperature import temperature

    if args.probes < 1:
        raise UserError(f"--probes must be a positive integer, got {args.probes}")
    if args.top_k < 0:
        raise UserError(f"--top-k must be >= 0, got {args.top_k}")
    if not args.eig_tol > 0:
        raise UserError(f"--eig-tol must be positive, got {args.eig_tol}")
    start = time.perf_counter()
    run = load_run(args)
    data = pick_set(run, args.split)
    n_params = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    if args.top_k > n_params:
        raise UserError(
            f"--top-k {args.top_k} is larger than the number of parameters ({n_params})"
        )
    x, y = subset(data, args.max_examples)
    loss_fn = nn.CrossEntropyLoss()
    show = progress_enabled(args.json)
    gen = torch.Generator(device=run.device).manual_seed(args.seed)
    hessian = HessianOperator(
        run.model, loss_fn, (x, y), batch_size=args.batch_size, mode=args.hvp_mode
    )
    _status(show, f"Hutchinson trace with {args.probes} probes on {len(y)} examples")
    trace = hutchinson_trace(hessian, args.probes, generator=gen)
    eigenvalues: list[float] = []
    converged = None
    if args.top_k:
        _status(show, f"top {args.top_k} eigenvalues (Lanczos)")
        pairs = top_eigenvalues(hessian, args.top_k, tol=args.eig_tol, generator=gen)
        eigenvalues = [float(v) for v in pairs.values]
        converged = pairs.converged
    _status(show, "gradient-noise trace (per-example gradients)")
    noise = GradientCovarianceOperator(run.model, loss_fn, (x, y), batch_size=args.batch_size)
    noise_trace = noise.trace()
    lr = run.config.get("lr")
    lr_sharpness = float(lr) * eigenvalues[0] if (lr is not None and eigenvalues) else None
    temp = None
    if lr is not None and run.config.get("batch_size"):
        temp = temperature(
            float(lr), float(run.config["batch_size"]), float(run.config.get("momentum", 0.0))
        )
    summary = {
        "trace": {
            "value": trace.value,
            "stderr": trace.stderr,
            "matvecs": trace.num_matvecs,
        },
        "top_eigenvalues": eigenvalues,
        "noise_trace": noise_trace,
        "lr_sharpness": lr_sharpness,
        "stable": None if lr_sharpness is None else lr_sharpness < 2.0,
        "eigenvalues_converged": converged,
        "lr": lr,
        "temperature": temp,
        "checkpoint": str(args.checkpoint),
        "dataset": run.dataset,
        "split": args.split,
        "examples": int(len(y)),
        "parameters": n_params,
        "trace_method": "taylor" if hessian.model_loss.uses_taylor else "hvp",
        "hvp_strategy": hessian.strategy,
        "dtype": args.dtype,
        "seed": args.seed,
        "seconds": time.perf_counter() - start,
    }
    if args.json:
        emit_json(summary)
    else:
        print(f"{run.dataset} {args.split} ({len(y)} examples, {n_params} parameters)")
        print(f"  Hessian trace   {trace.value:.6g} +- {trace.stderr:.3g} ({args.probes} probes)")
        if eigenvalues:
            print("  top eigenvalues " + ", ".join(f"{v:.6g}" for v in eigenvalues))
        print(f"  noise trace     {noise_trace:.6g}")
        if lr_sharpness is not None:
            print(f"  lr * lambda_max {lr_sharpness:.4g}" + ("" if lr_sharpness < 2 else " (>= 2)"))
        print(f"  {summary['seconds']:.1f} s")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``curvature`` subcommand."""
    parser = subparsers.add_parser(
        "curvature",
        help="Hessian trace, top eigenvalues and gradient-noise trace of a checkpoint",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    add_run_args(parser)
    parser.add_argument(
        "--split",
        default="train",
        help="train, heldout, test or corrupt:NAME:SEVERITY (default train)",
    )
    parser.add_argument("--probes", type=int, default=16, help="Hutchinson probes (default 16)")
    parser.add_argument(
        "--top-k", type=int, default=5, help="top eigenvalues by Lanczos (0: skip; default 5)"
    )
    parser.add_argument(
        "--eig-tol",
        type=float,
        default=1e-3,
        help="relative residual tolerance of the Lanczos eigenpairs (default 1e-3)",
    )
    add_json_arg(parser)
    parser.set_defaults(handler=_run)
