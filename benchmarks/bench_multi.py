"""K small models at once: ``fit_many`` against the same K runs one after another.

Default case (design.md): K = 8 MLPs 784-64-10 at B = 32 on a 10k subset of Fashion-MNIST, each
with its own learning rate and seed. The reference trains the same 8 models (same initial weights,
same data order) one after another with a plain PyTorch loop. Prints samples/s of both (samples
= K x steps x B) and their ratio (target >= 3), and checks that both reach the same weights.

``--sweep`` also times a grid of widths and batch sizes (fused path forced on and off), which
is how ``sgdtemp.train.multi.FUSED_MAX_WORK`` (the rule for taking the fused path) was chosen.

Rounds alternate between ours and the reference, each side keeps its best round.

Usage: python benchmarks/bench_multi.py [--k 8] [--width 64] [--batch-size 32] [--sweep]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from sgdtemp.data import load_dataset
from sgdtemp.train import build_model, fit_many
from sgdtemp.train.multi import FUSED_MAX_WORK, fused_path_applies


def plain_loop(factory, x, y, *, lrs, seeds, batch_size, epochs):
    """K runs one after another: the textbook PyTorch loop, no evaluation."""
    states = []
    n = x.shape[0]
    for lr, seed in zip(lrs, seeds):
        model = factory(torch.Generator().manual_seed(seed))
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            perm = torch.randperm(n, generator=g)
            for i in range(n // batch_size):
                idx = perm[i * batch_size : (i + 1) * batch_size]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        states.append(model.state_dict())
    return states


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
    ours, ours_train, ref = [], [], []
    for _ in range(rounds):
        tic = time.perf_counter()
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
        ours.append(time.perf_counter() - tic)
        # the fused path reports the joint wall time in every result, `fit` its own
        ours_train.append(
            results[0].train_seconds if fused else sum(r.train_seconds for r in results)
        )
        tic = time.perf_counter()
        states = plain_loop(
            factory, x, y, lrs=lrs, seeds=seeds, batch_size=batch_size, epochs=epochs
        )
        ref.append(time.perf_counter() - tic)
    samples = k * epochs * (x.shape[0] // batch_size) * batch_size
    diff = None
    if check:
        diff = max(
            (r.state[name] - s[name]).abs().max().item()
            for r, s in zip(results, states)
            for name in s
        )
    return samples, min(ours), min(ours_train), min(ref), diff


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_dataset("fashion-mnist", train_subset=args.train_subset)
    x, y = splits.train.x, splits.train.y
    print(
        f"K={args.k} MLPs 784-{args.width}-10, B={args.batch_size}, {len(y)} Fashion-MNIST "
        f"images, {args.epochs} epoch(s), {args.threads} thread(s), torch {torch.__version__}"
    )
    samples, ours, ours_train, ref, diff = compare(
        x,
        y,
        k=args.k,
        width=args.width,
        batch_size=args.batch_size,
        epochs=args.epochs,
        rounds=args.rounds,
    )
    print(
        f"ours (fit_many, incl. its per-epoch full-pass evaluation): {samples / ours:.0f} samples/s"
        f"  (training phase alone: {samples / ours_train:.0f} samples/s)"
    )
    print(f"reference (8 plain PyTorch loops one after another): {samples / ref:.0f} samples/s")
    print(f"ratio {ref / ours:.2f} (target >= 3); training phase alone {ref / ours_train:.2f}")
    print(f"max |weight difference| fit_many vs plain loops: {diff:.2e} (float32 rounding)")

    if not args.sweep:
        return
    print(
        f"\nsweep: fused vs sequential fit (both incl. evaluation); FUSED_MAX_WORK = "
        f"{FUSED_MAX_WORK:.0e} multiply-adds per model step"
    )
    print(f"{'width':>6} {'B':>5} {'work/step':>10} {'fused/seq speedup':>18}")
    for width in (64, 256, 1024):
        for batch_size in (32, 128, 512):
            params = 784 * width + width + width * 10 + 10
            fused = compare(
                x,
                y,
                k=args.k,
                width=width,
                batch_size=batch_size,
                epochs=1,
                rounds=2,
                batched=True,
                check=False,
            )
            seq = compare(
                x,
                y,
                k=args.k,
                width=width,
                batch_size=batch_size,
                epochs=1,
                rounds=2,
                batched=False,
                check=False,
            )
            print(
                f"{width:>6} {batch_size:>5} {params * batch_size:>10.1e} "
                f"{seq[1] / fused[1]:>18.2f}"
            )


if __name__ == "__main__":
    main()
