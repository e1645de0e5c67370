"""load_dataset: sources, split sizes and disjointness, determinism, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sgdtemp.data import DATASETS, DataSplits, ImageDataset, load_dataset
from sgdtemp.errors import UserError

N_DIGITS = 1797  # images in scikit-learn's load_digits
N_DIGITS_TEST = 297  # the fixed test split documented in sgdtemp.data._datasets


def _rows(dataset: ImageDataset) -> np.ndarray:
    """Images as sorted rows of bytes (a multiset fingerprint), labels appended."""
    flat = np.concatenate(
        [dataset.x.reshape(len(dataset), -1).numpy(), dataset.y[:, None].numpy()], axis=1
    )
    return flat[np.lexsort(flat.T[::-1])]


def _check_types(splits: DataSplits, shape: tuple[int, int, int]) -> None:
    for part in (splits.train, splits.heldout, splits.test):
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
        assert tuple(part.x.shape[1:]) == shape
        assert float(part.x.min()) >= 0.0 and float(part.x.max()) <= 1.0
        assert int(part.y.min()) >= 0 and int(part.y.max()) < part.n_classes


def test_names() -> None:
    assert DATASETS == ("fashion-mnist", "mnist", "cifar10", "digits")


# ---------------------------------------------------------------- digits


def test_digits_partition_the_whole_dataset() -> None:
    from sklearn.datasets import load_digits

    splits = load_dataset("digits", seed=3)
    _check_types(splits, (1, 8, 8))
    assert len(splits.test) == N_DIGITS_TEST
    assert len(splits.heldout) == round(0.2 * (N_DIGITS - N_DIGITS_TEST))
    assert len(splits.train) + len(splits.heldout) + len(splits.test) == N_DIGITS
    # Oracle: the three splits together are exactly scikit-learn's images (as a multiset).
    bunch = load_digits()
    everything = ImageDataset(
        "all",
        torch.from_numpy((bunch.images / 16.0).astype(np.float32))[:, None],
        torch.from_numpy(bunch.target.astype(np.int64)),
        10,
    )
    joined = ImageDataset(
        "joined",
        torch.cat([splits.train.x, splits.heldout.x, splits.test.x]),
        torch.cat([splits.train.y, splits.heldout.y, splits.test.y]),
        10,
    )
    np.testing.assert_array_equal(_rows(joined), _rows(everything))


def test_same_seed_same_splits_other_seed_other_heldout() -> None:
    a, b = load_dataset("digits", seed=5), load_dataset("digits", seed=5)
    for part in ("train", "heldout", "test"):
        assert torch.equal(getattr(a, part).x, getattr(b, part).x)
        assert torch.equal(getattr(a, part).y, getattr(b, part).y)
    c = load_dataset("digits", seed=6)
    assert not torch.equal(a.heldout.x, c.heldout.x)
    assert torch.equal(a.test.x, c.test.x)  # the test split never depends on the seed


def test_train_subset_is_a_prefix_and_keeps_heldout() -> None:
    full = load_dataset("digits", seed=2)
    small = load_dataset("digits", seed=2, train_subset=50)
    assert len(small.train) == 50
    assert torch.equal(small.train.x, full.train.x[:50])
    assert torch.equal(small.heldout.x, full.heldout.x)


def test_test_subset_is_a_prefix_of_the_official_test_set() -> None:
    full = load_dataset("digits", seed=2)
    small = load_dataset("digits", seed=2, test_subset=40)
    assert len(small.test) == 40 and torch.equal(small.test.x, full.test.x[:40])
    assert torch.equal(small.train.x, full.train.x)
    assert len(load_dataset("digits", test_subset=10**6).test) == len(full.test)  # at most all


@pytest.mark.parametrize(("heldout", "expected"), [(100, 100), (0.5, 750), (0, 0)])
def test_heldout_count_or_fraction(heldout: int | float, expected: int) -> None:
    splits = load_dataset("digits", heldout=heldout)
    assert len(splits.heldout) == expected
    assert len(splits.train) == N_DIGITS - N_DIGITS_TEST - expected


def test_numpy_scalars_are_accepted() -> None:
    splits = load_dataset(
        "digits", heldout=np.int64(100), train_subset=np.int32(50), seed=np.int64(1)
    )
    assert (len(splits.train), len(splits.heldout)) == (50, 100)


def test_returned_tensors_are_independent_copies() -> None:
    a = load_dataset("digits")
    a.train.x.zero_()
    assert float(load_dataset("digits").train.x.max()) == 1.0


BAD_OPTIONS = {
    "fraction_one": ({"heldout": 1.0}, "fraction must lie in"),
    "fraction_negative": ({"heldout": -0.1}, "fraction must lie in"),
    "count_too_big": ({"heldout": 1500}, "leaves no training images"),
    "count_negative": ({"heldout": -3}, "count >= 0"),
    "bool_heldout": ({"heldout": True}, "count or a fraction"),
    "string_heldout": ({"heldout": "10"}, "count or a fraction"),
    "subset_zero": ({"train_subset": 0}, "positive integer"),
    "subset_too_big": ({"train_subset": 1201}, "choose at most 1200"),
    "test_subset_zero": ({"test_subset": 0}, "test_subset must be a positive integer"),
    "negative_seed": ({"seed": -1}, "non-negative integer"),
}


@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_dataset("digits", **options)


def test_unknown_dataset_lists_the_choices() -> None:
    with pytest.raises(UserError, match="fashion-mnist, mnist, cifar10, digits"):
        load_dataset("imagenet")


def test_image_dataset_checks_shapes() -> None:
    with pytest.raises(UserError, match=r"\(N, C, H, W\)"):
        ImageDataset("bad", torch.zeros(3, 8, 8), torch.zeros(3, dtype=torch.int64), 10)


# ---------------------------------------------------------------- MNIST-format folders


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_mnist_folder_values(tmp_path: Path, mnist_folder, gz: bool) -> None:
    arrays = mnist_folder(tmp_path, gz=gz)
    splits = load_dataset("mnist", root=tmp_path, heldout=10, seed=1)
    _check_types(splits, (1, 28, 28))
    assert (len(splits.train), len(splits.heldout), len(splits.test)) == (50, 10, 20)
    np.testing.assert_array_equal(
        (splits.test.x[:, 0] * 255).round().numpy().astype(np.uint8),
        arrays["t10k-images-idx3-ubyte"],
    )
    np.testing.assert_array_equal(splits.test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    # The held-out images are the seeded permutation's first 10 training images.
    order = np.random.default_rng(1).permutation(60)
    np.testing.assert_array_equal(
        splits.heldout.y.numpy(), arrays["train-labels-idx1-ubyte"][order[:10]]
    )
    assert splits.train.n_classes == 10


@pytest.mark.parametrize("chunk", [7, 8192])
def test_images_are_uint8_over_255_exactly_across_chunks(
    tmp_path: Path, mnist_folder, monkeypatch, chunk: int
) -> None:
    from sgdtemp.data import _datasets

    arrays = mnist_folder(tmp_path)
    monkeypatch.setattr(_datasets, "_CONVERT_CHUNK", chunk)  # chunk edges inside the splits
    splits = load_dataset("mnist", root=tmp_path, heldout=10, seed=2)
    images = arrays["train-images-idx3-ubyte"][:, None]
    order = np.random.default_rng(2).permutation(60)
    for split, index in ((splits.heldout, order[:10]), (splits.train, order[10:])):
        expected = torch.from_numpy(images[index].astype(np.float32)).div_(255.0)
        assert torch.equal(split.x, expected)  # bit for bit: one float32 division per pixel
        assert split.x.is_contiguous() and split.x.dtype == torch.float32
    test = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:, None].astype(np.float32))
    assert torch.equal(splits.test.x, test.div_(255.0))


def test_mnist_found_in_named_subfolder_and_torchvision_layout(
    tmp_path: Path, mnist_folder
) -> None:
    mnist_folder(tmp_path / "a" / "mnist")
    assert len(load_dataset("mnist", root=tmp_path / "a", heldout=5).test) == 20
    mnist_folder(tmp_path / "b" / "FashionMNIST" / "raw", gz=False)
    assert len(load_dataset("fashion-mnist", root=tmp_path / "b", heldout=5).test) == 20


def test_file_replaced_in_place_is_read_again(tmp_path: Path, mnist_folder) -> None:
    mnist_folder(tmp_path, seed=0)
    first = load_dataset("mnist", root=tmp_path, heldout=5).test.x
    mnist_folder(tmp_path, seed=1, n_test=30)
    second = load_dataset("mnist", root=tmp_path, heldout=5).test.x
    assert second.shape[0] == 30 and not torch.equal(first, second[:20])


def test_missing_mnist_names_the_path_and_the_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SGDTEMP_DATA", str(tmp_path / "cache"))
    with pytest.raises(UserError) as err:
        load_dataset("mnist")
    message = str(err.value)
    assert str(tmp_path / "cache" / "mnist") in message
    assert "sgdtemp download mnist" in message and "--data-root" in message
    assert "\n" not in message


def test_missing_fashion_mnist_root_gives_install_hint(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_dataset("fashion-mnist", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "sgdtemp download fashion-mnist" in message


def test_damaged_file_in_folder_is_named(tmp_path: Path, mnist_folder) -> None:
    mnist_folder(tmp_path, gz=False)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(UserError, match="truncated") as err:
        load_dataset("mnist", root=tmp_path, heldout=5)
    assert str(labels) in str(err.value)


def test_label_count_must_match_images(tmp_path: Path, mnist_folder, idx_writer) -> None:
    mnist_folder(tmp_path)
    idx_writer(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(7, dtype=np.uint8))
    with pytest.raises(UserError, match="must hold 20 labels"):
        load_dataset("mnist", root=tmp_path, heldout=5)


# ---------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("layout", ["tarball", "folder", "parent_of_tarball", "parent_of_folder"])
def test_cifar10_layouts(tmp_path: Path, cifar_files, layout: str) -> None:
    batches = cifar_files["batches"](n_per_batch=8)
    if layout in ("tarball", "parent_of_tarball"):
        source = cifar_files["tarball"](tmp_path / "cifar-10-python.tar.gz", batches)
        root = source if layout == "tarball" else tmp_path
    else:
        source = cifar_files["folder"](tmp_path / "cifar-10-batches-py", batches)
        root = source if layout == "folder" else tmp_path
    splits = load_dataset("cifar10", root=root, heldout=4, seed=0)
    _check_types(splits, (3, 32, 32))
    assert (len(splits.train), len(splits.heldout), len(splits.test)) == (36, 4, 8)
    test = batches["test_batch"]
    # Oracle: row r of 'data' holds the red, green and blue 32x32 planes in turn.
    expected = np.asarray(test["data"]).reshape(8, 3, 32, 32)
    np.testing.assert_array_equal((splits.test.x * 255).round().numpy().astype(np.uint8), expected)
    np.testing.assert_array_equal(splits.test.y.numpy(), test["labels"])
    assert splits.test.n_classes == 10


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_pickle_protocols(tmp_path: Path, cifar_files, protocol: int) -> None:
    batches = cifar_files["batches"](n_per_batch=4)
    folder = cifar_files["folder"](tmp_path / "cifar-10-batches-py", batches, protocol=protocol)
    splits = load_dataset("cifar10", root=folder, heldout=2)
    np.testing.assert_array_equal(splits.test.y.numpy(), batches["test_batch"]["labels"])


def test_cifar10_missing_gives_data_root_hint(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "--data-root" in message and "download" in message


def test_cifar10_missing_batch_is_named(tmp_path: Path, cifar_files) -> None:
    batches = cifar_files["batches"]()
    del batches["data_batch_3"]
    folder = cifar_files["folder"](tmp_path / "cifar-10-batches-py", batches)
    with pytest.raises(UserError, match="data_batch_3"):
        load_dataset("cifar10", root=folder)


def test_cifar10_refuses_pickles_that_run_code(tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(UserError, match="not allowed"):
        load_dataset("cifar10", root=folder)


# ---------------------------------------------------------------- Fashion-MNIST (Debian)


def test_fashion_mnist_from_debian(fashion_mnist_available) -> None:
    splits = load_dataset("fashion-mnist", seed=0)
    _check_types(splits, (1, 28, 28))
    assert (len(splits.train), len(splits.heldout), len(splits.test)) == (50_000, 10_000, 10_000)
    # Fashion-MNIST is balanced: 6000 training and 1000 test images per class (Xiao et al.).
    counts = torch.bincount(torch.cat([splits.train.y, splits.heldout.y]), minlength=10)
    assert counts.tolist() == [6000] * 10
    assert torch.bincount(splits.test.y).tolist() == [1000] * 10
    assert splits.train.name == "fashion-mnist:train"
