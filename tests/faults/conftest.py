"""Shared assets of the fault-injection suite: intact files, and the damaged or foreign ones.

Everything is built once per session in a temporary folder: a digits checkpoint written by
``save_checkpoint`` (no training needed to test loading), a small results store with finished
runs, and the files users pass by mistake (a plain pickle, another program's SQLite database,
empty files, random bytes).
"""

from __future__ import annotations

import pickle
import random
import sqlite3
from pathlib import Path

import pytest
import torch

from sgdtemp.analysis.synthetic import SyntheticSweep, write_synthetic_sweep
from tests.faults.helpers import flip_bytes, flip_member, write_digits_checkpoint


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Path:
    """A folder of intact, damaged and foreign files (never modified by the tests)."""
    folder = tmp_path_factory.mktemp("assets")
    ckpt = folder / "checkpoint.pt"
    write_digits_checkpoint(ckpt)
    data = ckpt.read_bytes()
    (folder / "flipped.pt").write_bytes(flip_bytes(data, 200, random.Random(0), lo=len(data) // 4))
    (folder / "truncated.pt").write_bytes(data[: len(data) // 2])
    # flips inside the weights only: the archive stays readable, only its CRCs tell
    (folder / "weights_flipped.pt").write_bytes(flip_member(data, "data/0", 20, random.Random(2)))
    payload = torch.load(ckpt, weights_only=True)
    payload["state_dict"]["1.weight"][0, 0] = float("nan")
    torch.save(payload, folder / "edited.pt")  # its content hash no longer matches
    from sgdtemp.train.checkpoint import content_digest

    payload["sha256"] = content_digest(payload)
    torch.save(payload, folder / "nan.pt")  # consistent, but holds NaN weights
    with (folder / "plain.pkl").open("wb") as handle:
        pickle.dump({"weights": [1.0, 2.0]}, handle)
    torch.save({"weight": torch.zeros(3)}, folder / "foreign.pt")
    (folder / "empty.db").write_bytes(b"")
    (folder / "garbage.db").write_bytes(random.Random(1).randbytes(4096))
    conn = sqlite3.connect(folder / "foreign.db")
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(folder / "emptysql.db")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("DROP TABLE t")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(folder / "newer.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    small = SyntheticSweep(temperatures=(1 / 512,), batch_sizes=(16, 32), seeds=(0,), epochs=2)
    write_synthetic_sweep(folder / "store.db", small)
    write_synthetic_sweep(folder / "tampered.db", small)
    conn = sqlite3.connect(folder / "tampered.db")  # a stored metric edited outside sgdtemp
    conn.execute("UPDATE runs SET metrics = replace(metrics, '0.', '1.') WHERE rowid = 1")
    conn.commit()
    conn.close()
    (folder / "spec.toml").write_text(
        'dataset = "digits"\nmodel = "mlp"\n[model_args]\nwidth = 8\n'
        "[grid]\nlrs = [0.1]\nbatch_sizes = [16]\n"
    )
    (folder / "a_file.txt").write_text("a user's file\n")
    (folder / "monitor.jsonl").write_text(  # a monitor log: step records as JSONLSink writes them
        "".join(f'{{"step": {k}, "temperature": 0.003125, "lr": 0.1}}\n' for k in range(1, 4))
    )
    return folder
