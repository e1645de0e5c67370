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
from typing import Any

import torch

from sgdtemp.cli._common import emit_json, progress_enabled
from sgdtemp.errors import UserError

__all__ = ["register", "load_run", "add_run_args", "add_json_arg", "check_run_args"]

DEFAULT_MAX_EXAMPLES = 4096


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
        choices=("double_backward", "forward_over_reverse", "auto"),
        default="double_backward",
        help="Hessian-vector-product formulation (default double_backward, the same digits on "
        "every machine; auto: the fastest, measured on this machine)",
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


def check_run_args(args: argparse.Namespace) -> None:
    """Check the options of :func:`add_run_args` (before any other work).

    Raises:
        UserError: naming the first bad option.
    """
    if args.max_examples < 0:
        raise UserError(f"--max-examples must be >= 0, got {args.max_examples}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {args.seed}")


def load_run(args: argparse.Namespace) -> Any:
    """The checkpoint of ``args`` with its data (:func:`sgdtemp.experiments.measure.load_run`).

    Raises:
        UserError: for bad options, a missing or foreign checkpoint or a dataset other than
            the checkpoint's.
    """
    from sgdtemp.experiments.measure import load_run as load

    check_run_args(args)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    return load(
        args.checkpoint,
        dataset=args.dataset,
        data_root=args.data_root,
        device=args.device,
        dtype=dtype,
    )


def _status(enabled: bool, text: str) -> None:
    if enabled:
        print(f"sgdtemp curvature: {text}", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    from sgdtemp.experiments.measure import CurvatureOptions, measure_curvature
    from sgdtemp.theory.temperature import temperature

    check_run_args(args)
    if args.probes < 1:
        raise UserError(f"--probes must be a positive integer, got {args.probes}")
    if args.top_k < 0:
        raise UserError(f"--top-k must be >= 0, got {args.top_k}")
    if not args.eig_tol > 0:
        raise UserError(f"--eig-tol must be positive, got {args.eig_tol}")
    options = CurvatureOptions(
        examples=args.max_examples,
        probes=args.probes,
        top_k=args.top_k,
        eig_tol=args.eig_tol,
        batch_size=args.batch_size,
        noise_trace=True,
        hvp_mode=args.hvp_mode,
        seed=args.seed,
    )
    start = time.perf_counter()
    run = load_run(args)
    data = run.eval_set(args.split)
    n_params = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    if args.top_k > n_params:
        raise UserError(
            f"--top-k {args.top_k} is larger than the number of parameters ({n_params})"
        )
    _status(
        progress_enabled(args.json), f"curvature of {args.split} ({args.max_examples} examples)"
    )
    m = measure_curvature(run.model, data, options)
    lr, batch_size = run.config.get("lr"), run.config.get("batch_size")
    lr_sharpness = m.lr_sharpness(lr)
    temp = None
    if lr is not None and batch_size:
        temp = temperature(float(lr), float(batch_size), float(run.config.get("momentum", 0.0)))
    summary = {
        "trace": {"value": m.trace, "stderr": m.trace_stderr, "products": m.trace_products},
        "top_eigenvalues": list(m.top_eigenvalues),
        "noise_trace": m.noise_trace,
        "lr_sharpness": lr_sharpness,
        "stable": None if lr_sharpness is None else lr_sharpness < 2.0,
        "eigenvalues_converged": m.eigenvalues_converged,
        "lr": lr,
        "temperature": temp,
        "checkpoint": str(args.checkpoint),
        "dataset": run.dataset,
        "split": args.split,
        "examples": m.examples,
        "parameters": m.parameters,
        "trace_method": m.trace_method,
        "hvp_mode": m.hvp_mode,
        "dtype": args.dtype,
        "seed": args.seed,
        "seconds": time.perf_counter() - start,
    }
    if args.json:
        emit_json(summary)
    else:
        print(f"{run.dataset} {args.split} ({m.examples} examples, {m.parameters} parameters)")
        print(f"  Hessian trace   {m.trace:.6g} +- {m.trace_stderr:.3g} ({m.probes} probes)")
        if m.top_eigenvalues:
            print("  top eigenvalues " + ", ".join(f"{v:.6g}" for v in m.top_eigenvalues))
        print(f"  noise trace     {m.noise_trace:.6g}")
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
        default=1e-4,
        help="relative residual tolerance of the Lanczos eigenpairs (default 1e-4)",
    )
    add_json_arg(parser)
    parser.set_defaults(handler=_run)
