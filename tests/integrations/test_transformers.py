"""The transformers callback in a real Trainer run: records, TensorBoard and MLflow."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from sgdtemp.errors import UserError
from sgdtemp.integrations.transformers import BatchLoss, TemperatureCallback
from sgdtemp.monitor import read_log

pytestmark = pytest.mark.filterwarnings("ignore::sgdtemp.monitor.TemperatureWarning")

VOCAB, LENGTH = 32, 8


def _data(n, seed=0):
    """Token sequences labelled by whether token 3 occurs in them."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (n, LENGTH), generator=gen)
    mark = torch.rand(n, generator=gen) < 0.5
    ids[mark, torch.randint(0, LENGTH, (int(mark.sum()),), generator=gen)] = 3
    return [
        {"input_ids": ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long),
         "labels": int(mark[i])}
        for i in range(n)
    ]  # fmt: skip


def _model(seed=0, attention="eager"):
    """A tiny BERT; fused attention (SDPA) on the CPU has no double backward, eager has."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=LENGTH, num_labels=2,
        attn_implementation=attention,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def _collate(examples):
    return {
        "input_ids": torch.stack([e["input_ids"] for e in examples]),
        "attention_mask": torch.stack([e["attention_mask"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples]),
    }


def test_trainer_run_is_recorded_in_tensorboard_mlflow_and_jsonl(tmp_path, mlflow_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hf-test")
    train = _data(128)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=8,
        gradient_accumulation_steps=2, num_train_epochs=2, logging_steps=2,
        report_to=["tensorboard", "mlflow"], save_strategy="no", use_cpu=True,
        disable_tqdm=True,
    )  # fmt: skip
    callback = TemperatureCallback(_collate(train[:64]), jsonl=tmp_path / "log.jsonl", every=4)
    trainer = Trainer(
        model=model, args=args, train_dataset=train, data_collator=_collate,
        optimizers=(opt, None), callbacks=[callback],
    )  # fmt: skip
    trainer.train()
    total = trainer.state.global_step
    assert total == 16  # 2 epochs x 128 / (8 x 2)
    log = read_log(tmp_path / "log.jsonl")
    assert log.meta["framework"] == "transformers"
    assert [r["step"] for r in log.probes] == [4, 8, 12, 16]
    for r in log.records:
        lr = 0.1 * (total - (r["step"] - 1)) / total  # the default linear schedule, no warm-up
        assert r["batch_size"] == 16 and r["lr"] == pytest.approx(lr)
        assert r["temperature"] == pytest.approx(lr / (16 * 0.1))
    probe = log.probes[-1]
    assert probe["noise_units"] >= 16 and probe["lambda_max"] is not None

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "out" / "runs" / "sgdtemp"))
    events.Reload()
    for name in ("temperature", "lambda_max", "trace_cov"):
        assert [e.step for e in events.Scalars(f"sgdtemp/{name}")] == log.series(name)[0]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("hf-test").experiment_id])
    history = client.get_metric_history(run.info.run_id, "sgdtemp/temperature")
    assert sorted(m.step for m in history) == [r["step"] for r in log.records]
    assert client.get_metric_history(run.info.run_id, "train/loss") or client.get_metric_history(
        run.info.run_id, "loss"
    )  # the Trainer's own metrics are in the same run


def test_without_double_backward_the_noise_scale_is_still_measured(tmp_path):
    model = _model(attention="sdpa")
    args = TrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no",
        max_steps=2, per_device_train_batch_size=8, disable_tqdm=True,
    )  # fmt: skip
    callback = TemperatureCallback(_collate(_data(32)), every=1)
    trainer = Trainer(
        model=model, args=args, train_dataset=_data(32), data_collator=_collate,
        optimizers=(torch.optim.SGD(model.parameters(), lr=0.1), None), callbacks=[callback],
    )  # fmt: skip
    with pytest.warns(Warning, match="lambda_max failed at step 1"):
        trainer.train()
    record = callback.monitor.probes[-1]
    assert record.noise_units is not None and record.lambda_max is None
    assert "lambda_max failed" in record.probe_error


def test_batch_loss_is_the_models_own_loss():
    model = _model().eval()
    batch = _collate(_data(12))
    wrapped = BatchLoss(model, batch)
    idx = torch.arange(5, 9)
    sub = {k: v[5:9] for k, v in batch.items()}
    assert torch.equal(wrapped(idx)[0], model(**sub).loss)


def test_probe_without_labels_fails_at_attach(tmp_path):
    batch = _collate(_data(16))
    del batch["labels"]
    model = _model()
    callback = TemperatureCallback(batch)
    args = TrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no",
        max_steps=2, per_device_train_batch_size=4, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(
        model=model, args=args, train_dataset=_data(16), data_collator=_collate,
        optimizers=(torch.optim.SGD(model.parameters(), lr=0.1), None), callbacks=[callback],
    )  # fmt: skip
    with pytest.raises(UserError, match="needs its labels"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_probe_and_loss_fn_must_agree():
    with pytest.raises(UserError, match="batch dict as probe"):
        TemperatureCallback((torch.zeros(8, 2), torch.zeros(8)))
