"""The IDX reader against files written by hand from the format description."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from sgdtemp.data import read_idx
from sgdtemp.errors import UserError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip(tmp_path: Path, idx_writer, dtype, gz: bool) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = idx_writer(tmp_path / ("a-idx3" + (".gz" if gz else "")), array)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, array)


def test_gzip_is_detected_by_content_not_name(tmp_path: Path, idx_encoder) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = tmp_path / "compressed-without-suffix"
    path.write_bytes(gzip.compress(idx_encoder(array)))
    np.testing.assert_array_equal(read_idx(path), array)


def test_one_dimensional_labels(tmp_path: Path, idx_writer) -> None:
    labels = np.array([9, 0, 3], dtype=np.uint8)
    np.testing.assert_array_equal(read_idx(idx_writer(tmp_path / "l-idx1", labels)), labels)


BAD_HEADERS = {
    "nonzero_first_byte": bytes([1, 0, 0x08, 1]),
    "nonzero_second_byte": bytes([0, 1, 0x08, 1]),
    "unknown_type": bytes([0, 0, 0x07, 1]),
    "zero_dims": bytes([0, 0, 0x08, 0]),
    "png_file": b"\x89PNG\r\n\x1a\n",
}


@pytest.mark.parametrize("header", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_bad_magic_number_names_the_path(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(header + bytes(16))
    with pytest.raises(UserError, match="bad magic number") as err:
        read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_truncated_data_names_the_path(tmp_path: Path, idx_encoder, gz: bool) -> None:
    data = idx_encoder(np.zeros((10, 28, 28), dtype=np.uint8))[:-5]
    path = tmp_path / "short-idx3"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(UserError, match="truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "short-header"
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 10]))  # 3 dims announced, 1 given
    with pytest.raises(UserError, match="truncated inside its header"):
        read_idx(path)


def test_trailing_bytes_are_an_error(tmp_path: Path, idx_encoder) -> None:
    path = tmp_path / "long-idx1"
    path.write_bytes(idx_encoder(np.zeros(4, dtype=np.uint8)) + b"\x00")
    with pytest.raises(UserError, match="longer than its header says"):
        read_idx(path)


def test_cut_gzip_stream_names_the_path(tmp_path: Path, idx_encoder) -> None:
    blob = gzip.compress(idx_encoder(np.arange(1000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="damaged or truncated gzip") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_garbage_after_gzip_magic(tmp_path: Path) -> None:
    path = tmp_path / "garbage.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    with pytest.raises(UserError, match="damaged or truncated gzip"):
        read_idx(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist") as err:
        read_idx(tmp_path / "nope-idx3-ubyte")
    assert str(tmp_path / "nope-idx3-ubyte") in str(err.value)
    with pytest.raises(UserError, match="is a folder"):
        read_idx(tmp_path)


def test_too_short(tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(UserError, match="too short"):
        read_idx(path)


def test_debian_fashion_mnist_headers(fashion_mnist_available) -> None:
    folder = Path("/usr/share/datasets/fashion-mnist")
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10_000,) and labels.dtype == np.uint8
    # Fashion-MNIST's test set is balanced: 1000 images per class (Xiao et al. 2017).
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 1000))


@pytest.mark.parametrize("gz", [False, True])
def test_header_claiming_more_than_the_file_holds_allocates_nothing(tmp_path: Path, gz: bool):
    # 2**20 x 2**20 uint8 images: 1 TiB, far more than the file can hold (or inflate to)
    body = bytes([0, 0, 0x08, 2]) + (2**20).to_bytes(4, "big") * 2 + bytes(64)
    path = tmp_path / ("huge-idx2-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(body) if gz else body)
    with pytest.raises(UserError, match="truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value)
