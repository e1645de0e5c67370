"""The Lightning callback in a real Lightning run: records, TensorBoard and MLflow loggers."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from sgdtemp.errors import UserError
from sgdtemp.integrations.lightning import TemperatureCallback
from sgdtemp.monitor import JSONLSink, read_log
from tests.monitor.conftest import make_problem

# Lightning's own notices about a tiny CPU run (few workers, small log interval), Lightning
# 2.6 using torch 2.13's deprecated pytree LeafSpec, and the monitor's notice that B is above
# 2 B_noise on this problem.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*LeafSpec.* is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*number of training batches.*:UserWarning"),
    pytest.mark.filterwarnings("ignore::sgdtemp.monitor.TemperatureWarning"),
]


class Classifier(pl.LightningModule):
    def __init__(self, net, lr=0.05, momentum=0.9):
        super().__init__()
        self.net, self.lr, self.momentum = net, lr, momentum

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=6, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_lightning_run_logs_to_its_loggers_and_jsonl(tmp_path, mlflow_uri):
    net, x, y = make_problem(256)
    module = Classifier(net.float())
    x = x.float()
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    tb = TensorBoardLogger(tmp_path / "tb", name="run")
    mlf = MLFlowLogger(experiment_name="lightning-test", tracking_uri=mlflow_uri)
    callback = TemperatureCallback(
        (x[:64], y[:64]), F.cross_entropy, sinks=[JSONLSink(tmp_path / "log.jsonl")], every=4
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accumulate_grad_batches=2,
        log_every_n_steps=2,
        logger=[tb, mlf],
        callbacks=[callback],
        accelerator="cpu",
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)
    assert trainer.global_step == 16  # 2 epochs x 16 batches / 2 accumulated
    log = read_log(tmp_path / "log.jsonl")
    steps = [r["step"] for r in log.records]
    # every log_every_n_steps, and the steps where StepLR halves T (a jump, always recorded)
    assert steps == [2, 4, 6, 7, 8, 10, 12, 13, 14, 16]
    jumps = [r["step"] for r in log.records if "temperature changed" in str(r.get("events"))]
    assert jumps == [7, 13]
    assert [r["step"] for r in log.probes] == [4, 8, 12, 16]
    print([(r["step"], r["lr"]) for r in log.records])
    for r in log.records:
        lr = 0.05 * 0.5 ** ((r["step"] - 1) // 6)  # the lr this step used (StepLR per step)
        assert r["batch_size"] == 32 and r["lr"] == pytest.approx(lr)
        assert r["temperature"] == pytest.approx(lr / (32 * 0.1))
        assert isinstance(r["loss"], float)
    assert log.meta["framework"] == "lightning" and log.meta["module"] == "Classifier"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(tb.log_dir)
    events.Reload()
    temps = events.Scalars("sgdtemp/temperature")
    assert [e.step for e in temps] == steps
    assert [e.step for e in events.Scalars("sgdtemp/stability_ratio")] == [4, 8, 12, 16]

    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri=mlflow_uri).get_metric_history(
        mlf.run_id, "sgdtemp/noise_scale"
    )
    assert sorted(m.step for m in history) == [4, 8, 12, 16]
    by_step = {m.step: m.value for m in history}
    assert by_step[8] == pytest.approx(log.probes[1]["noise_scale"])


def test_a_bad_probe_fails_before_the_first_step(tmp_path):
    net, x, y = make_problem(64)
    module = Classifier(net.float())
    loader = DataLoader(TensorDataset(x.float(), y), batch_size=16)
    callback = TemperatureCallback((torch.zeros(32, 5), y[:32]), F.cross_entropy)
    trainer = pl.Trainer(
        max_epochs=1, logger=False, callbacks=[callback], accelerator="cpu",
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
    )  # fmt: skip
    with pytest.raises(UserError, match="the probe does not fit"):
        trainer.fit(module, loader)
    assert trainer.global_step == 0
