"""Training speed and memory of the reference CNN on Fashion-MNIST (CPU by default).

Prints three figures, each next to the reference measured in the same run:

(a) the trainer (``sgdtemp.train.fit``, with its per-epoch full-pass evaluation) against a bare
    PyTorch loop on the same model, data, batch size and evaluation passes; and the trainer's
    training phase alone against the bare training loop alone. Target: within 5 %.
(b) training throughput x FLOPs per example (forward + backward, counted with
    ``torch.utils.flop_counter.FlopCounterMode``) against the fp32 matmul FLOP/s of this
    machine (best square ``torch.mm`` of 1024 and 2048). Target: >= 80 %.
(c) peak RSS of a real ``sgdtemp train`` process (full Fashion-MNIST) against model + data +
    one batch. Target: < 1.5 x that + 300 MB.

Each round measures the matmul reference, then the trainer, then the bare loop, so every ratio
can be taken within a round (paired) as well as between each side's best round; both are
printed, by wall time and by CPU time of this process (what other load on a shared machine
moves least), with the 1-minute load average (as `uptime` prints it) next to them. Like
``sgdtemp train``, the process first calls ``sgdtemp.train.keep_freed_memory`` (glibc keeps
freed blocks, so each step's activations reuse pages instead of faulting fresh ones); the
trainer and the bare loop run in the same process and both get it.

Usage: python benchmarks/bench_train.py [--train-subset N] [--rounds R] [--threads T]
       [--parts abc] [--quick] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from _common import bare_sgd_epoch, load
from sgdtemp.data import load_dataset
from sgdtemp.train import build_model, fit, keep_freed_memory
from sgdtemp.train.trainer import EVAL_BATCH_SIZES

MODEL = "cnn"
EVAL_CHUNK = EVAL_BATCH_SIZES["cpu"]  # the trainer's evaluation chunk on a CPU


def matmul_flops(seconds: float = 1.0) -> tuple[float, float]:
    """Best fp32 matmul FLOP/s over square sizes 1024 and 2048: per wall second, per CPU second."""
    best_wall = best_cpu = 0.0
    for n in (1024, 2048):
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        a @ b
        for _ in range(3):
            reps, tic, cpu = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - tic < seconds / 6:
                a @ b
                reps += 1
            flops = 2 * n**3 * reps
            best_wall = max(best_wall, flops / (time.perf_counter() - tic))
            best_cpu = max(best_cpu, flops / max(time.process_time() - cpu, 1e-9))
    return best_wall, best_cpu


def flops_per_example(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Forward + backward FLOPs of one training step, per example."""
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


def bare_loop(model, x, y, evals, *, lr, batch_size, epochs, seed):
    """The plain PyTorch loop: same permutation sampling, same SGD, same evaluation passes
    (before training and after every epoch, on the training set and the eval sets)."""

    def evaluate_all():
        model.eval()
        with torch.no_grad():
            for ex, ey in [(x, y), *evals]:
                loss_sum, correct = 0.0, 0
                for s in range(0, ex.shape[0], EVAL_CHUNK):
                    xb, yb = ex[s : s + EVAL_CHUNK], ey[s : s + EVAL_CHUNK]
                    logits = model(xb)
                    loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
                    correct += (logits.argmax(1) == yb).sum().item()
        model.train()

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    train_time = train_cpu = 0.0
    tic_all, cpu_all = time.perf_counter(), time.process_time()
    evaluate_all()
    for _ in range(epochs):
        tic, cpu = time.perf_counter(), time.process_time()
        bare_sgd_epoch(model, opt, x, y, batch_size=batch_size, generator=g)
        train_time += time.perf_counter() - tic
        train_cpu += time.process_time() - cpu
        evaluate_all()
    total_cpu = time.process_time() - cpu_all
    return time.perf_counter() - tic_all, train_time, train_cpu, total_cpu


# A tiny launcher: forks and execs the command, then prints the child's peak RSS. Measuring
# through it keeps the benchmark's own memory out of the figure (a child's ru_maxrss includes
# the RSS it inherited from its parent before exec).
_LAUNCHER = """
import json, os, sys
cmd = json.loads(sys.argv[1])
pid = os.fork()
if pid == 0:
    os.execv(cmd[0], cmd)
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nMAXRSS_KB {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _child_peak_rss(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``cmd``; return its own peak RSS in bytes, wall seconds and stdout."""
    tic = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, json.dumps(cmd)],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed:\n{proc.stderr}")
    peak_kb = int(proc.stderr.rsplit("MAXRSS_KB", 1)[1])
    return peak_kb * 1024, seconds, proc.stdout


def peak_rss(args) -> dict:
    """Peak RSS of `sgdtemp train` on Fashion-MNIST, and of loading the same data alone."""
    out = Path(tempfile.mkdtemp(prefix="bench_train_"))
    subset = [] if args.rss_subset is None else ["--train-subset", str(args.rss_subset)]
    cmd = [
        str(Path(sys.executable).parent / "sgdtemp"),
        "train",
        "--dataset",
        "fashion-mnist",
        "--model",
        MODEL,
        "--lr",
        "0.05",
        "--batch-size",
        str(args.batch_size),
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--eval-sets",
        "heldout,test",
        "--out",
        str(out),
        "--json",
        *subset,
    ]
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads)}
    peak, seconds, stdout = _child_peak_rss(cmd, env)
    load_only = (
        "import sgdtemp.cli.train, sgdtemp.train\n"
        "from sgdtemp.data import load_dataset, eval_set\n"
        f"s = load_dataset('fashion-mnist', train_subset={args.rss_subset})\n"
        "e = [eval_set(s, k) for k in ('heldout', 'test')]\n"
    )
    data_peak, _, _ = _child_peak_rss([sys.executable, "-c", load_only], env)
    imports_peak, _, _ = _child_peak_rss(
        [sys.executable, "-c", "import sgdtemp.cli.train, sgdtemp.train, sgdtemp.data"], env
    )
    record = json.loads(stdout)
    return {
        "peak": peak,
        "data_peak": data_peak,
        "imports_peak": imports_peak,
        "seconds": seconds,
        "config": record["config"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-subset", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--width", type=int, default=None, help="CNN width (default: model's)")
    parser.add_argument("--rss-subset", type=int, default=None, help="train subset for (c)")
    parser.add_argument("--parts", default="abc", help="which of the parts a, b, c to run")
    parser.add_argument("--quick", action="store_true", help="2k examples, 2 rounds, no (c)")
    parser.add_argument("--data-root", default=None, help="folder of the Fashion-MNIST files")
    args = parser.parse_args()
    if args.quick:
        args.parts = args.parts.replace("c", "")
        args.train_subset, args.rounds = 2000, 2
    torch.set_num_threads(args.threads)
    tuned = keep_freed_memory()  # as `sgdtemp train` does; both sides run in this process
    print(
        f"reference CNN on Fashion-MNIST, B={args.batch_size}, {args.threads} thread(s), "
        f"torch {torch.__version__}, malloc keeps freed memory: {tuned}; {load()}"
    )
    if "c" in args.parts:  # first, while this process is small
        part_c(args)
    if set("ab") & set(args.parts):
        part_ab(args)


def part_ab(args) -> None:
    splits = load_dataset("fashion-mnist", root=args.data_root, train_subset=args.train_subset)
    x, y = splits.train.x, splits.train.y
    shape, n_classes = tuple(x.shape[1:]), splits.train.n_classes
    kwargs = {} if args.width is None else {"width": args.width}
    lr, seed = 0.05, 0

    def fresh():
        g = torch.Generator().manual_seed(0)
        return build_model(MODEL, in_shape=shape, n_classes=n_classes, generator=g, **kwargs)

    print(
        f"\n{len(y)} training images, {args.epochs} epoch(s), evaluation of train + test "
        f"({len(splits.test)}) before training and after every epoch; {args.rounds} rounds, "
        f"each: matmul reference, trainer, bare loop; {load()} at the start"
    )
    rounds = []
    for r in range(args.rounds):
        mm_wall, mm_cpu = matmul_flops()
        cpu = time.process_time()
        result = fit(
            fresh(),
            splits.train,
            lr=lr,
            batch_size=args.batch_size,
            epochs=args.epochs,
            eval_sets={"test": splits.test},
            seed=seed,
            device="cpu",
        )
        ours_cpu = time.process_time() - cpu
        total, train, train_cpu, total_cpu = bare_loop(
            fresh(),
            x,
            y,
            [(splits.test.x, splits.test.y)],
            lr=lr,
            batch_size=args.batch_size,
            epochs=args.epochs,
            seed=seed,
        )
        rounds.append(
            {
                "mm_wall": mm_wall,
                "mm_cpu": mm_cpu,
                "ours_total": result.seconds,
                "ours_train": result.train_seconds,
                "ours_train_cpu": result.train_cpu_seconds,
                "ours_cpu": ours_cpu,
                "ref_total": total,
                "ref_train": train,
                "ref_train_cpu": train_cpu,
                "ref_cpu": total_cpu,
                "load": os.getloadavg()[0],
            }
        )
        print(
            f"  round {r + 1}: matmul {mm_wall / 1e9:.0f} GFLOP/s; trainer {result.seconds:.2f} s "
            f"(training {result.train_seconds:.2f} s); bare loop {total:.2f} s (training "
            f"{train:.2f} s); load {rounds[-1]['load']:.2f}"
        )
    samples = args.epochs * (len(y) // args.batch_size) * args.batch_size

    def col(key: str) -> list[float]:
        return [r[key] for r in rounds]

    def paired(num: str, den: str) -> list[float]:
        return [r[num] / r[den] for r in rounds]

    print(
        "\n(a) trainer vs bare PyTorch loop (ratio = our speed / reference speed; target >= 0.95)"
    )
    for label, ours_key, ref_key in (
        ("with evaluation, wall", "ours_total", "ref_total"),
        ("with evaluation, CPU ", "ours_cpu", "ref_cpu"),
        ("training only, wall  ", "ours_train", "ref_train"),
        ("training only, CPU   ", "ours_train_cpu", "ref_train_cpu"),
    ):
        ratios = paired(ref_key, ours_key)
        best_ratio = min(col(ref_key)) / min(col(ours_key))
        print(
            f"  {label}: best ours {min(col(ours_key)):.2f} s, best reference "
            f"{min(col(ref_key)):.2f} s, ratio of bests {best_ratio:.3f}"
            f"; per-round ratios median {median(ratios):.3f} "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
        )
    print(
        f"  evaluation share of the trainer's time: "
        f"{1 - min(col('ours_train')) / min(col('ours_total')):.0%}"
    )

    model = fresh()
    flops = flops_per_example(model, x[: args.batch_size], y[: args.batch_size])
    print(
        "\n(b) training FLOP/s vs fp32 matmul FLOP/s (same process, same threads, measured "
        "right before each round; target >= 80 %)"
    )
    print(
        f"  {flops / 1e6:.1f} MFLOP per example (fwd+bwd, FlopCounterMode: convolutions and "
        f"matmuls only) x {samples} samples per round; matmul: best square torch.mm of 1024 "
        "and 2048"
    )
    for who, train_key, cpu_key in (
        ("trainer  ", "ours_train", "ours_train_cpu"),
        ("bare loop", "ref_train", "ref_train_cpu"),
    ):
        wall = [flops * samples / r[train_key] / r["mm_wall"] for r in rounds]
        cpu = [flops * samples / r[cpu_key] / r["mm_cpu"] for r in rounds]
        best = flops * samples / min(col(train_key))
        print(
            f"  {who}: best {best / 1e9:.1f} GFLOP/s vs best matmul "
            f"{max(col('mm_wall')) / 1e9:.1f} GFLOP/s = {best / max(col('mm_wall')):.0%}; "
            f"per-round wall ratio median {median(wall):.0%} (max {max(wall):.0%}); "
            f"per CPU second median {median(cpu):.0%} (max {max(cpu):.0%})"
        )
    print(f"  {load()} at the end")


def part_c(args) -> None:
    print(
        "\n(c) peak RSS of `sgdtemp train` (child process, full Fashion-MNIST, 1 epoch); "
        f"{load()} at the start"
    )
    rss = peak_rss(args)
    cfg = rss["config"]
    n_test = 10_000
    n_images = cfg["n_train"] + cfg["heldout"] + n_test
    data_bytes = n_images * (math.prod(cfg["in_shape"]) * 4 + 8)
    model = build_model(MODEL, in_shape=cfg["in_shape"], n_classes=cfg["n_classes"])
    params = sum(p.numel() for p in model.parameters())
    model_bytes = params * 4 * 3  # weights, gradients, one spare (momentum / update)
    batch_bytes = args.batch_size * (math.prod(cfg["in_shape"]) * 4 + 8)
    base = data_bytes + model_bytes + batch_bytes
    limit = 1.5 * base + 300e6
    print(
        f"  model {model_bytes / 1e6:.1f} MB + data {data_bytes / 1e6:.1f} MB "
        f"({n_images} float32 images) + batch {batch_bytes / 1e6:.2f} MB = {base / 1e6:.0f} MB"
    )
    print(
        f"  peak RSS {rss['peak'] / 1e6:.0f} MB  limit 1.5 x {base / 1e6:.0f} + 300 = "
        f"{limit / 1e6:.0f} MB  ratio peak/limit {rss['peak'] / limit:.2f} (target < 1); "
        f"run took {rss['seconds']:.0f} s"
    )
    print(
        f"  where it goes: interpreter + torch + sgdtemp imports {rss['imports_peak'] / 1e6:.0f}"
        f" MB; + load_dataset and eval sets {(rss['data_peak'] - rss['imports_peak']) / 1e6:.0f}"
        f" MB; + training and evaluation {(rss['peak'] - rss['data_peak']) / 1e6:.0f} MB"
    )
    print(f"  {load()} at the end")


if __name__ == "__main__":
    main()
