"""`sgdtemp curvature` and `sgdtemp shift` on a small checkpoint of the digits data set."""

from __future__ import annotations

import json

import pytest
import torch

from sgdtemp.cli import main
from sgdtemp.data import load_dataset
from sgdtemp.train import build_model, save_checkpoint

N = "200"  # --max-examples: keeps every command to a few seconds


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _digits_checkpoint(folder, model_kwargs, *, train_lr, steps, **config):
    """An MLP trained by full-batch SGD with weight decay 1e-2 on digits, saved in ``folder``.

    ``config`` adds to the checkpoint's recorded training config.
    """
    splits = load_dataset("digits", seed=0)
    model = build_model(
        "mlp",
        in_shape=(1, 8, 8),
        n_classes=10,
        generator=torch.Generator().manual_seed(0),
        **model_kwargs,
    )
    opt = torch.optim.SGD(model.parameters(), lr=train_lr, weight_decay=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(splits.train.x), splits.train.y).backward()
        opt.step()
    path = folder / "checkpoint.pt"
    config = {
        "dataset": "digits",
        "heldout": len(splits.heldout.y),
        "train_subset": None,
        "data_seed": 0,
        "in_shape": [1, 8, 8],
        "n_classes": 10,
        **config,
        "weight_decay": 1e-2,
    }
    save_checkpoint(
        path, model, model_name="mlp", model_kwargs=model_kwargs, config=config, metrics={}
    )
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Multinomial logistic regression (mlp with depth 0) near its L2-regularized minimum.

    A smooth, convex model, so the shift's descent converges; ReLU networks have piecewise
    smooth losses on which the gradient norm can stall (reported as converged: false).
    """
    return _digits_checkpoint(
        tmp_path_factory.mktemp("run"),
        {"depth": 0},
        train_lr=1.0,
        steps=100,
        lr=0.5,
        batch_size=32,
        momentum=0.0,
    )


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_curvature_json(checkpoint, capsys):
    code = main(
        [
            "curvature",
            str(checkpoint),
            "--dataset",
            "digits",
            "--probes",
            "6",
            "--top-k",
            "3",
            "--max-examples",
            N,
            "--json",
        ]
    )
    assert code == 0
    out = _json(capsys)
    assert set(out["trace"]) == {"value", "stderr", "products"}
    assert out["trace"]["products"] == 6 and out["trace"]["stderr"] > 0
    eig = out["top_eigenvalues"]
    assert len(eig) == 3 and eig == sorted(eig, reverse=True)
    assert out["noise_trace"] > 0
    assert out["lr_sharpness"] == pytest.approx(0.5 * eig[0])
    assert out["examples"] == 200 and out["split"] == "train"
    assert out["seconds"] > 0


def test_curvature_on_a_corrupted_split_and_text_output(checkpoint, capsys):
    code = main(
        [
            "curvature",
            str(checkpoint),
            "--dataset",
            "digits",
            "--split",
            "corrupt:gaussian_noise:3",
            "--probes",
            "2",
            "--top-k",
            "0",
            "--max-examples",
            "50",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "Hessian trace" in text and "noise trace" in text


def test_shift_json(checkpoint, capsys):
    code = main(
        [
            "shift",
            str(checkpoint),
            "--dataset",
            "digits",
            "--eval-set",
            "heldout",
            "--max-examples",
            N,
            "--json",
            "--dtype",
            "float64",
            "--rel-grad-tol",
            "1e-6",
        ]
    )
    assert code == 0
    out = _json(capsys)
    for key in (
        "method",
        "shift_norm",
        "measured_gap",
        "shift_curvature",
        "vertical_shift",
        "grad_norm_at_eval_min",
        "converged",
    ):
        assert key in out
    assert out["method"] == "newton_cg"
    assert out["objective"] == "minimum" and out["weight_decay"] == pytest.approx(1e-2)
    assert out["converged"] is True
    assert out["shift_norm"] > 0 and out["measured_gap"] > 0
    assert out["generalization_gap"] == pytest.approx(
        out["vertical_shift"] + out["measured_gap"], abs=1e-9
    )


def test_shift_proximal_when_asked(checkpoint, capsys):
    code = main(
        [
            "shift",
            str(checkpoint),
            "--dataset",
            "digits",
            "--eval-set",
            "test",
            "--objective",
            "proximal",
            "--mu",
            "0.05",
            "--max-examples",
            "100",
            "--json",
        ]
    )
    assert code == 0
    out = _json(capsys)
    assert out["objective"] == "proximal" and out["mu"] == 0.05


@pytest.fixture(scope="module")
def relu_checkpoint(tmp_path_factory):
    """A one-hidden-layer ReLU MLP near its L2-regularized minimum (a kinked loss)."""
    folder = tmp_path_factory.mktemp("relu")
    return _digits_checkpoint(folder, {"width": 16}, train_lr=0.5, steps=200)


@pytest.mark.parametrize("smoothing", ["auto", "off"])
def test_shift_text_says_how_a_relu_network_descended(relu_checkpoint, capsys, smoothing):
    argv = ["shift", str(relu_checkpoint), "--dataset", "digits", "--eval-set", "test"]
    assert main([*argv, "--max-examples", "100", "--smoothing", smoothing]) == 0
    text = capsys.readouterr().out
    assert "|grad| at eval min" in text
    assert ("softplus continuation" in text) == (smoothing == "auto")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["curvature", "{ckpt}", "--dataset", "fashion-mnist"], "trained on digits"),
        (["curvature", "{ckpt}", "--dataset", "digits", "--probes", "0"], "--probes"),
        (["curvature", "{ckpt}", "--dataset", "digits", "--top-k", "651"], "--top-k"),
        (["curvature", "{missing}", "--dataset", "digits"], "does not exist"),
        (["curvature", "{ckpt}", "--dataset", "digits", "--split", "validation"], "validation"),
        (["shift", "{ckpt}", "--dataset", "digits", "--eval-set", "corrupt:nope:3"], "nope"),
        (["shift", "{ckpt}", "--dataset", "digits", "--eval-set", "elsewhere"], "elsewhere"),
        (["shift", "{ckpt}", "--dataset", "no-such-data", "--eval-set", "test"], "no-such-data"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(checkpoint, tmp_path, capsys, argv, message):
    argv = [a.format(ckpt=checkpoint, missing=tmp_path / "none.pt") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_checkpoint_that_does_not_fit_the_dataset(tmp_path, capsys):
    model = build_model("mlp", in_shape=(1, 28, 28), n_classes=10, width=4)
    path = tmp_path / "other.pt"
    save_checkpoint(
        path,
        model,
        model_name="mlp",
        model_kwargs={"width": 4},
        config={"in_shape": [1, 28, 28], "n_classes": 10},
        metrics={},
    )
    assert main(["curvature", str(path), "--dataset", "digits"]) == 2
    err = capsys.readouterr().err
    assert "expects images" in err and len(err.strip().splitlines()) == 1


def test_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint")
    assert main(["shift", str(path), "--dataset", "digits", "--eval-set", "test"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
