"""Checks before work (sgdtemp.resources) and output folders undone on failure (sgdtemp.files)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.files import make_dirs, remove_created, writable_problem
from sgdtemp.resources import (
    MAX_STEPS,
    format_bytes,
    machine_memory,
    require_device,
    require_memory,
    require_steps,
)


def test_machine_memory_is_physical_memory_capped_by_limits():
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # an independent reading
    have = machine_memory()
    assert 0 < have <= total
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        assert have > 0.25 * total  # no cgroup on a test machine holds less than that


def test_an_address_space_limit_lowers_what_the_machine_has():
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (2**33, 2**33)); "
        "from sgdtemp.resources import machine_memory; print(machine_memory())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) <= 2**33


def test_require_memory_refuses_only_above_the_machine():
    require_memory(1, what="one byte", fix="-")
    require_memory(machine_memory(), what="all of it", fix="-")
    with pytest.raises(UserError, match=r"^--grid 9 needs at least .* of memory; this machine has"):
        require_memory(machine_memory() + 1, what="--grid 9", fix="use less")
    with pytest.raises(UserError, match="use less"):
        require_memory(float("nan"), what="x", fix="use less")


def test_require_steps():
    require_steps(MAX_STEPS, what="x", fix="-")
    with pytest.raises(UserError, match="more than the 1e\\+11 steps"):
        require_steps(MAX_STEPS + 1, what="--epochs 10**20", fix="fewer epochs")
    with pytest.raises(UserError):
        require_steps(float("inf"), what="x", fix="-")


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(80 * 2**60) == "80.0 EiB"
    assert format_bytes(2**70) == "1.02e+03 EiB"


@pytest.mark.parametrize("name", ["auto", "cpu", "cpu:0"])
def test_devices_every_machine_has(name):
    require_device(name)


@pytest.mark.parametrize("name", ["tpu", "gpu", "xla", "meta", "cuda:x", "", "cpu:a"])
def test_unknown_devices(name):
    with pytest.raises(UserError, match="unknown device"):
        require_device(name, option="device")


def test_cuda_is_refused_where_there_is_none():
    if torch.cuda.is_available():
        require_device("cuda")
        with pytest.raises(UserError, match="CUDA device"):
            require_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(UserError, match="--device cuda:1: this machine has no CUDA device"):
            require_device("cuda:1")


def test_make_dirs_reports_what_it_created_and_remove_created_undoes_it(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    assert make_dirs(target) == tmp_path / "a"
    assert make_dirs(target) is None  # existed: nothing to undo
    (target / "f").write_text("x")
    remove_created(tmp_path / "a", keep_files=True)  # files are kept, so is their folder
    assert (target / "f").exists()
    (target / "f").unlink()
    (tmp_path / "a" / "empty").mkdir()
    remove_created(tmp_path / "a", keep_files=True)
    assert not (tmp_path / "a").exists()
    assert make_dirs(target) == tmp_path / "a"
    (target / "f").write_text("x")
    remove_created(tmp_path / "a")
    assert list(tmp_path.iterdir()) == []


def test_writable_problem(tmp_path):
    assert writable_problem(tmp_path) is None
    assert writable_problem(tmp_path / "new" / "deeper") is None
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in writable_problem(tmp_path / "file" / "sub")
    if Path("/sys/kernel").is_dir():  # sysfs refuses new files, even to root
        assert "not writable" in writable_problem("/sys/kernel")
