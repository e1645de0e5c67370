"""Helpers of the fault-injection suite: byte flips, folder snapshots, a digits checkpoint."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import torch

from sgdtemp.data import load_dataset
from sgdtemp.train import build_model, save_checkpoint


def flip_bytes(data: bytes, count: int, rng: random.Random, *, lo: int = 0) -> bytes:
    """``data`` with ``count`` bytes at random positions (from ``lo``) XOR-ed with a random mask."""
    out = bytearray(data)
    for _ in range(count):
        i = rng.randrange(lo, len(out))
        out[i] ^= rng.randrange(1, 256)
    return bytes(out)


def flip_member(data: bytes, name_end: str, count: int, rng: random.Random) -> bytes:
    """``data`` (a zip archive) with ``count`` bytes flipped inside the member ending in
    ``name_end`` (e.g. a checkpoint's weights), leaving the archive's structure intact."""
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(name_end))
    header = data[info.header_offset : info.header_offset + 30]
    start = info.header_offset + 30 + int.from_bytes(header[26:28], "little")
    start += int.from_bytes(header[28:30], "little")
    out = bytearray(data)
    for _ in range(count):
        i = rng.randrange(start, start + info.compress_size)
        out[i] ^= rng.randrange(1, 256)
    return bytes(out)


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under ``roots``: path -> sha256 (``"dir"`` for folders)."""
    state: dict[str, str] = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_dir():
                state[str(path)] = "dir"
            else:
                state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def write_digits_checkpoint(path: Path, **config) -> None:
    """A small MLP on digits, saved as ``sgdtemp train`` would (untrained weights)."""
    splits = load_dataset("digits")
    shape = [int(s) for s in splits.train.x.shape[1:]]
    model = build_model(
        "mlp", in_shape=shape, n_classes=10, width=8, generator=torch.Generator().manual_seed(0)
    )
    save_checkpoint(
        path,
        model,
        model_name="mlp",
        model_kwargs={"width": 8},
        config={
            "dataset": "digits",
            "in_shape": shape,
            "n_classes": 10,
            "lr": 0.1,
            "batch_size": 32,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "seed": 0,
            **config,
        },
        metrics={"status": "ok"},
    )
