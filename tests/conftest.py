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
