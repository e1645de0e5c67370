"""K convolutional nets at once: ``fit_many`` fused against the same K runs one after another.

Default case (design.md, issue 13): K = 12 reference CNNs (``build_model("cnn")``, width 32: the
model's default; no profile trains a CNN yet) on Fashion-MNIST images (1x28x28, a subset), B = 32,
each run with its own learning rate and seed, evaluated on the training set and a test subset
before training and after every epoch, as ``fit_many`` does. The reference is the same call with
``batched=False``: ``fit`` K times (same initial weights, same data order, same evaluations).

Rounds alternate between the two; the figures are each side's best round and the median of the
per-round ratios, by wall and by CPU time of this process (what other load on a shared machine
moves least), with the load average (as `uptime` prints it) next to them. Also printed:

- achieved GFLOP/s of both sides (convolution and matmul FLOPs of training and evaluation,
  counted with ``torch.utils.flop_counter.FlopCounterMode``) against the fp32 matmul GFLOP/s of
  this machine measured at the start of every round (a compute-bound convolution gains nothing
  from stacking: the gap between the two sides is overhead);
- ``--profile``: where one training step's CPU time goes on both sides (torch.profiler, by
  operator group), and the GFLOP/s of the convolutions alone;
- the largest weight difference between the two sides (float32 rounding);
- ``--sweep``: the fused speed-up over a grid of widths and batch sizes (how the rule
  ``sgdtemp.train.multi.fused_path_applies`` for convolutional nets was set).

Usage: python benchmarks/bench_fused_cnn.py [--model cnn|resnet] [--k 12] [--width W]
       [--batch-size 32] [--threads T] [--rounds 3] [--profile] [--sweep]
"""

from __future__ import annotations

import argparse
import time
from statistics import median

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from _common import best_times, load
from bench_train import matmul_flops
from sgdtemp.data import load_dataset
from sgdtemp.train import FitOptions, build_model, fit_many, keep_freed_memory
from sgdtemp.train.multi import fused_path_applies
from sgdtemp.train.stacked import stack_models
from sgdtemp.train.stacked_conv import forward_macs
from sgdtemp.train.trainer import SGD


def factory_for(model, shape, width):
    kwargs = {} if width is None else {"width": width}

    def factory(g):
        return build_model(model, in_shape=shape, n_classes=10, generator=g, **kwargs)

    return factory


def options_for(k, batch_size, epochs):
    return [
        FitOptions(
            lr=0.01 * (1 + i % 4), batch_size=batch_size, epochs=epochs, seed=i, device="cpu"
        )
        for i in range(k)
    ]


def count_flops(factory, x, y):
    """Forward + backward FLOPs of one training example, forward FLOPs of one evaluated one."""
    model = factory(torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    train = counter.get_total_flops() / x.shape[0]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    return train, counter.get_total_flops() / x.shape[0]


def timed_run(factory, train, options, evals, batched):
    tic, cpu = time.perf_counter(), time.process_time()
    results = fit_many(factory, train, options, eval_sets=evals, batched=batched)
    wall, cpu = time.perf_counter() - tic, time.process_time() - cpu
    pick = (lambda v: v[0]) if batched else sum  # fused: each result has the joint time
    return results, {
        "wall": wall,
        "cpu": cpu,
        "train": pick([r.train_seconds for r in results]),
        "train_cpu": pick([r.train_cpu_seconds for r in results]),
    }


def compare(args, x, y, ex, ey):
    shape = tuple(x.shape[1:])
    factory = factory_for(args.model, shape, args.width)
    options = options_for(args.k, args.batch_size, args.epochs)
    evals = {"test": (ex, ey)}
    n_steps = args.epochs * (len(y) // args.batch_size)
    train_flops, eval_flops = count_flops(factory, x[: args.batch_size], y[: args.batch_size])
    samples = args.k * n_steps * args.batch_size
    evaluated = args.k * (args.epochs + 1) * (len(y) + len(ey))
    flops = {"train": train_flops * samples, "all": train_flops * samples + eval_flops * evaluated}
    print(
        f"\n{args.rounds} rounds, each: matmul reference, fused, one after another; "
        f"{train_flops / 1e6:.1f} MFLOP per training example (forward + backward), "
        f"{eval_flops / 1e6:.1f} per evaluated one; {load()} at the start"
    )
    ours, ref, matmul = [], [], []
    for r in range(args.rounds):
        mm_wall, mm_cpu = matmul_flops()
        matmul.append((mm_wall, mm_cpu))
        fused, t_fused = timed_run(factory, (x, y), options, evals, True)
        seq, t_seq = timed_run(factory, (x, y), options, evals, False)
        ours.append(t_fused)
        ref.append(t_seq)
        print(
            f"  round {r + 1}: matmul {mm_wall / 1e9:.0f} GFLOP/s; fused {t_fused['wall']:.2f} s "
            f"(training {t_fused['train']:.2f} s), one after another {t_seq['wall']:.2f} s "
            f"(training {t_seq['train']:.2f} s); {load()}"
        )
    print(f"\n{args.k} runs fused vs one after another (ratio = fused speed / reference speed)")
    for key, label, work in (
        ("wall", "with evaluation, wall", "all"),
        ("cpu", "with evaluation, CPU ", "all"),
        ("train", "training only, wall  ", "train"),
        ("train_cpu", "training only, CPU   ", "train"),
    ):
        best_ours, best_ref = min(o[key] for o in ours), min(r[key] for r in ref)
        paired = [r[key] / o[key] for o, r in zip(ours, ref)]
        print(
            f"  {label}: fused {best_ours:.2f} s, one after another {best_ref:.2f} s: ratio of "
            f"bests {best_ref / best_ours:.2f}; per-round ratios median {median(paired):.2f} "
            f"(min {min(paired):.2f}, max {max(paired):.2f}) (target >= 2); achieved "
            f"{flops[work] / best_ours / 1e9:.0f} vs {flops[work] / best_ref / 1e9:.0f} GFLOP/s"
        )
    best_mm_wall = max(m[0] for m in matmul)
    best_mm_cpu = max(m[1] for m in matmul)
    share_ours = flops["train"] / min(o["train_cpu"] for o in ours) / best_mm_cpu
    share_ref = flops["train"] / min(r["train_cpu"] for r in ref) / best_mm_cpu
    print(
        f"  fp32 matmul (best square torch.mm of 1024 and 2048): {best_mm_wall / 1e9:.0f} GFLOP/s "
        f"per wall second, {best_mm_cpu / 1e9:.0f} per CPU second; training FLOP/s per CPU "
        f"second, as a share of it: fused {share_ours:.0%}, one after another {share_ref:.0%}"
    )
    print(
        f"  evaluation share of the time (wall): fused "
        f"{1 - min(o['train'] for o in ours) / min(o['wall'] for o in ours):.0%}, one after "
        f"another {1 - min(r['train'] for r in ref) / min(r['wall'] for r in ref):.0%}"
    )
    rule = fused_path_applies(
        factory(torch.Generator()), batch_size=args.batch_size, n_models=args.k, in_shape=shape
    )
    print(
        f"  the rule (fused_path_applies) at {torch.get_num_threads()} thread(s): "
        f"{'fused' if rule else 'one after another'}"
    )
    diff = max(
        (a.state[name] - b.state[name]).abs().max().item()
        for a, b in zip(fused, seq)
        for name in a.state
    )
    print(f"  max |weight difference| fused vs one after another: {diff:.2e} (float32 rounding)")
    print(f"  {load()} at the end")


# operator groups of the profile: (label, predicate on the aten operator name)
_GROUPS = (
    (
        "convolution forward",
        lambda n: (
            n in ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d")
        ),
    ),
    ("convolution backward", lambda n: n == "aten::convolution_backward"),
    ("group norm", lambda n: "group_norm" in n),
    ("pooling", lambda n: "pool" in n),
    ("ReLU", lambda n: n in ("aten::clamp_min", "aten::threshold_backward", "aten::relu")),
    ("zero fills, copies", lambda n: n in ("aten::fill_", "aten::copy_", "aten::zero_")),
    (
        "linear, loss",
        lambda n: (
            n in ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm")
            or "softmax" in n
            or "nll" in n
        ),
    ),
)


def step_fns(model_name, width, k, batch_size, x, y):
    """One SGD step of K models: fused (the stack ``fit_many`` uses) and K plain PyTorch steps."""
    factory = factory_for(model_name, tuple(x.shape[1:]), width)
    models = [factory(torch.Generator().manual_seed(s)) for s in range(k)]
    n = (len(y) // batch_size) * batch_size
    reps = (k * batch_size + n - 1) // n
    xb = x[:n].repeat(reps, 1, 1, 1)[: k * batch_size].view(k, batch_size, *x.shape[1:])
    yb = y[:n].repeat(reps)[: k * batch_size].view(k, batch_size)
    lr = torch.full((k,), 0.01)
    stacked = stack_models(models, torch.device("cpu"))
    opts = [SGD(list(m.parameters()), lr=0.01) for m in models]

    def sequential():
        for i, m in enumerate(models):
            loss = F.cross_entropy(m(xb[i]), yb[i])
            opts[i].step(torch.autograd.grad(loss, list(m.parameters())))

    def fused():
        stacked.sgd_step(xb, yb, lr)

    return fused, sequential, models, stacked, xb, yb


def profile_steps(args, x, y):
    """CPU time of one training step of all K models by operator group, on both sides."""
    k = args.k
    fused, sequential, models, stacked, xb, yb = step_fns(
        args.model, args.width, k, args.batch_size, x, y
    )
    model = models[0]
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(xb[0]), yb[0]).backward()
    model.zero_grad(set_to_none=True)
    conv_flops = k * sum(
        v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op)
    )
    reps = 3
    print(
        f"\nwhere one step of all {k} models goes ({type(stacked).__name__} vs {k} plain "
        f"PyTorch steps; torch.profiler: self time per operator group, ms of wall time per "
        f"step, best of {reps} steps; {load()})"
    )
    labels = [g for g, _ in _GROUPS] + ["other operators", "outside operators", "total"]
    table, cpu_ms = {}, {}
    for name, fn in (("fused", fused), ("one after another", sequential)):
        fn()
        best = dict.fromkeys(labels, float("inf"))
        cpu_ms[name] = float("inf")
        for _ in range(reps):
            tic, cpu = time.perf_counter(), time.process_time()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
            total = (time.perf_counter() - tic) * 1e3
            cpu_ms[name] = min(cpu_ms[name], (time.process_time() - cpu) * 1e3)
            groups = dict.fromkeys(labels, 0.0)
            for event in prof.key_averages():
                label = next((g for g, test in _GROUPS if test(event.key)), "other operators")
                groups[label] += event.self_cpu_time_total / 1e3
            groups["outside operators"] = total - sum(groups.values())
            groups["total"] = total
            for g, v in groups.items():
                best[g] = min(best[g], v)
        table[name] = best
    print(f"  {'':28s} {'fused':>16s} {'one by one':>16s}")
    for g in labels:
        f, o = table["fused"][g], table["one after another"][g]
        ft, ot = table["fused"]["total"], table["one after another"]["total"]
        print(f"  {g:28s} {f:9.1f} ({f / ft:4.0%}) {o:9.1f} ({o / ot:4.0%})")
    print(
        "  (outside operators: Python, dispatch and the profiler's own cost; under load every "
        "line includes waiting for a CPU)"
    )
    for name, t in table.items():
        share = (t["convolution forward"] + t["convolution backward"]) / t["total"]
        conv_cpu = share * cpu_ms[name]
        print(
            f"  {name}: step {cpu_ms[name]:.1f} ms of CPU; convolutions {share:.0%} of it, "
            f"{conv_flops / 1e9:.2f} GFLOP: {conv_flops / conv_cpu / 1e6:.0f} GFLOP per CPU "
            f"second; the rest {(1 - share) * cpu_ms[name]:.1f} ms"
        )


def sweep(args, x, y):
    print(
        f"\nsweep: one training step of K={args.k} {args.model}s, fused vs one after another "
        f"(plain PyTorch steps); ms of CPU per step, best of {args.sweep_rounds} interleaved; "
        f"{load()}"
    )
    print(
        f"{'width':>6} {'B':>5} {'MMAC/ex':>8} {'fused':>8} {'seq':>8} {'speed-up':>9} {'rule':>6}"
    )
    for width in args.sweep_widths:
        for batch_size in args.sweep_batch_sizes:
            fused, sequential, models, stacked, xb, _ = step_fns(
                args.model, width, args.k, batch_size, x, y
            )
            fused()
            sequential()
            _, cpu = best_times([fused, sequential], args.sweep_rounds)
            macs = forward_macs(models[0], tuple(x.shape[1:]))
            rule = fused_path_applies(
                models[0], batch_size=batch_size, n_models=args.k, in_shape=tuple(x.shape[1:])
            )
            print(
                f"{width:>6} {batch_size:>5} {macs / 1e6:8.2f} {cpu[0] * 1e3:8.1f} "
                f"{cpu[1] * 1e3:8.1f} {cpu[1] / cpu[0]:9.2f} {'fused' if rule else 'seq':>6}"
            )
    print(f"  {load()} at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn", choices=("cnn", "resnet"))
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--width", type=int, default=None, help="default: the model's")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-subset", type=int, default=1024)
    parser.add_argument("--test-subset", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-compare", action="store_true", help="skip the main comparison")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--sweep-widths", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--sweep-batch-sizes", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--sweep-rounds", type=int, default=5)
    parser.add_argument("--data-root", default=None, help="folder of the Fashion-MNIST files")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = keep_freed_memory()  # as a training process does; both sides run in this process
    splits = load_dataset("fashion-mnist", root=args.data_root, train_subset=args.train_subset)
    x, y = splits.train.x, splits.train.y
    ex, ey = splits.test.x[: args.test_subset], splits.test.y[: args.test_subset]
    width = "default" if args.width is None else args.width
    print(
        f"K={args.k} {args.model} (width {width}), B={args.batch_size}, {len(y)} Fashion-MNIST "
        f"training images, {len(ey)} test images, {args.epochs} epoch(s), {args.threads} "
        f"thread(s), torch {torch.__version__}, malloc keeps freed memory: {tuned}; {load()}"
    )
    if not args.no_compare:
        compare(args, x, y, ex, ey)
    if args.profile:
        profile_steps(args, x, y)
    if args.sweep:
        sweep(args, x, y)


if __name__ == "__main__":
    main()
