import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from sgdtemp.cli import main


def run_json(capsys, *argv):
    assert main(["scale", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_keeps_temperature_and_checks_stability(capsys):
    out = run_json(
        capsys, "--lr", "0.1", "--batch-size", "32", "--to-batch-size", "128", "--sharpness", "4"
    )
    assert out["lr"] == pytest.approx(0.4)
    assert out["temperature"] == pytest.approx(0.1 / 32)
    assert out["lr_sharpness"] == pytest.approx(1.6)
    assert out["stable"] is True


def test_momentum_aware(capsys):
    out = run_json(
        capsys, "--lr", "0.01", "--batch-size", "32", "--to-batch-size", "64", "--momentum", "0.9"
    )
    assert out["lr"] == pytest.approx(0.02)
    assert out["temperature"] == pytest.approx(0.01 / (32 * 0.1))


def test_measures_sharpness_from_a_checkpoint(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--lr",
            "0.1",
            "--batch-size",
            "32",
            "--epochs",
            "1",
            "--out",
            str(out_dir),
            "--json",
        ]
    )
    assert code == 0
    capsys.readouterr()
    out = run_json(
        capsys,
        "--lr",
        "0.1",
        "--batch-size",
        "32",
        "--to-batch-size",
        "64",
        "--checkpoint",
        str(out_dir / "checkpoint.pt"),
    )
    # Independent oracle: ARPACK (scipy eigsh) on double-backward Hessian-vector products.
    import numpy as np
    from scipy.sparse.linalg import LinearOperator, eigsh

    from sgdtemp.data import load_dataset
    from sgdtemp.train import load_checkpoint

    ckpt = load_checkpoint(out_dir / "checkpoint.pt")
    cfg = ckpt.config
    splits = load_dataset(
        "digits",
        heldout=cfg.get("heldout"),
        train_subset=cfg.get("train_subset"),
        seed=int(cfg.get("data_seed", 0) or 0),
    )
    model = ckpt.model.double().eval()
    x, y = splits.train.x[:2048].double(), splits.train.y[:2048]
    params = [p for p in model.parameters() if p.requires_grad]
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat_grad = torch.cat([g.reshape(-1) for g in grads])
    n = flat_grad.numel()

    def hvp(v):
        v = torch.as_tensor(np.asarray(v).reshape(-1), dtype=torch.float64)
        out = torch.autograd.grad(flat_grad @ v, params, retain_graph=True)
        return torch.cat([o.reshape(-1) for o in out]).numpy()

    lam = float(
        eigsh(LinearOperator((n, n), matvec=hvp, dtype=np.float64), k=1, which="LA", tol=1e-8)[0][0]
    )
    assert out["sharpness"] == pytest.approx(lam, rel=1e-3)
    assert out["lr_sharpness"] == pytest.approx(0.2 * lam, rel=1e-3)
    assert out["stable"] == (0.2 * lam < 2)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--lr", "0", "--batch-size", "32", "--to-batch-size", "64"], "lr"),
        (["--lr", "0.1", "--batch-size", "32", "--to-batch-size", "0"], "to_batch_size"),
        (
            ["--lr", "0.1", "--batch-size", "32", "--to-batch-size", "64", "--dataset", "digits"],
            "--checkpoint",
        ),
        (
            [
                "--lr",
                "0.1",
                "--batch-size",
                "32",
                "--to-batch-size",
                "64",
                "--checkpoint",
                "nope.pt",
                "--sharpness",
                "1",
            ],
            "not both",
        ),
    ],
)
def test_bad_input_one_line_exit_2(argv, needle):
    proc = subprocess.run(
        [sys.executable, "-m", "sgdtemp", "scale", *argv], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert needle in proc.stderr
