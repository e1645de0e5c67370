"""`sgdtemp shift`: the train->eval shift of a checkpoint's minimum and its decomposition.

    sgdtemp shift run/checkpoint.pt --dataset fashion-mnist --eval-set test [--json]

From the checkpoint's weights (the train minimum), descend on the evaluation set's objective to
the nearby minimum and report the shift, the measured gap, the shift-curvature and their ratio
(1 where the quadratic picture holds). With the run's weight decay > 0 both objectives carry it and
the eval minimum exists; without weight decay, cross-entropy may have no finite minimum and a
proximal shift with a reported mu is measured instead (see ``sgdtemp.shift``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from typing import Any

import torch
from torch import nn

from sgdtemp.cli._common import emit_json, progress_enabled
from sgdtemp.cli.curvature import add_json_arg, add_run_args, check_run_args, load_run
from sgdtemp.errors import UserError

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from sgdtemp.data import parse_eval_sets
    from sgdtemp.experiments.measure import head
    from sgdtemp.shift import OBJECTIVES, ShiftOptions, measure_shift

    check_run_args(args)
    eval_sets = parse_eval_sets(args.eval_set)
    if len(eval_sets) != 1 or eval_sets[0] == "train":
        raise UserError(
            f"--eval-set {args.eval_set}: give one set other than train (the shift starts from "
            "the train minimum): heldout, test or corrupt:NAME:SEVERITY"
        )
    if args.objective not in OBJECTIVES:
        raise UserError(f"--objective must be one of {', '.join(OBJECTIVES)}")
    if args.mu is not None and not (args.mu > 0 and math.isfinite(args.mu)):
        raise UserError(f"--mu must be a positive number, got {args.mu}")
    if args.max_iters < 1:
        raise UserError(f"--max-iters must be a positive integer, got {args.max_iters}")
    if args.max_cg_iters < 1:
        raise UserError(f"--max-cg-iters must be a positive integer, got {args.max_cg_iters}")
    if args.time_limit is not None and not args.time_limit > 0:
        raise UserError(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
    if args.top_k < 0:
        raise UserError(f"--top-k must be >= 0, got {args.top_k}")
    if args.weight_decay is not None and not args.weight_decay >= 0:
        raise UserError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    options = ShiftOptions(  # checks every option before any work
        weight_decay=0.0 if args.weight_decay is None else args.weight_decay,
        objective=args.objective,
        mu=args.mu,
        method=args.method,
        batch_size=args.batch_size,
        grad_tol=args.grad_tol,
        rel_grad_tol=args.rel_grad_tol,
        max_iters=args.max_iters,
        max_cg_iters=args.max_cg_iters,
        max_seconds=math.inf if args.time_limit is None else args.time_limit,
        top_k=args.top_k,
        hvp_mode=args.hvp_mode,
        smoothing=args.smoothing,
    )
    start = time.perf_counter()
    run = load_run(args)
    eval_data = run.eval_set(args.eval_set)
    n_params = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
    if args.top_k > n_params:
        raise UserError(
            f"--top-k {args.top_k} is larger than the number of parameters ({n_params})"
        )
    if args.weight_decay is None:  # the run's own
        wd = float(run.config.get("weight_decay", 0.0) or 0.0)
        options = dataclasses.replace(options, weight_decay=wd)
    train = head(run.splits.train, args.max_examples)
    evaluation = head(eval_data, args.max_examples)
    show = progress_enabled(args.json)
    if show:
        print(
            f"sgdtemp shift: descending on {args.eval_set} ({len(evaluation[1])} examples, "
            f"{n_params} parameters)",
            file=sys.stderr,
            flush=True,
        )

    def progress(iteration: int, value: float, grad_norm: float) -> None:
        print(
            f"sgdtemp shift: iteration {iteration}  objective {value:.6g}  |grad| {grad_norm:.3g}",
            file=sys.stderr,
            flush=True,
        )

    result = measure_shift(
        run.model,
        nn.CrossEntropyLoss(),
        train,
        evaluation,
        options,
        generator=torch.Generator(device=run.device).manual_seed(args.seed),
        callback=progress if show else None,
    )
    summary = {
        **result.summary(),
        "eval_set": args.eval_set,
        "dataset": run.dataset,
        "checkpoint": str(args.checkpoint),
        "train_examples": int(len(train[1])),
        "eval_examples": int(len(evaluation[1])),
        "parameters": n_params,
        "dtype": args.dtype,
        "seconds": time.perf_counter() - start,
    }
    if args.json:
        emit_json(summary)
    else:
        mu = f", mu {result.mu:.3g}" if result.objective == "proximal" else ""
        print(
            f"{run.dataset} train -> {args.eval_set}: {result.method}, objective "
            f"{result.objective} (weight decay {result.weight_decay:g}{mu})"
        )
        print(f"  |s|                 {result.shift_norm:.6g}")
        print(f"  measured gap        {result.measured_gap:.6g}")
        print(f"  shift-curvature     {result.shift_curvature:.6g}  (ratio {result.ratio:.4g})")
        print(f"  vertical shift      {result.vertical_shift:.6g}")
        print(f"  generalization gap  {result.generalization_gap:.6g}")
        state = "converged" if result.converged else f"NOT converged ({result.message})"
        print(f"  |grad| at eval min  {result.grad_norm_at_eval_min:.3g}  {state}")
        if result.smoothing_beta is not None:
            print(
                f"  descent             softplus continuation to beta={result.smoothing_beta:g} "
                f"(ReLU kinks; the network's own |grad| there {result.nonsmooth_grad_norm:.3g})"
            )
        print(f"  {summary['seconds']:.1f} s")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``shift`` subcommand."""
    parser = subparsers.add_parser(
        "shift",
        help="train->eval shift of a checkpoint's minimum: gap, shift-curvature, vertical shift",
        description=__doc__.splitlines()[0].split(": ", 1)[1],
    )
    add_run_args(parser)
    parser.add_argument(
        "--eval-set",
        required=True,
        help="heldout (sampling shift), test, or corrupt:NAME:SEVERITY (domain shift)",
    )
    parser.add_argument(
        "--objective",
        default="auto",
        help="auto (minimum with weight decay, else proximal), minimum or proximal",
    )
    parser.add_argument(
        "--mu",
        type=float,
        default=None,
        help="proximal weight (default: 1e-2 x lambda_max of the eval Hessian)",
    )
    parser.add_argument(
        "--weight-decay", type=float, default=None, help="L2 coefficient (default: the run's)"
    )
    parser.add_argument(
        "--method", choices=("newton_cg", "lbfgs"), default="newton_cg", help="descent method"
    )
    parser.add_argument("--max-iters", type=int, default=100, help="descent iterations")
    parser.add_argument(
        "--max-cg-iters", type=int, default=50, help="CG iterations per Newton step (default 50)"
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop the descent after this long and report the point reached (converged: false)",
    )
    parser.add_argument("--grad-tol", type=float, default=1e-6, help="absolute gradient tolerance")
    parser.add_argument(
        "--rel-grad-tol", type=float, default=1e-4, help="gradient tolerance relative to the start"
    )
    parser.add_argument(
        "--top-k", type=int, default=0, help="project s on this many top eigenvectors (0: skip)"
    )
    parser.add_argument(
        "--smoothing",
        choices=("auto", "off"),
        default="auto",
        help="auto: descend on ReLU / max-pool networks by softplus continuation (their loss has "
        "kinks where no gradient vanishes); off: on the network as it is",
    )
    add_json_arg(parser)
    parser.set_defaults(handler=_run)
