"""Data for real-model experiments: image datasets, splits, domain-shift corruptions, downloads.

Everything runs offline from Debian's ``dataset-fashion-mnist`` or scikit-learn's digits;
MNIST and CIFAR-10 load from a user path or a verified download. Sampling shift comes from a
seeded held-out part of the training set, domain shift from a seeded CIFAR-10-C-style
corruption suite applied to the test set. This layer reads (and downloads) files; it never
prints.

Example:
    >>> from sgdtemp.data import load_dataset, eval_set
    >>> splits = load_dataset("digits", seed=0)
    >>> tuple(splits.train.x.shape), tuple(splits.test.x.shape)
    ((1200, 1, 8, 8), (297, 1, 8, 8))
    >>> eval_set(splits, "corrupt:gaussian_noise:2", seed=0).name
    'digits:corrupt:gaussian_noise:2'
"""

from __future__ import annotations

from sgdtemp.data._corruptions import CORRUPTIONS, SEVERITIES, Corruption, corrupt
from sgdtemp.data._datasets import DATASETS, DataSplits, ImageDataset, load_dataset
from sgdtemp.data._download import (
    REMOTE_DATASETS,
    RemoteDataset,
    RemoteFile,
    cache_root,
    download,
)
from sgdtemp.data._eval import eval_set, parse_eval_sets
from sgdtemp.data._idx import read_idx

__all__ = [
    # datasets and splits
    "DATASETS",
    "DataSplits",
    "ImageDataset",
    "load_dataset",
    # evaluation sets and domain shift
    "CORRUPTIONS",
    "SEVERITIES",
    "Corruption",
    "corrupt",
    "eval_set",
    "parse_eval_sets",
    # files
    "REMOTE_DATASETS",
    "RemoteDataset",
    "RemoteFile",
    "cache_root",
    "download",
    "read_idx",
]
