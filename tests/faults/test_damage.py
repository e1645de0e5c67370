"""Damaged artefacts: byte flips and truncations of checkpoints and stores are refused, never used.

Oracle: the intact file. After each random damage (seeded) a reader either refuses the file with
one :class:`UserError` line naming it, or returns exactly what the intact file holds (the flip
hit bytes nothing reads: zip padding, SQLite free space). Returning anything else (a changed
weight, a changed metric) fails the test; so does any other exception.
"""

from __future__ import annotations

import random

import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.storage import Store, export_runs
from sgdtemp.train import load_checkpoint
from tests.faults.helpers import flip_bytes

TRIALS = 60


def _checkpoint_view(path):
    ckpt = load_checkpoint(path)
    return ckpt.model_name, ckpt.model_kwargs, ckpt.config, ckpt.metrics, ckpt.model.state_dict()


def _same_checkpoint(a, b) -> bool:
    if a[:4] != b[:4] or a[4].keys() != b[4].keys():
        return False
    return all(torch.equal(a[4][k], b[4][k]) for k in a[4])


def _refused_or_same(read, path, intact, same=lambda a, b: a == b) -> str:
    """``"refused"`` or ``"same"``; anything else fails the test."""
    try:
        got = read(path)
    except UserError as err:
        message = str(err)
        assert "\n" not in message and str(path) in message, message
        return "refused"
    assert same(got, intact), f"{path} was read with different contents"
    return "same"


@pytest.mark.parametrize("kind", ["flip", "truncate"])
def test_damaged_checkpoints_are_refused_or_unchanged(assets, tmp_path, kind):
    source = assets / "checkpoint.pt"
    data = source.read_bytes()
    intact = _checkpoint_view(source)
    rng = random.Random(15)
    outcomes = []
    for trial in range(TRIALS):
        path = tmp_path / f"{trial}.pt"
        if kind == "flip":
            path.write_bytes(flip_bytes(data, rng.choice([1, 1, 2, 8, 200]), rng))
        else:
            path.write_bytes(data[: rng.randrange(len(data))])
        outcomes.append(_refused_or_same(_checkpoint_view, path, intact, _same_checkpoint))
    # most damage lands on data that is read: far more refusals than harmless flips
    assert outcomes.count("refused") >= TRIALS * 0.8, outcomes
    if kind == "truncate":
        assert set(outcomes) == {"refused"}


def _store_view(path):
    with Store(path, readonly=True) as store:
        return [r for r in store.runs()], store.sweeps()


@pytest.mark.parametrize("kind", ["flip", "truncate"])
def test_damaged_stores_are_refused_or_unchanged(assets, tmp_path, kind):
    source = assets / "store.db"
    data = source.read_bytes()
    intact = _store_view(source)
    rng = random.Random(16)
    outcomes = []
    for trial in range(TRIALS):
        path = tmp_path / f"{trial}.db"
        if kind == "flip":
            damaged = flip_bytes(data, rng.choice([1, 1, 2, 8]), rng)
        else:
            damaged = data[: rng.randrange(1, len(data))]
        path.write_bytes(damaged)
        outcomes.append(_refused_or_same(_store_view, path, intact))
        assert path.read_bytes() == damaged  # reading never writes
    assert "refused" in outcomes, outcomes
    if kind == "truncate":
        assert set(outcomes) == {"refused"}


def test_flips_inside_stored_values_are_caught_by_the_row_checksum(assets, tmp_path):
    """A flip inside a metric's digits keeps the file valid SQLite: only the checksum sees it."""
    data = (assets / "store.db").read_bytes()
    at = data.index(b'"trace": ')  # inside the JSON of a run's metrics
    digit = next(i for i in range(at, at + 4000) if data[i : i + 1].isdigit())
    damaged = bytearray(data)
    damaged[digit] = ord("7") if data[digit] != ord("7") else ord("3")
    path = tmp_path / "flipped.db"
    path.write_bytes(bytes(damaged))
    with pytest.raises(UserError, match="do not match their checksum"):
        _store_view(path)
    with pytest.raises(UserError, match="do not match their checksum"):
        export_runs(path, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_a_version_1_checkpoint_is_still_read_and_its_crcs_checked(assets, tmp_path):
    payload = torch.load(assets / "checkpoint.pt", weights_only=True)
    payload["version"] = 1
    del payload["sha256"]
    path = tmp_path / "v1.pt"
    torch.save(payload, path)
    assert _same_checkpoint(_checkpoint_view(path), _checkpoint_view(assets / "checkpoint.pt"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the weights
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="CRC"):
        load_checkpoint(path)
