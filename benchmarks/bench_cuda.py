"""The CUDA path, checked against the CPU path and timed against bare PyTorch on the same GPU.

CI has no GPU, so this script is how the ``--device cuda`` code path is exercised. It prints:

(a) ``sgdtemp.train.fit`` on CUDA against a bare PyTorch loop on the same GPU (reference CNN,
    Fashion-MNIST, same batch size, same evaluation passes): samples/s of each and their ratio.
(b) agreement of a short CUDA run with the same run on the CPU (same seed and data order): the
    per-epoch training losses (float32 kernels differ, so a small relative gap is expected) and
    whether two CUDA runs are bit-identical.
(c) ``fit_many`` of K MLPs on CUDA: samples/s against the K runs one after another on CUDA,
    and the largest difference to the one-by-one results.
(d) curvature on CUDA: one Hessian-vector product against one gradient on the same batch, and
    the Hutchinson trace and top eigenvalue on CUDA against the same estimators on the CPU
    (float64, same probes) — they must agree to rounding.

Usage: python benchmarks/bench_cuda.py [--train-subset N] [--epochs E]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from _common import bare_sgd_epoch
from sgdtemp.curvature import HessianOperator, random_probes, top_eigenvalues
from sgdtemp.data import load_dataset
from sgdtemp.train import build_model, fit, fit_many

SHAPE = (1, 28, 28)
DEV = "cuda"  # --device; "cpu" only to smoke-test this script where there is no GPU


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def cnn(seed: int) -> torch.nn.Module:
    return build_model(
        "cnn", in_shape=SHAPE, n_classes=10, generator=torch.Generator().manual_seed(seed)
    )


def mlp(gen: torch.Generator) -> torch.nn.Module:
    return build_model("mlp", in_shape=SHAPE, n_classes=10, generator=gen, width=64, depth=1)


def bare_loop(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    xt: torch.Tensor,
    yt: torch.Tensor,
    *,
    lr: float,
    batch_size: int,
    epochs: int,
) -> float:
    """Plain SGD with full-pass train and test loss before training and after each epoch."""
    dev = torch.device(DEV)
    model.to(dev)
    x, y, xt, yt = x.to(dev), y.to(dev), xt.to(dev), yt.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    sync()
    start = time.perf_counter()
    for epoch in range(epochs + 1):  # the trainer evaluates before training and after each epoch
        with torch.no_grad():
            for xs, ys in ((x, y), (xt, yt)):
                sum(
                    F.cross_entropy(model(xs[j : j + 1024]), ys[j : j + 1024], reduction="sum")
                    for j in range(0, len(ys), 1024)
                ).item()
        if epoch == epochs:
            break
        bare_sgd_epoch(model, opt, x, y, batch_size=batch_size, generator=gen)
    sync()
    return time.perf_counter() - start


def part_a(splits, args) -> None:
    x, y = splits.train.x[: args.train_subset], splits.train.y[: args.train_subset]
    xt, yt = splits.test.x, splits.test.y
    n = (len(y) // args.batch_size) * args.batch_size * args.epochs
    ours, ref = [], []
    for _ in range(args.rounds):
        r = fit(
            cnn(0),
            (x, y),
            lr=0.05,
            batch_size=args.batch_size,
            epochs=args.epochs,
            eval_sets={"test": (xt, yt)},
            device=DEV,
            seed=0,
        )
        ours.append(r.seconds)
        ref.append(
            bare_loop(cnn(0), x, y, xt, yt, lr=0.05, batch_size=args.batch_size, epochs=args.epochs)
        )
    o, b = min(ours), min(ref)
    print(
        f"(a) trainer on CUDA {n / o:9.0f} samples/s (incl. eval; {o:.2f} s)   bare loop "
        f"{n / b:9.0f} samples/s ({b:.2f} s)   ratio trainer/bare time {o / b:.3f}"
    )


def part_b(splits, args) -> None:
    x, y = splits.train.x[:5000], splits.train.y[:5000]
    runs = {}
    for name, dev in (("cpu", "cpu"), ("cuda", DEV), ("cuda again", DEV)):
        r = fit(cnn(1), (x, y), lr=0.05, batch_size=128, epochs=2, device=dev, seed=1)
        runs[name] = [e["train"]["loss"] for e in r.epochs]
    gap = max(abs(a - b) / abs(b) for a, b in zip(runs["cuda"], runs["cpu"]))
    print(
        f"(b) per-epoch train loss CPU {[f'{v:.5f}' for v in runs['cpu']]}  CUDA "
        f"{[f'{v:.5f}' for v in runs['cuda']]}  max rel gap {gap:.2e}; two CUDA runs "
        f"bit-identical: {runs['cuda'] == runs['cuda again']}"
    )


def part_c(splits, args) -> None:
    x, y = splits.train.x[:10_000], splits.train.y[:10_000]
    k = 8
    lrs = [0.01 * (i + 1) for i in range(k)]
    kw = dict(batch_size=32, epochs=1, device=DEV)
    sync()
    t0 = time.perf_counter()
    many = fit_many(mlp, (x, y), lrs=lrs, seeds=[0], **kw)
    sync()
    t_many = time.perf_counter() - t0
    t0 = time.perf_counter()
    one = [fit(mlp(torch.Generator().manual_seed(0)), (x, y), lr=lr, seed=0, **kw) for lr in lrs]
    sync()
    t_one = time.perf_counter() - t0
    diff = max(
        abs(a.epochs[-1]["train"]["loss"] - b.epochs[-1]["train"]["loss"])
        for a, b in zip(many, one)
    )
    print(
        f"(c) fit_many K={k} MLPs on CUDA {t_many:.2f} s vs one after another {t_one:.2f} s "
        f"-> {t_one / t_many:.2f}x; max |final loss difference| {diff:.2e}"
    )


def timed(fn, reps: int = 10) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def hvp_timing(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """One HVP (cached graph, and cold) against one gradient on the same batch, on DEV."""
    model = build_model(
        name, in_shape=SHAPE, n_classes=10, generator=torch.Generator().manual_seed(0)
    )
    model = model.to(DEV).eval()
    xb, yb = x.to(DEV), y.to(DEV)
    params = list(model.parameters())
    loss_fn = torch.nn.CrossEntropyLoss()
    op = HessianOperator(model, loss_fn, (xb, yb))
    cold = HessianOperator(
        model, loss_fn, (xb, yb), hvp_mode="double_backward", graph_cache_bytes=0
    )
    v = torch.randn(op.shape[0], device=DEV)
    g = timed(lambda: torch.autograd.grad(F.cross_entropy(model(xb), yb), params))
    h = timed(lambda: op @ v)
    hc = timed(lambda: cold @ v)
    print(
        f"(d) {name} on {DEV}: gradient {g * 1e3:.2f} ms, HVP {h * 1e3:.2f} ms ({h / g:.2f}x), "
        f"cold HVP {hc * 1e3:.2f} ms ({hc / g:.2f}x)"
    )


def estimates(name: str, x: torch.Tensor, y: torch.Tensor, dev: str) -> tuple[float, float]:
    """Trace estimate with fixed float64 probes and lambda_max, float64, on ``dev``."""
    model = build_model(
        name, in_shape=SHAPE, n_classes=10, generator=torch.Generator().manual_seed(0)
    )
    model = model.double().to(dev).eval()
    op = HessianOperator(model, torch.nn.CrossEntropyLoss(), (x.double().to(dev), y.to(dev)))
    probes = random_probes(
        op.shape[0], 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    trace = float((probes * (op @ probes.to(dev)).cpu()).sum()) / probes.shape[1]
    top = top_eigenvalues(op, 1, tol=1e-6, generator=torch.Generator(device=dev).manual_seed(0))
    return trace, float(top.values[0])


def part_d(splits, args) -> None:
    x, y = splits.train.x[:512], splits.train.y[:512]
    for name in ("cnn", "mlp"):
        hvp_timing(name, x, y)
        (tc, lc), (tg, lg) = (estimates(name, x[:128], y[:128], d) for d in ("cpu", DEV))
        print(
            f"    {name} float64 trace estimate (16 probes) CPU {tc:.10g} {DEV} {tg:.10g} "
            f"rel {abs(tc - tg) / abs(tc):.1e}; lambda_max CPU {lc:.10g} {DEV} {lg:.10g} "
            f"rel {abs(lc - lg) / abs(lc):.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-subset", type=int, default=60_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parts", default="abcd")
    parser.add_argument("--device", default="cuda", help="cpu only to smoke-test the script")
    args = parser.parse_args()
    global DEV
    DEV = args.device
    if DEV == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_cuda: no CUDA device; run it on a machine with a GPU")
    name = torch.cuda.get_device_name() if DEV == "cuda" else "cpu (smoke test)"
    print(f"device: {name}  torch {torch.__version__}")
    splits = load_dataset("fashion-mnist", seed=0)
    for part in args.parts:
        {"a": part_a, "b": part_b, "c": part_c, "d": part_d}[part](splits, args)


if __name__ == "__main__":
    main()
