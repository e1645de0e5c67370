"""One Hessian-vector product vs one gradient on the same batch (reference CNN and MLP).

Ours: ``HessianOperator(model, loss, (x, y)) @ v`` on one batch, in each formulation
(double backward, forward-over-reverse) and in ``hvp_mode="auto"`` (timed: the fastest here).
Repeated products at the same parameters (Lanczos, CG, probes) reuse the batch's cached gradient
graph, so they cost only the double backward; "double_backward (cold)" disables that cache and
shows the cost of a first product (forward + backward + double backward).
Reference, measured in the same run: one gradient of the same loss on the same batch with plain
``torch.autograd.grad``. Target: auto HVP <= 3x the gradient.

Timings are interleaved (one round = one call of every contender) and the best round is
reported, which is the figure least disturbed by other processes on a shared machine.

    .venv/bin/python benchmarks/bench_hvp.py [--batch 512] [--rounds 15] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from sgdtemp.curvature import HessianOperator
from sgdtemp.train import build_model

TARGET = 3.0
MODELS = {
    "cnn": {"name": "cnn"},  # 3 conv blocks (32, 64, 128 channels), channels_last
    "mlp": {"name": "mlp", "width": 256, "depth": 2},  # 784-256-256-10
}


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return times


def bench_model(key: str, args: argparse.Namespace, loss_fn: nn.Module) -> bool:
    """Time the gradient and the HVPs of one reference model; True when the target is met."""
    spec = dict(MODELS[key])
    gen = torch.Generator().manual_seed(0)
    model = build_model(
        spec.pop("name"), in_shape=(1, 28, 28), n_classes=10, generator=gen, **spec
    ).eval()
    x = torch.rand(args.batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (args.batch,), generator=gen)
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient() -> object:
        return torch.autograd.grad(loss_fn(model(x), y), params)

    ops = {
        mode: HessianOperator(model, loss_fn, (x, y), hvp_mode=mode)
        for mode in ("double_backward", "forward_over_reverse", "auto")
    }
    # cold: no cached gradient graph, every product pays forward + backward + double backward
    ops["double_backward (cold)"] = HessianOperator(
        model, loss_fn, (x, y), hvp_mode="double_backward", graph_cache_bytes=0
    )
    v = torch.randn(ops["auto"].shape[0], generator=gen)
    fns: dict[str, Callable[[], object]] = {"gradient": gradient}
    fns.update({f"hvp {m}": (lambda op=op: op @ v) for m, op in ops.items()})
    times = interleaved(fns, args.rounds)
    best = {k: min(t) for k, t in times.items()}
    med = {k: sorted(t)[len(t) // 2] for k, t in times.items()}
    print(f"{key}: {ops['auto'].shape[0]} parameters; auto chose {ops['auto'].strategy['single']}")
    print(
        f"  reference gradient: {best['gradient'] * 1e3:8.2f} ms (median "
        f"{med['gradient'] * 1e3:.2f})"
    )
    for m in ops:
        ratio = best[f"hvp {m}"] / best["gradient"]
        ratio_med = med[f"hvp {m}"] / med["gradient"]
        note = f"  (target <= {TARGET})" if m == "auto" else ""
        print(
            f"  ours hvp {m:22s} {best[f'hvp {m}'] * 1e3:8.2f} ms  ratio {ratio:4.2f} "
            f"(median {ratio_med:4.2f}){note}"
        )
    ratio_auto = best["hvp auto"] / best["gradient"]
    return ratio_auto <= TARGET and math.isfinite(ratio_auto)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", default="cnn,mlp")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    loss_fn = nn.CrossEntropyLoss()
    print(
        f"threads: {torch.get_num_threads()}  load average: {os.getloadavg()[0]:.1f}  "
        f"batch: {args.batch}  torch {torch.__version__}"
    )
    ok = True
    for key in args.models.split(","):
        ok = bench_model(key, args, loss_fn) and ok
    print("target met" if ok else "target NOT met")


if __name__ == "__main__":
    main()
