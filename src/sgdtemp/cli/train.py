"""`sgdtemp train`: train one model with clean SGD, save a checkpoint and a record.

Every input is checked (and the data loaded) before training starts; mistakes give one line and
exit code 2. Writes ``DIR/checkpoint.pt`` (:func:`sgdtemp.train.save_checkpoint`, with the full
data and training config) and ``DIR/record.json``; ``--json`` prints the record. ``--monitor``
runs the temperature monitor (:mod:`sgdtemp.monitor`) and writes ``DIR/monitor.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sgdtemp.cli._common import (
    add_output_args,
    check_out_dir,
    emit_json,
    ensure_out_dir,
    progress_enabled,
)
from sgdtemp.errors import UserError, require_positive
from sgdtemp.files import atomic_write, json_safe, json_text
from sgdtemp.resources import MAX_STEPS, require_steps

__all__ = ["register", "run"]

DEFAULT_EVAL_SETS = "heldout,test"


def _count_or_fraction(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count or a fraction in (0, 1), got {text!r}"
        ) from None


def register(subparsers: Any) -> None:
    """Add the ``train`` parser (imports no torch: ``sgdtemp --help`` stays fast)."""
    parser = subparsers.add_parser(
        "train",
        help="train a model with plain SGD at a constant learning rate",
        description="Train one model with clean SGD (constant lr, no BatchNorm by default) and "
        "write DIR/checkpoint.pt and DIR/record.json. Temperature T = lr / (B (1 - momentum)).",
    )
    parser.add_argument("--dataset", required=True, help="fashion-mnist, mnist, cifar10, digits")
    parser.add_argument("--model", required=True, help="mlp, cnn (the reference CNN), resnet")
    parser.add_argument("--lr", type=float, required=True, help="learning rate (constant)")
    parser.add_argument("--batch-size", type=int, required=True, help="minibatch size B")
    parser.add_argument(
        "--epochs", type=int, help="passes over the data (required unless --until stationary)"
    )
    parser.add_argument(
        "--until",
        choices=("epochs", "stationary"),
        default="epochs",
        help="stop after --epochs, or once the train objective is stationary (the stated rule "
        "of sgdtemp.train.stationarity), within --max-sde-time",
    )
    parser.add_argument(
        "--max-sde-time",
        type=float,
        metavar="T",
        help="with --until stationary: the budget in SDE time (steps x lr, whole epochs)",
    )
    parser.add_argument("--momentum", type=float, default=0.0, help="heavy-ball momentum")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="L2 coefficient")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the initial weights and the data order"
    )
    parser.add_argument(
        "--eval-sets",
        default=DEFAULT_EVAL_SETS,
        metavar="LIST",
        help="comma-separated: heldout, test, corrupt:NAME:SEVERITY (default: heldout,test)",
    )
    parser.add_argument("--train-subset", type=int, metavar="K", help="use K training images")
    parser.add_argument(
        "--heldout",
        type=_count_or_fraction,
        metavar="K",
        help="training images held out (count or fraction; default: the dataset's)",
    )
    parser.add_argument(
        "--data-seed", type=int, default=0, help="seed of the held-out split and corruptions"
    )
    parser.add_argument("--data-root", type=Path, metavar="PATH", help="where the data files are")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument("--width", type=int, help="model width (hidden units or channels)")
    parser.add_argument(
        "--norm",
        choices=("none", "group", "batch"),
        help="normalisation layers; 'batch' confounds the temperature (default: the model's)",
    )
    parser.add_argument(
        "--replacement", action="store_true", help="draw minibatches with replacement"
    )
    parser.add_argument(
        "--divergence-bound",
        type=float,
        help="loss that counts as divergence (default: 100 x max(initial loss, 1))",
    )
    parser.add_argument(
        "--monitor",
        action="store_true",
        help="run the temperature monitor (noise scale, lambda_max against 2(1+momentum)/lr): "
        "DIR/monitor.jsonl, its probes in the record; draw it with `sgdtemp monitor`",
    )
    parser.add_argument(
        "--monitor-every",
        type=int,
        metavar="N",
        help="probe every N steps (default: within 2%% of the training time)",
    )
    parser.add_argument(
        "--monitor-probe", type=int, default=256, metavar="K", help="probe examples (default 256)"
    )
    add_output_args(parser, out_required=True)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Check the inputs, load the data, train, write the checkpoint and the record."""
    import dataclasses
    import warnings

    import torch

    from sgdtemp.data import eval_set, load_dataset, parse_eval_sets
    from sgdtemp.theory.temperature import temperature
    from sgdtemp.train import (
        MODELS,
        FitOptions,
        Progress,
        TemperatureConfoundWarning,
        build_model,
        fit,
        keep_freed_memory,
        resolve_device,
        save_checkpoint,
    )

    keep_freed_memory()  # a training process: reuse freed activations (no page faults)

    # ---- everything is checked before any training
    require_positive("--lr", args.lr)
    require_positive("--batch-size", args.batch_size)
    stationary = None
    if args.until == "stationary":
        if args.max_sde_time is None:
            raise UserError("--until stationary needs --max-sde-time (the budget in SDE time)")
        require_positive("--max-sde-time", args.max_sde_time)
        from sgdtemp.train.options import StationaryOptions

        stationary = StationaryOptions(max_sde_time=args.max_sde_time)
        args.epochs = 0 if args.epochs is None else args.epochs
    elif args.max_sde_time is not None:
        raise UserError("--max-sde-time needs --until stationary")
    if args.epochs is None:
        raise UserError("--epochs is required (or --until stationary --max-sde-time T)")
    if args.epochs < 0:
        raise UserError(f"--epochs must be a non-negative integer, got {args.epochs}")
    if not 0.0 <= args.momentum < 1.0:
        raise UserError(f"--momentum must lie in [0, 1), got {args.momentum}")
    if not args.weight_decay >= 0.0:
        raise UserError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.model not in MODELS:
        raise UserError(f"unknown model {args.model!r}; choose one of {', '.join(MODELS)}")
    if args.divergence_bound is not None:
        require_positive("--divergence-bound", args.divergence_bound)
    check_out_dir(args.out)
    device = resolve_device(args.device)
    monitor = None
    if args.monitor:
        from sgdtemp.monitor import MonitorOptions

        if args.monitor_every is not None and args.monitor_every < 1:
            raise UserError(f"--monitor-every {args.monitor_every}: give a positive step count")
        if args.monitor_probe < 1:
            raise UserError(f"--monitor-probe {args.monitor_probe}: give a positive example count")
        monitor = MonitorOptions(probe_size=args.monitor_probe, every=args.monitor_every)
    elif args.monitor_every is not None:
        raise UserError("--monitor-every needs --monitor")
    options = FitOptions(
        lr=args.lr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        seed=args.seed,
        replacement=args.replacement,
        device=str(device),
        divergence_bound=args.divergence_bound,
        stationary=stationary,
    )
    specs = [s for s in parse_eval_sets(args.eval_sets) if s != "train"]  # train: always
    splits = load_dataset(
        args.dataset,
        root=args.data_root,
        heldout=args.heldout,
        train_subset=args.train_subset,
        seed=args.data_seed,
    )
    n_train = len(splits.train.y)
    if args.batch_size > n_train:
        raise UserError(
            f"--batch-size {args.batch_size} is larger than the training set ({n_train} images); "
            f"choose at most {n_train}"
        )
    steps = args.epochs * -(-n_train // args.batch_size)
    require_steps(
        steps,
        what=f"--epochs {args.epochs} ({steps:.3g} SGD steps)",
        fix=f"choose at most {MAX_STEPS // -(-n_train // args.batch_size)} epochs",
    )
    if stationary is not None:  # the budget in SDE time is steps x lr
        budget = args.max_sde_time / args.lr
        require_steps(
            budget,
            what=f"--max-sde-time {args.max_sde_time:g} at --lr {args.lr:g} ({budget:.3g} steps)",
            fix=f"choose --max-sde-time at most {MAX_STEPS * args.lr:.3g}",
        )
    evals = {spec: eval_set(splits, spec, seed=args.data_seed) for spec in specs}
    for spec, data in evals.items():
        if len(data.y) == 0:
            raise UserError(f"eval set {spec} is empty; drop it from --eval-sets or use --heldout")
    model_kwargs: dict[str, Any] = {}
    if args.width is not None:
        model_kwargs["width"] = args.width
    if args.norm is not None:
        model_kwargs["norm"] = args.norm
    in_shape = [int(s) for s in splits.train.x.shape[1:]]
    n_classes = int(splits.train.n_classes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TemperatureConfoundWarning)
        model = build_model(
            args.model,
            in_shape=in_shape,
            n_classes=n_classes,
            generator=torch.Generator().manual_seed(args.seed),
            **model_kwargs,
        )
    for warning in caught:
        print(f"sgdtemp train: warning: {warning.message}", file=sys.stderr)
    out = ensure_out_dir(args.out)
    if monitor is not None:
        monitor = dataclasses.replace(monitor, jsonl=str(out / "monitor.jsonl"))
    data_root = None if args.data_root is None else str(Path(args.data_root).resolve())
    config = {
        "dataset": splits.train.name.split(":")[0],  # the registry spelling
        "data_root": data_root,
        "heldout": len(splits.heldout.y),
        "train_subset": args.train_subset,
        "data_seed": args.data_seed,
        "n_train": n_train,
        "in_shape": in_shape,
        "n_classes": n_classes,
        "model": args.model,
        "model_kwargs": model_kwargs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "until": args.until,
        "stationary": None if stationary is None else stationary.to_dict(),
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "replacement": args.replacement,
        "divergence_bound": args.divergence_bound,
        "eval_sets": specs,
        "device": str(device),
        "temperature": temperature(args.lr, args.batch_size, args.momentum),
    }

    # ---- training
    bar = None
    if progress_enabled(args.json):
        from tqdm import tqdm

        total = None if stationary is not None else args.epochs  # stationary: unknown
        bar = tqdm(total=total, desc="train", unit="epoch", file=sys.stderr)

    def progress(p: Progress) -> None:
        if bar is None:
            return
        train = p.metrics["train"]
        bar.set_postfix(loss=f"{train['loss']:.4f}", acc=f"{train['acc']:.3f}", refresh=False)
        bar.update(1 if p.epoch > 0 else 0)

    try:
        result = fit(
            model, splits.train, options, eval_sets=evals, callback=progress, monitor=monitor
        )
    finally:
        if bar is not None:
            bar.close()

    # ---- outputs
    summary = result.to_dict()
    checkpoint = out / "checkpoint.pt"
    record = {
        "status": summary.pop("status"),
        "reason": summary.pop("reason"),
        "temperature": summary.pop("temperature"),
        "lr": summary.pop("lr"),
        "batch_size": summary.pop("batch_size"),
        "momentum": summary.pop("momentum"),
        "weight_decay": summary.pop("weight_decay"),
        "seed": summary.pop("seed"),
        "dataset": config["dataset"],
        "model": args.model,
        "model_kwargs": model_kwargs,
        "epochs": summary.pop("epochs"),
        "checkpoint": str(checkpoint),
        "seconds": summary.pop("seconds"),
        **summary,
        "config": config,
    }
    record = json_safe(record)
    save_checkpoint(
        checkpoint,
        model.cpu(),
        model_name=args.model,
        model_kwargs=model_kwargs,
        config=config,
        metrics=record,
    )
    atomic_write(out / "record.json", json_text(record) + "\n")
    if result.status != "ok":
        print(f"sgdtemp train: run diverged: {result.reason}", file=sys.stderr)
    if args.json:
        emit_json(record)
    else:
        final = record["epochs"][-1]
        parts = [
            f"{name} loss {final[name]['loss']:.4f} acc {final[name]['acc']:.3f}"
            for name in ("train", *(s for s in specs if ":" not in s))
        ]
        print(
            f"{result.status}: T = {result.temperature:.4g}, {result.steps} steps, "
            f"{'; '.join(parts)}"
        )
        print(f"wrote {checkpoint} and {out / 'record.json'}")
        if monitor is not None:
            print(f"monitor log {monitor.jsonl}: `sgdtemp monitor {monitor.jsonl} --out DIR`")
    return 0
