"""Shared test setup.

Tests run torch on one intra-op thread: the suite's tensors are small, where a second thread
only adds synchronization (10-25x slower simulations were measured on a loaded 2-core machine),
and one thread keeps floating-point reductions in a fixed order.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory):
    """An empty MLflow SQLite tracking store, made once (its schema migrations take seconds)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "template.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(_mlflow_template, tmp_path):
    """A fresh local MLflow tracking store (a copy of the template) as a ``sqlite:///`` URI."""
    import shutil

    path = tmp_path / "mlflow.db"
    shutil.copyfile(_mlflow_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test leaves ``os.environ`` as it found it.

    Libraries write process-wide state behind a test's back: ``mlflow.set_experiment`` (called by
    the transformers Trainer's MLflow callback) exports ``MLFLOW_EXPERIMENT_ID``, which then points
    the next test, and every subprocess a test starts, at an experiment of another store;
    Lightning's ``MLFlowLogger`` sets MLflow's tracking store for the whole process.
    """
    import os
    import sys

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    if "mlflow" in sys.modules:  # and its module state: the active experiment, run and store
        import mlflow

        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.tracking.fluent._active_experiment_id = None  # cached beside the variable
        mlflow.tracking._tracking_service.utils._tracking_uri = None  # Lightning's logger sets it
