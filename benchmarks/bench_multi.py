"""K small models at once: ``fit_many`` against the same K runs one after another.

Default case (design.md): K = 8 MLPs 784-64-10 at B = 32 on a 10k subset of Fashion-MNIST, each
with its own learning rate and seed. The reference trains the same 8 models (same initial weights,
same data order) one after another with a plain PyTorch loop that also evaluates each model on the
training set before training and after each epoch, as ``fit_many`` does. Prints samples/s of both
(samples = K x steps x B), with and without the evaluation, their ratio (target >= 3), and checks
that both reach the same weights.

``--sweep`` also times a grid of widths and batch sizes (fused path forced on and off), which
is how ``sgdtemp.train.multi.FUSED_MAX_WORK`` (the rule for taking the fused path) was chosen.

Rounds alternate between ours and the reference; the figures are each side's best round and
the median of the per-round ratios, by wall and by CPU time (CPU time is what other load on a
shared machine moves least), with the load average printed next to them.

Usage: python benchmarks/bench_multi.py [--k 8] [--width 64] [--batch-size 32] [--sweep]
"""

from __future__ import annotations

import argparse
import time
from statistics import median

import torch
import torch.nn.functional as F

from _common import bare_sgd_epoch, load
from sgdtemp.data import load_dataset
from sgdtemp.train import build_model, fit_many, keep_freed_memory
from sgdtemp.train.multi import FUSED_MAX_WORK, fused_path_applies


def plain_loop(factory, x, y, *, lrs, seeds, batch_size, epochs):
    """K runs one after another: the textbook PyTorch loop, with the same evaluation passes as
    ``fit_many`` (loss and accuracy on the training set before training and after each epoch).

    Returns the final states and the times: total and training steps alone, wall and CPU."""
    states = []
    n = x.shape[0]
    train_time = train_cpu = 0.0
    tic_all, cpu_all = time.perf_counter(), time.process_time()

    def evaluate(model):
        with torch.no_grad():
            loss_sum, correct = 0.0, 0
            for s in range(0, n, 1024):
                logits = model(x[s : s + 1024])
                loss_sum += F.cross_entropy(logits, y[s : s + 1024], reduction="sum").item()
                correct += (logits.argmax(1) == y[s : s + 1024]).sum().item()
        return loss_sum / n, correct / n

    for lr, seed in zip(lrs, seeds):
        model = factory(torch.Generator().manual_seed(seed))
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        evaluate(model)
        for _ in range(epochs):
            tic, cpu = time.perf_counter(), time.process_time()
            bare_sgd_epoch(model, opt, x, y, batch_size=batch_size, generator=g)
            train_time += time.perf_counter() - tic
            train_cpu += time.process_time() - cpu
            evaluate(model)
        states.append(model.state_dict())
    wall, cpu_total = time.perf_counter() - tic_all, time.process_time() - cpu_all
    return states, {"wall": wall, "train": train_time, "cpu": cpu_total, "train_cpu": train_cpu}


def compare(x, y, *, k, width, batch_size, epochs, rounds, batched=None, check=True):
    shape, n_classes = tuple(x.shape[1:]), 10

    def factory(g):
        return build_model("mlp", in_shape=shape, n_classes=n_classes, width=width, generator=g)

    lrs = [0.02 * (1 + i % 4) for i in range(k)]
    seeds = list(range(k))
    fused = (
        fused_path_applies(factory(torch.Generator()), batch_size=batch_size, n_models=k)
        if batched is None
        else batched
    )
    ours, ref = [], []
    for _ in range(rounds):
        tic, cpu = time.perf_counter(), time.process_time()
        results = fit_many(
            factory,
            (x, y),
            lrs=lrs,
            seeds=seeds,
            batch_size=batch_size,
            epochs=epochs,
            device="cpu",
            batched=batched,
        )
        # the fused path reports the joint time in every result, `fit` its own
        pick = (lambda v: v[0]) if fused else sum
        ours.append(
            {
                "wall": time.perf_counter() - tic,
                "cpu": time.process_time() - cpu,
                "train": pick([r.train_seconds for r in results]),
                "train_cpu": pick([r.train_cpu_seconds for r in results]),
            }
        )
        states, times = plain_loop(
            factory, x, y, lrs=lrs, seeds=seeds, batch_size=batch_size, epochs=epochs
        )
        ref.append(times)
    samples = k * epochs * (x.shape[0] // batch_size) * batch_size
    diff = None
    if check:
        diff = max(
            (r.state[name] - s[name]).abs().max().item()
            for r, s in zip(results, states)
            for name in s
        )
    return samples, ours, ref, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-subset", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--data-root", default=None, help="folder of the Fashion-MNIST files")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = keep_freed_memory()  # as a training process does; both sides run in this process
    splits = load_dataset("fashion-mnist", root=args.data_root, train_subset=args.train_subset)
    x, y = splits.train.x, splits.train.y
    print(
        f"K={args.k} MLPs 784-{args.width}-10, B={args.batch_size}, {len(y)} Fashion-MNIST "
        f"images, {args.epochs} epoch(s), {args.threads} thread(s), torch {torch.__version__}, "
        f"malloc keeps freed memory: {tuned}; {args.rounds} rounds, fit_many then the 8 plain "
        f"loops (each evaluating on the training set before and after every epoch); {load()}"
    )
    samples, ours, ref, diff = compare(
        x,
        y,
        k=args.k,
        width=args.width,
        batch_size=args.batch_size,
        epochs=args.epochs,
        rounds=args.rounds,
    )
    for key, label in (
        ("wall", "with evaluation, wall"),
        ("cpu", "with evaluation, CPU "),
        ("train", "training only, wall  "),
        ("train_cpu", "training only, CPU   "),
    ):
        best_ours, best_ref = min(o[key] for o in ours), min(r[key] for r in ref)
        paired = [r[key] / o[key] for o, r in zip(ours, ref)]
        print(
            f"  {label}: fit_many {samples / best_ours:.0f} samples/s, 8 plain loops "
            f"{samples / best_ref:.0f} samples/s: ratio of bests {best_ref / best_ours:.2f}; "
            f"per-round ratios median {median(paired):.2f} (min {min(paired):.2f}, max "
            f"{max(paired):.2f}) (target >= 3)"
        )
    print(f"max |weight difference| fit_many vs plain loops: {diff:.2e} (float32 rounding)")
    print(f"{load()} at the end")

    if not args.sweep:
        return
    print(
        f"\nsweep: fit_many fused vs sequential (fit), 4096 images, incl. evaluation; "
        f"FUSED_MAX_WORK = {FUSED_MAX_WORK:.0e} multiply-adds per model step"
    )
    print(f"{'width':>6} {'B':>5} {'work/step':>10} {'fused speed-up':>15} {'rule':>8}")
    xs, ys = x[:4096], y[:4096]
    for width in (64, 256, 1024):
        for batch_size in (32, 128, 512):

            def factory(g, width=width, shape=tuple(x.shape[1:])):
                return build_model("mlp", in_shape=shape, n_classes=10, width=width, generator=g)

            times = {True: [], False: []}
            for _ in range(2):
                for batched in (True, False):
                    tic = time.perf_counter()
                    fit_many(
                        factory,
                        (xs, ys),
                        lrs=[0.05],
                        seeds=list(range(args.k)),
                        batch_size=batch_size,
                        epochs=1,
                        device="cpu",
                        batched=batched,
                    )
                    times[batched].append(time.perf_counter() - tic)
            params = 784 * width + width + width * 10 + 10
            rule = fused_path_applies(
                factory(torch.Generator()), batch_size=batch_size, n_models=args.k
            )
            print(
                f"{width:>6} {batch_size:>5} {params * batch_size:>10.1e} "
                f"{min(times[False]) / min(times[True]):>15.2f} {'fused' if rule else 'seq':>8}"
            )


if __name__ == "__main__":
    main()
