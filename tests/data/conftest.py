"""Fixtures for the data layer: tiny IDX / CIFAR files written by hand, real Fashion-MNIST."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``, written from the format description (not the reader)."""
    header = bytes([0, 0, IDX_TYPE_CODES[array.dtype], array.ndim])
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as IDX, gzip-compressed when the name ends in ``.gz``."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def make_mnist_folder(
    folder: Path, *, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Four MNIST-format files of random images in ``folder``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    arrays["train-labels-idx1-ubyte"][:10] = np.arange(10)  # every class present
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in arrays.items():
        write_idx(folder / (stem + (".gz" if gz else "")), array)
    return arrays


def cifar_batches(n_per_batch: int = 8, seed: int = 0) -> dict[str, dict[str, object]]:
    """Six CIFAR-10 python batches (dicts as in the official pickles), tiny."""
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {
        name: {
            "batch_label": name,
            "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, n_per_batch)],
        }
        for name in names
    }


def write_cifar_folder(
    folder: Path, batches: dict[str, dict[str, object]], *, protocol: int = 2
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, entry in batches.items():
        (folder / name).write_bytes(pickle.dumps(entry, protocol=protocol))
    return folder


def write_cifar_tarball(path: Path, batches: dict[str, dict[str, object]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, entry in batches.items():
            blob = pickle.dumps(entry, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


@pytest.fixture
def idx_writer() -> Callable[[Path, np.ndarray], Path]:
    """``write_idx(path, array)``: IDX bytes built by hand, gzip when the name ends in .gz."""
    return write_idx


@pytest.fixture
def idx_encoder() -> Callable[[np.ndarray], bytes]:
    return idx_bytes


@pytest.fixture
def mnist_folder() -> Callable[..., dict[str, np.ndarray]]:
    """``make(folder, n_train=60, n_test=20, gz=True, seed=0)`` -> the arrays written."""
    return make_mnist_folder


@pytest.fixture
def cifar_files() -> dict[str, Callable[..., object]]:
    """Builders of tiny CIFAR-10 python batches, folders and tarballs."""
    return {"batches": cifar_batches, "folder": write_cifar_folder, "tarball": write_cifar_tarball}


@pytest.fixture
def fashion_mnist_available() -> None:
    """Skip unless Debian's dataset-fashion-mnist is installed."""
    if not (DEBIAN_FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"{DEBIAN_FMNIST} absent: install the Debian package dataset-fashion-mnist")


@pytest.fixture(scope="session")
def fashion_test_batch() -> np.ndarray:
    """The first 128 Fashion-MNIST test images, (128, 1, 28, 28) float32, from the Debian files."""
    path = DEBIAN_FMNIST / "t10k-images-idx3-ubyte.gz"
    if not path.is_file():
        pytest.skip(f"{path} absent: install the Debian package dataset-fashion-mnist")
    with gzip.open(path, "rb") as stream:
        raw = stream.read(16 + 128 * 28 * 28)
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(128, 1, 28, 28)
    return images.astype(np.float32) / 255.0
