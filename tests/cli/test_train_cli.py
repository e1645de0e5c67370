"""`sgdtemp train`: in-process runs on a small Fashion-MNIST subset, errors, one real process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sgdtemp.cli import main

FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="Debian dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)",
)
SMALL = ["--dataset", "fashion-mnist", "--train-subset", "300", "--heldout", "200"]


def _run(capsys, *args):
    code = main(["train", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@needs_fmnist
def test_train_json_record_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = _run(
        capsys,
        *SMALL,
        "--model",
        "mlp",
        "--width",
        "32",
        "--lr",
        "0.1",
        "--batch-size",
        "16",
        "--epochs",
        "2",
        "--momentum",
        "0.5",
        "--seed",
        "3",
        "--eval-sets",
        "heldout,test,corrupt:gaussian_noise:3",
        "--out",
        str(out),
        "--json",
    )
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record == json.loads((out / "record.json").read_text())
    assert record["status"] == "ok"
    assert record["temperature"] == pytest.approx(0.1 / (16 * 0.5))
    assert (record["lr"], record["batch_size"], record["momentum"], record["seed"]) == (
        0.1,
        16,
        0.5,
        3,
    )
    assert [e["epoch"] for e in record["epochs"]] == [0, 1, 2]
    first, last = record["epochs"][0], record["epochs"][-1]
    assert set(last) >= {"train", "heldout", "test", "corrupt"}
    assert set(last["corrupt"]) == {"gaussian_noise:3"}
    assert last["train"]["loss"] < first["train"]["loss"]
    assert record["checkpoint"] == str(out / "checkpoint.pt")
    assert record["confounds_temperature"] is False

    from sgdtemp.data import load_dataset
    from sgdtemp.train import evaluate, load_checkpoint

    ckpt = load_checkpoint(record["checkpoint"], model_name="mlp")
    c = ckpt.config
    assert (c["dataset"], c["in_shape"], c["n_classes"]) == ("fashion-mnist", [1, 28, 28], 10)
    assert (c["lr"], c["batch_size"], c["momentum"], c["weight_decay"], c["seed"]) == (
        0.1,
        16,
        0.5,
        0.0,
        3,
    )
    # the config rebuilds the same data, on which the saved model reproduces the record
    splits = load_dataset(
        c["dataset"],
        root=c["data_root"],
        heldout=c["heldout"],
        train_subset=c["train_subset"],
        seed=c["data_seed"],
    )
    again = evaluate(ckpt.model, splits.heldout.x, splits.heldout.y)
    assert again["loss"] == pytest.approx(last["heldout"]["loss"], rel=1e-5)
    assert again["acc"] == last["heldout"]["acc"]


@needs_fmnist
def test_train_is_reproducible_and_quiet_without_a_tty(tmp_path, capsys):
    args = [
        *SMALL,
        "--model",
        "cnn",
        "--width",
        "4",
        "--lr",
        "0.05",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--eval-sets",
        "heldout",
        "--device",
        "cpu",
    ]
    assert _run(capsys, *args, "--out", str(tmp_path / "a"))[0] == 0
    code, stdout, stderr = _run(capsys, *args, "--out", str(tmp_path / "b"))
    assert code == 0
    assert stderr == ""  # no progress bar when stderr is not a terminal
    assert "wrote" in stdout
    a, b = (json.loads((tmp_path / d / "record.json").read_text()) for d in "ab")
    assert a["epochs"] == b["epochs"]
    wa, wb = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in "ab")
    assert all(torch.equal(wa["state_dict"][k], wb["state_dict"][k]) for k in wa["state_dict"])


@needs_fmnist
def test_batchnorm_run_is_flagged(tmp_path, capsys):
    code, stdout, stderr = _run(
        capsys,
        *SMALL,
        "--model",
        "mlp",
        "--width",
        "8",
        "--norm",
        "batch",
        "--lr",
        "0.1",
        "--batch-size",
        "50",
        "--epochs",
        "1",
        "--eval-sets",
        "heldout",
        "--out",
        str(tmp_path / "bn"),
        "--json",
    )
    assert code == 0
    assert json.loads(stdout)["confounds_temperature"] is True
    assert "warning" in stderr and "batch size" in stderr


@needs_fmnist
def test_diverged_run_is_recorded(tmp_path, capsys):
    code, stdout, stderr = _run(
        capsys,
        *SMALL,
        "--model",
        "mlp",
        "--lr",
        "1e6",
        "--batch-size",
        "10",
        "--epochs",
        "3",
        "--eval-sets",
        "heldout",
        "--out",
        str(tmp_path / "d"),
        "--json",
    )
    assert code == 0
    assert json.loads(stdout)["status"] == "diverged"
    assert "diverged" in stderr


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--dataset", "imagenet"], "unknown dataset"),
        (["--model", "vgg"], "unknown model"),
        (["--lr", "0"], "--lr"),
        (["--lr", "-0.1"], "--lr"),
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "301"], "larger than the training set"),
        (["--eval-sets", "heldout,valid"], "unknown eval set"),
        (["--eval-sets", "corrupt:fog:9"], "severity"),
        (["--momentum", "1"], "--momentum"),
        (["--dataset", "mnist", "--data-root", "EMPTY"], "not found"),
        (["--width", "0"], "width"),
    ],
)
def test_bad_input_is_one_line_exit_2_before_training(tmp_path, capsys, args, match):
    if "--dataset" not in args or "mnist" in args:
        if not (FMNIST / "train-images-idx3-ubyte.gz").is_file() and "--batch-size" in args:
            pytest.skip("Fashion-MNIST is not installed")
    args = [a if a != "EMPTY" else str(tmp_path) for a in args]
    base = {
        "--dataset": "fashion-mnist",
        "--model": "mlp",
        "--lr": "0.1",
        "--batch-size": "10",
        "--epochs": "1",
        "--train-subset": "300",
        "--heldout": "200",
    }
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    flat = [t for kv in base.items() for t in kv]
    out = tmp_path / "out"
    code, stdout, stderr = _run(capsys, *flat, "--out", str(out))
    assert code == 2
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert match in stderr
    assert not out.exists()  # nothing written: the error came before any work


def test_argparse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dataset", "digits", "--model", "mlp", "--lr", "x"])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@needs_fmnist
def test_console_script_subprocess(tmp_path):
    script = Path(sys.executable).parent / "sgdtemp"
    if not script.is_file():
        pytest.skip(f"console script {script} is not installed")
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            str(script),
            "train",
            *SMALL,
            "--model",
            "mlp",
            "--width",
            "16",
            "--lr",
            "0.1",
            "--batch-size",
            "32",
            "--epochs",
            "1",
            "--eval-sets",
            "test",
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["status"] == "ok"
    assert (out / "checkpoint.pt").is_file() and (out / "record.json").is_file()


@needs_fmnist
@pytest.mark.filterwarnings("ignore::sgdtemp.monitor.TemperatureWarning")
def test_train_with_the_monitor_writes_its_log_and_record(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = _run(
        capsys, *SMALL, "--model", "mlp", "--width", "16", "--lr", "0.1", "--batch-size", "20",
        "--epochs", "2", "--monitor", "--monitor-every", "5", "--monitor-probe", "64",
        "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    record = json.loads(stdout)
    probes = record["monitor"]["probes"]
    assert [p["step"] for p in probes] == [5, 10, 15, 20, 25, 30]
    assert probes[0]["temperature"] == pytest.approx(0.1 / 20)
    lines = (out / "monitor.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["meta"]["probe_examples"] == 64
    assert main(["monitor", str(out / "monitor.jsonl"), "--out", str(out / "page")]) == 0
    assert (out / "page" / "monitor.html").is_file()


def test_monitor_every_needs_monitor(tmp_path, capsys):
    code, stdout, stderr = _run(
        capsys, *SMALL, "--model", "mlp", "--lr", "0.1", "--batch-size", "10", "--epochs", "1",
        "--monitor-every", "5", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2 and "--monitor-every needs --monitor" in stderr
