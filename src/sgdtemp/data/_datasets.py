"""Image datasets as tensors, with a seeded held-out split of the training set.

Sources (``name`` -> where the files come from):

- ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``
  (the offline default), else ``<cache>/fashion-mnist`` filled by :func:`download`, or any folder
  passed as ``root``.
- ``mnist``: any folder with the four MNIST-format IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
  plain or ``.gz``); default ``<cache>/mnist``.
- ``cifar10``: ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py`` folder (or a
  folder holding either); default ``<cache>/cifar10``.
- ``digits``: scikit-learn's bundled ``load_digits`` (1797 images of 8x8 pixels, values 0..16,
  scaled by 1/16). It has no official test split, so a fixed split stands in for one: a
  permutation seeded with 0 (independent of ``seed``) puts 297 images in the test set and 1500 in
  the training set, so every run is scored on the same test images.

Splits: the official training set is permuted with ``numpy.random.default_rng(seed)``; the first
``heldout`` images of that permutation form the held-out set (sampling shift: same distribution,
unseen), the rest the training set, in permutation order, so ``train_subset=k`` is its first
``k`` images and smaller subsets are nested in larger ones. The test set is the official one, in
file order. Nothing is cached: the files are decoded straight into ``uint8`` arrays (no copy
of the raw bytes), converted to ``float32`` once, chunk by chunk, and the ``uint8`` arrays are
dropped, so a process holds the float32 splits and nothing else (load a dataset once per
process and reuse the splits, as the sweep workers do).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from sgdtemp.data._cifar import CIFAR10_FOLDER, CIFAR10_TARBALL, find_cifar10, read_cifar10
from sgdtemp.data._download import cache_root
from sgdtemp.data._idx import read_idx
from sgdtemp.errors import UserError

__all__ = ["ImageDataset", "DataSplits", "DATASETS", "DEBIAN_FASHION_MNIST", "load_dataset"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DIGITS_TEST_SIZE = 297  # images in the fixed digits test split
DIGITS_SPLIT_SEED = 0  # seed of that split; not the `seed` argument


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images and integer labels (compared by identity, since tensors have no single truth value).

    Attributes:
        name: where it comes from, e.g. ``"fashion-mnist:train"`` or
            ``"fashion-mnist:corrupt:fog:3"``.
        x: images ``(N, C, H, W)`` ``float32`` in ``[0, 1]``.
        y: labels ``(N,)`` ``int64`` in ``0 .. n_classes - 1``.
        n_classes: number of classes of the dataset (not only those present in ``y``).
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    n_classes: int

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 1 or self.x.shape[0] != self.y.shape[0]:
            raise UserError(
                f"dataset {self.name}: x must be (N, C, H, W) and y (N,), got "
                f"{tuple(self.x.shape)} and {tuple(self.y.shape)}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)
class DataSplits:
    """The three splits of one dataset.

    Attributes:
        train: training images (the official training set minus ``heldout``, maybe subsampled).
        heldout: a seeded held-out part of the official training set (sampling shift).
        test: the official test set.
    """

    train: ImageDataset
    heldout: ImageDataset
    test: ImageDataset


@dataclass(frozen=True)
class _Raw:
    """Decoded files of one dataset, ``uint8`` images: dropped once the splits are built."""

    x_train: npt.NDArray[np.uint8]  # (N, C, H, W)
    y_train: npt.NDArray[np.int64]  # (N,)
    x_test: npt.NDArray[np.uint8]
    y_test: npt.NDArray[np.int64]
    n_classes: int
    scale: float  # pixel value that maps to 1.0


def _freeze(*arrays: npt.NDArray[np.generic]) -> None:
    for array in arrays:
        array.setflags(write=False)


# ---------------------------------------------------------------- MNIST-format IDX folders


def _idx_file(folder: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``folder``: gzip or plain, ``-idx`` or ``.idx`` spelling."""
    dotted = stem.replace("-idx", ".idx")
    for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_files(folder: Path) -> tuple[Path, ...] | None:
    files = [_idx_file(folder, stem) for stem in IDX_STEMS]
    return None if any(f is None for f in files) else tuple(f for f in files if f is not None)


def _read_idx_set(files: tuple[Path, ...]) -> _Raw:
    with ThreadPoolExecutor(max_workers=len(files)) as pool:  # zlib releases the GIL
        x_train, y_train, x_test, y_test = pool.map(read_idx, files)
    for images, labels, which in ((x_train, y_train, 0), (x_test, y_test, 2)):
        if images.ndim != 3 or images.dtype != np.uint8:
            raise UserError(
                f"IDX file {files[which]} must hold (N, H, W) uint8 images, got "
                f"{images.shape} {images.dtype}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"IDX file {files[which + 1]} must hold integer labels")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise UserError(
                f"IDX file {files[which + 1]} must hold {images.shape[0]} labels, got shape "
                f"{labels.shape}"
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"IDX images in {files[0].parent} differ in size between train and test")
    y_tr, y_te = y_train.astype(np.int64), y_test.astype(np.int64)
    if min(y_tr.min(initial=0), y_te.min(initial=0)) < 0:
        raise UserError(f"IDX labels in {files[1].parent} must not be negative")
    return _Raw(
        x_train=x_train[:, None].astype(np.uint8, copy=False),  # typed; no copy
        y_train=y_tr,
        x_test=x_test[:, None].astype(np.uint8, copy=False),
        y_test=y_te,
        n_classes=int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1,
        scale=255.0,
    )


def _idx_loader(
    name: str, default_folders: Callable[[], tuple[Path, ...]], hint: str
) -> Callable[[Path | None], _Raw]:
    torchvision_raw = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}[name]

    def load(root: Path | None) -> _Raw:
        if root is None:
            folders = default_folders()
        else:
            folders = (root, root / name, root / torchvision_raw / "raw")
        for folder in folders:
            files = _idx_files(folder)
            if files is not None:
                return _read_idx_set(files)
        where = " or ".join(str(f) for f in folders)
        raise UserError(
            f"{name} not found: no {IDX_STEMS[0]}[.gz] and the 3 other IDX files in {where}; {hint}"
        )

    return load


def _fashion_folders() -> tuple[Path, ...]:
    return (DEBIAN_FASHION_MNIST, cache_root() / "fashion-mnist")


def _mnist_folders() -> tuple[Path, ...]:
    return (cache_root() / "mnist",)


# ---------------------------------------------------------------- CIFAR-10 and digits


def _load_cifar10(root: Path | None) -> _Raw:
    where = cache_root() / "cifar10" if root is None else root
    source = find_cifar10(where)
    if source is None:
        raise UserError(
            f"cifar10 not found in {where} (looked for {CIFAR10_TARBALL} or a {CIFAR10_FOLDER} "
            "folder); pass --data-root PATH to the tarball or folder, or run "
            "`sgdtemp download cifar10`"
        )
    x_train, y_train, x_test, y_test = read_cifar10(source)
    return _Raw(x_train, y_train, x_test, y_test, n_classes=10, scale=255.0)


@functools.lru_cache(maxsize=1)
def _load_digits_cached() -> _Raw:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise UserError(
            "dataset digits needs scikit-learn; install it with `pip install scikit-learn`"
        ) from err
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(labels))
    test, train = np.sort(order[:DIGITS_TEST_SIZE]), np.sort(order[DIGITS_TEST_SIZE:])
    raw = _Raw(images[train], labels[train], images[test], labels[test], n_classes=10, scale=16.0)
    _freeze(raw.x_train, raw.y_train, raw.x_test, raw.y_test)
    return raw


def _load_digits(root: Path | None) -> _Raw:
    del root  # bundled with scikit-learn
    return _load_digits_cached()


_FASHION_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist`, run "
    "`sgdtemp download fashion-mnist`, or pass --data-root DIR"
)
_MNIST_HINT = "run `sgdtemp download mnist` or pass --data-root DIR holding the four IDX files"

_LOADERS: dict[str, Callable[[Path | None], _Raw]] = {
    "fashion-mnist": _idx_loader("fashion-mnist", _fashion_folders, _FASHION_HINT),
    "mnist": _idx_loader("mnist", _mnist_folders, _MNIST_HINT),
    "cifar10": _load_cifar10,
    "digits": _load_digits,
}
_DEFAULT_HELDOUT: dict[str, int | float] = {
    "fashion-mnist": 10_000,
    "mnist": 10_000,
    "cifar10": 10_000,
    "digits": 0.2,
}
_ALIASES = {"fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist", "cifar-10": "cifar10"}

DATASETS: tuple[str, ...] = tuple(_LOADERS)


def canonical_name(name: str) -> str:
    """The registry spelling of a dataset name; raises :class:`UserError` for unknown names."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in _LOADERS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return key


# ---------------------------------------------------------------- splits


def _as_number(value: object) -> object:
    """NumPy scalars as Python numbers (configs and CLIs produce both)."""
    if isinstance(value, np.integer | np.floating):
        return value.item()
    return value


def _heldout_count(heldout: object, n_train: int, name: str) -> int:
    heldout = _as_number(heldout)
    if isinstance(heldout, bool) or not isinstance(heldout, int | float):
        raise UserError(f"heldout must be a count or a fraction in (0, 1), got {heldout!r}")
    if isinstance(heldout, float):
        if not 0.0 < heldout < 1.0:
            raise UserError(f"heldout fraction must lie in (0, 1), got {heldout}")
        count = round(heldout * n_train)
    elif heldout < 0:
        raise UserError(f"heldout must be a count >= 0 or a fraction in (0, 1), got {heldout}")
    else:
        count = heldout
    if count >= n_train:
        raise UserError(
            f"heldout {heldout} leaves no training images: {name} has {n_train} official "
            f"training images; choose 0 <= heldout < {n_train}"
        )
    return count


# Images converted to float32 per chunk: the only uint8 copy is one chunk (~6 MB for 28x28).
_CONVERT_CHUNK = 8192


def _to_dataset(
    name: str,
    x: npt.NDArray[np.uint8],
    y: npt.NDArray[np.int64],
    raw: _Raw,
    index: npt.NDArray[np.intp] | None,
) -> ImageDataset:
    """``x[index] / scale`` as ``float32`` (``uint8`` -> ``float32`` once, chunk by chunk)."""
    n = x.shape[0] if index is None else index.shape[0]
    images = torch.empty((n, *x.shape[1:]), dtype=torch.float32)
    out = images.numpy()
    for start in range(0, n, _CONVERT_CHUNK):
        stop = min(start + _CONVERT_CHUNK, n)
        out[start:stop] = x[start:stop] if index is None else x.take(index[start:stop], axis=0)
    images.div_(raw.scale)  # the same float32 division as before chunking: identical values
    labels = y.copy() if index is None else y[index]
    return ImageDataset(name, images, torch.from_numpy(labels), raw.n_classes)


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    heldout: int | float | None = None,
    train_subset: int | None = None,
    seed: int = 0,
    test_subset: int | None = None,
) -> DataSplits:
    """Load a dataset as train / held-out / test tensors.

    Args:
        name: one of :data:`DATASETS` (``fashion-mnist``, ``mnist``, ``cifar10``, ``digits``).
        root: where the files are (see the module docstring); default: the dataset's standard
            places. Not used for ``digits``.
        heldout: images of the official training set held out, as a count (``int``) or a
            fraction (``float`` in (0, 1)); default 10000, or 20 % for ``digits``.
        train_subset: keep only the first ``k`` training images of the seeded permutation
            (for fast CPU runs); default all.
        seed: seed of the permutation that picks the held-out set and the subset.
        test_subset: keep only the first ``k`` images of the official test set (and so of
            every corrupted copy of it); default all.

    Returns:
        The splits, ``float32`` images ``(N, C, H, W)`` in ``[0, 1]`` and ``int64`` labels.

    Raises:
        UserError: for an unknown name, bad ``heldout`` / ``train_subset`` / ``seed``, or
            missing or damaged files (the message names the path and how to get the data).

    Example:
        >>> splits = load_dataset("digits", train_subset=100, seed=1)
        >>> len(splits.train), len(splits.heldout), len(splits.test)
        (100, 300, 297)
        >>> tuple(splits.train.x.shape[1:]), splits.train.x.dtype, splits.train.n_classes
        ((1, 8, 8), torch.float32, 10)
    """
    key = canonical_name(name)
    seed, train_subset = _as_number(seed), _as_number(train_subset)  # type: ignore[assignment]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    if train_subset is not None and (
        isinstance(train_subset, bool) or not isinstance(train_subset, int) or train_subset < 1
    ):
        raise UserError(f"train_subset must be a positive integer, got {train_subset!r}")
    test_subset = _as_number(test_subset)  # type: ignore[assignment]
    if test_subset is not None and (
        isinstance(test_subset, bool) or not isinstance(test_subset, int) or test_subset < 1
    ):
        raise UserError(f"test_subset must be a positive integer, got {test_subset!r}")
    held = _DEFAULT_HELDOUT[key] if heldout is None else heldout
    _heldout_count(held, 2**62, key)  # type and range checks before reading any file
    raw = _LOADERS[key](None if root is None else Path(root).expanduser())
    n_train = raw.y_train.shape[0]
    n_held = _heldout_count(held, n_train, key)
    order = np.random.default_rng(seed).permutation(n_train)
    held_index, train_index = order[:n_held], order[n_held:]
    del order
    if train_subset is not None:
        if train_subset > train_index.shape[0]:
            raise UserError(
                f"train_subset {train_subset} exceeds the {train_index.shape[0]} training images "
                f"of {key} left after holding out {n_held}; choose at most {train_index.shape[0]}"
            )
        train_index = train_index[:train_subset]
    n_test = raw.y_test.shape[0]
    test_index = None if test_subset is None else np.arange(min(test_subset, n_test))
    # the decoded uint8 arrays go out of scope here: nothing but the float32 splits stays
    return DataSplits(
        train=_to_dataset(f"{key}:train", raw.x_train, raw.y_train, raw, train_index),
        heldout=_to_dataset(f"{key}:heldout", raw.x_train, raw.y_train, raw, held_index),
        test=_to_dataset(f"{key}:test", raw.x_test, raw.y_test, raw, test_index),
    )
