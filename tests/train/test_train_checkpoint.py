"""Checkpoints: round trip for every model, atomic writes, clear errors for wrong files."""

import os
import warnings
from pathlib import Path

import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.train import checkpoint as ckpt
from sgdtemp.train.checkpoint import load_checkpoint, save_checkpoint
from sgdtemp.train.models import MODELS, build_model

CASES = {
    "mlp": ((1, 6, 6), {"width": 9, "depth": 2}),
    "cnn": ((1, 12, 12), {"width": 3, "norm": "group"}),
    "resnet": ((3, 8, 8), {"width": 4, "blocks": 1}),
}
CONFIG = {
    "dataset": "fashion-mnist",
    "heldout": 100,
    "train_subset": 50,
    "data_seed": 0,
    "lr": 0.1,
    "batch_size": 8,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "seed": 3,
}


def _save(path, name, **extra):
    shape, kwargs = CASES[name]
    kwargs = kwargs | extra
    model = build_model(
        name, in_shape=shape, n_classes=4, generator=torch.Generator().manual_seed(1), **kwargs
    )
    config = CONFIG | {"in_shape": list(shape), "n_classes": 4}
    save_checkpoint(
        path,
        model,
        model_name=name,
        model_kwargs=kwargs,
        config=config,
        metrics={"status": "ok", "epochs": [{"epoch": 0, "train": {"loss": 1.0}}]},
    )
    return model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_round_trip(tmp_path, name):
    path = tmp_path / "c.pt"
    model = _save(path, name)
    loaded = load_checkpoint(path)
    assert loaded.model_name == name
    assert loaded.model_kwargs == CASES[name][1]
    assert loaded.config["in_shape"] == list(CASES[name][0])
    assert loaded.config["dataset"] == "fashion-mnist" and loaded.config["seed"] == 3
    assert loaded.metrics["epochs"][0]["train"]["loss"] == 1.0
    assert not loaded.model.training
    x = torch.rand(3, *CASES[name][0])
    model.eval()
    torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary files left


def test_batchnorm_checkpoint_keeps_running_stats_and_loads_quietly(tmp_path):
    path = tmp_path / "bn.pt"
    with pytest.warns(UserWarning):
        model = _save(path, "mlp", norm="batch")
    model.train()
    model(torch.rand(16, 1, 6, 6))  # move the running statistics
    config = CONFIG | {"in_shape": [1, 6, 6], "n_classes": 4}
    save_checkpoint(
        path,
        model,
        model_name="mlp",
        model_kwargs=CASES["mlp"][1] | {"norm": "batch"},
        config=config,
        metrics={},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_checkpoint(path)
    x = torch.rand(5, 1, 6, 6)
    model.eval()
    torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)


def test_overwrite_is_atomic_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    _save(path, "mlp")
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):  # a fault injected half-way through the write
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(UserError, match="No space left on device"):  # one line, no traceback
        _save(path, "mlp", width=5)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def _one_line_error(path, match, **kwargs):
    """Load ``path`` expecting a UserError: one line that names the file and matches."""
    with pytest.raises(UserError, match=match) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert str(path) in message
    return message


def test_wrong_files_are_one_line_user_errors(tmp_path):
    _one_line_error(tmp_path / "missing.pt", "does not exist; pass the checkpoint.pt")
    _one_line_error(tmp_path, "is a folder")
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    _one_line_error(text, "not a PyTorch checkpoint file")
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    _one_line_error(plain, "not an sgdtemp checkpoint")
    truncated = tmp_path / "cut.pt"
    _save(truncated, "mlp")
    truncated.write_bytes(truncated.read_bytes()[:200])
    _one_line_error(truncated, "truncated or damaged")
    unsafe = tmp_path / "unsafe.pt"  # a pickled object: torch's error is many lines long
    torch.save({"format": ckpt.CHECKPOINT_FORMAT, "obj": Path(".")}, unsafe)
    _one_line_error(unsafe, "holds Python objects other than tensors")
    _save(truncated, "mlp")
    _one_line_error(truncated, "unknown map_location", map_location="nowhere")


@pytest.mark.parametrize("key", ["model_name", "state_dict", "config"])
def test_damaged_payload_is_a_one_line_user_error(tmp_path, key):
    path = tmp_path / "c.pt"
    _save(path, "mlp")
    payload = torch.load(path, weights_only=True)
    del payload[key]
    torch.save(payload, path)
    _one_line_error(path, f"lacks a valid '{key}' entry")


def test_checkpoint_of_another_model_is_a_one_line_user_error(tmp_path):
    path = tmp_path / "c.pt"
    _save(path, "cnn")
    message = _one_line_error(path, "was saved for model cnn, not mlp", model_name="mlp")
    assert "--model cnn" in message
    # weights that do not fit what the metadata rebuilds (torch's own error has many lines)
    payload = torch.load(path, weights_only=True)
    payload["model_kwargs"]["width"] = 5
    torch.save(payload, path)
    _one_line_error(path, "damaged or was edited: its content does not match its sha256")
    _resave(payload, path)  # consistent, as another sgdtemp version might write it
    message = _one_line_error(path, "weights do not fit model cnn")
    assert "saved (3, 1, 2, 2), model (5, 1, 2, 2)" in message
    payload["config"]["in_shape"] = [1, 2]
    _resave(payload, path)
    _one_line_error(path, "cannot be rebuilt: in_shape must be")


def _resave(payload, path):
    """Write an edited payload with a matching content hash."""
    payload["sha256"] = ckpt.content_digest(payload)
    torch.save(payload, path)


def test_save_needs_shape_and_a_known_model(tmp_path):
    model = build_model("mlp", in_shape=(1, 2, 2), n_classes=2)
    with pytest.raises(UserError, match="in_shape"):
        save_checkpoint(
            tmp_path / "c.pt",
            model,
            model_name="mlp",
            model_kwargs={},
            config={"n_classes": 2},
            metrics={},
        )
    with pytest.raises(UserError, match="unknown model"):
        save_checkpoint(
            tmp_path / "c.pt",
            model,
            model_name="vgg",
            model_kwargs={},
            config={"in_shape": [1, 2, 2], "n_classes": 2},
            metrics={},
        )
    with pytest.raises(UserError, match="cannot write"):
        save_checkpoint(
            tmp_path / "no" / "c.pt",
            model,
            model_name="mlp",
            model_kwargs={},
            config={"in_shape": [1, 2, 2], "n_classes": 2},
            metrics={},
        )
    assert not os.path.exists(tmp_path / "c.pt")
