"""Measurements on a trained checkpoint that several commands share."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sgdtemp.errors import UserError

__all__ = ["measure_sharpness"]


def measure_sharpness(
    checkpoint: str | Path,
    *,
    dataset: str | None = None,
    data_root: str | Path | None = None,
    max_examples: int = 2048,
    seed: int = 0,
) -> tuple[float, int]:
    r"""Largest Hessian eigenvalue of a checkpoint's train loss, and its training-set size.

    The Hessian is that of the mean cross-entropy over the first ``max_examples`` training
    images of the checkpoint's own data split (same held-out size, subset and seed), and
    $\lambda_{\max}$ comes from Lanczos with full reorthogonalization.

    Args:
        checkpoint: a checkpoint written by ``sgdtemp train`` or a sweep.
        dataset: the data set to use; must be the checkpoint's (default: the checkpoint's).
        data_root: folder of the data, where the data set needs one.
        max_examples: how many training images define the Hessian.
        seed: seed of the Lanczos start vector.

    Returns:
        ``(lambda_max, n_train)``.

    Raises:
        UserError: for an unreadable checkpoint or a data set other than the checkpoint's.
    """
    from sgdtemp.curvature import HessianOperator, top_eigenvalues
    from sgdtemp.data import load_dataset
    from sgdtemp.data._datasets import canonical_name
    from sgdtemp.train import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    config = ckpt.config
    trained_on = str(config.get("dataset"))
    if dataset is not None and canonical_name(dataset) != canonical_name(trained_on):
        raise UserError(
            f"checkpoint {checkpoint} was trained on {trained_on}, not {dataset}; "
            f"pass --dataset {trained_on} or leave it out"
        )
    splits = load_dataset(
        trained_on,
        root=data_root if data_root is not None else config.get("data_root"),
        heldout=config.get("heldout"),
        train_subset=config.get("train_subset"),
        seed=int(config.get("data_seed", 0) or 0),
    )
    x, y = splits.train.x[:max_examples], splits.train.y[:max_examples]
    hessian = HessianOperator(ckpt.model.eval(), nn.CrossEntropyLoss(), (x, y))
    pairs = top_eigenvalues(hessian, 1, generator=torch.Generator().manual_seed(seed))
    return float(pairs.values[0]), int(len(splits.train.y))
