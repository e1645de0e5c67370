"""Read CIFAR-10 in its "python version" layout: the tarball or the extracted folder.

The official archive ``cifar-10-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html)
holds ``cifar-10-batches-py/{data_batch_1..5, test_batch}``: pickled dicts with ``data`` (a
``(10000, 3072)`` ``uint8`` array, each row the red, green and blue 32x32 planes in row-major
order) and ``labels`` (a list of 10000 ints in 0..9). The pickles are read with a restricted
unpickler that only builds NumPy arrays, so a tampered file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from sgdtemp.errors import UserError

__all__ = ["read_cifar10", "CIFAR10_TARBALL", "CIFAR10_FOLDER", "find_cifar10"]

CIFAR10_TARBALL = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"

# The only globals a CIFAR batch pickle needs: NumPy's array rebuilders (1.x and 2.x module
# names, pickle protocols 2 to 5) and the latin-1 encoder that Python 3 protocol-2 pickles use
# for bytes.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global except what rebuilds a NumPy array."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def _load_batch(
    stream: IO[bytes], where: str
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """One batch as ``(x (n, 3, 32, 32) uint8, y (n,) int64)``, validated."""
    try:
        entry = _ArrayOnlyUnpickler(stream, encoding="latin1").load()
    except Exception as err:  # pickle raises many types on damaged input
        raise UserError(
            f"CIFAR-10 batch {where} cannot be read ({err}); download it again"
        ) from err
    if not isinstance(entry, dict):
        raise UserError(f"CIFAR-10 batch {where} is not a dict; is this the python version?")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"CIFAR-10 batch {where} has no (n, 3072) 'data' array")
    if labels is None or len(labels) != data.shape[0]:
        raise UserError(f"CIFAR-10 batch {where} has no 'labels' list matching its data")
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() > 9):
        raise UserError(f"CIFAR-10 batch {where} has labels outside 0..9")
    x = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
    return x, y


def _read_from(
    opener: Callable[[str], IO[bytes]], where: str
) -> tuple[
    npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int64]
]:
    parts = [_load_batch(opener(name), f"{where}/{name}") for name in (*TRAIN_BATCHES, TEST_BATCH)]
    x_train = np.concatenate([p[0] for p in parts[:-1]])
    y_train = np.concatenate([p[1] for p in parts[:-1]])
    return x_train, y_train, parts[-1][0], parts[-1][1]


def read_cifar10(
    path: str | Path,
) -> tuple[
    npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int64]
]:
    """Read CIFAR-10 from the python tarball or its extracted ``cifar-10-batches-py`` folder.

    Args:
        path: ``cifar-10-python.tar.gz`` (read in place, not extracted) or the folder holding
            ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: images ``(N, 3, 32, 32)`` ``uint8`` and labels
        ``(N,)`` ``int64`` (50000 and 10000 for the official data).

    Raises:
        UserError: naming the path, if a batch is missing, damaged or of the wrong layout.
    """
    path = Path(path)
    if path.is_dir():

        def open_file(name: str) -> IO[bytes]:
            try:
                return io.BytesIO((path / name).read_bytes())
            except OSError as err:
                raise UserError(
                    f"CIFAR-10 batch {path / name} cannot be read ({err.strerror}); "
                    f"the folder must hold {', '.join((*TRAIN_BATCHES, TEST_BATCH))}"
                ) from err

        return _read_from(open_file, str(path))
    wanted = {*TRAIN_BATCHES, TEST_BATCH}
    blobs: dict[str, bytes] = {}
    try:
        # One pass in archive order: seeking back in a .tar.gz would decompress it again.
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in wanted and name not in blobs:
                    stream = tar.extractfile(member)
                    if stream is not None:
                        blobs[name] = stream.read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise UserError(
            f"CIFAR-10 archive {path} cannot be read ({err}); download {CIFAR10_TARBALL} again"
        ) from err

    def open_member(name: str) -> IO[bytes]:
        if name not in blobs:
            raise UserError(
                f"CIFAR-10 archive {path} has no member {name}; is it {CIFAR10_TARBALL}?"
            )
        return io.BytesIO(blobs.pop(name))

    return _read_from(open_member, str(path))


def find_cifar10(root: Path) -> Path | None:
    """The CIFAR-10 source under ``root``: the tarball or extracted folder, or None.

    ``root`` may be the tarball itself, the ``cifar-10-batches-py`` folder, or a folder holding
    either (directly or in a ``cifar10`` subfolder, the download cache layout).
    """
    if root.is_file():
        return root
    for folder in (root, root / "cifar10"):
        if (folder / TEST_BATCH).is_file():
            return folder
        if (folder / CIFAR10_FOLDER / TEST_BATCH).is_file():
            return folder / CIFAR10_FOLDER
        if (folder / CIFAR10_TARBALL).is_file():
            return folder / CIFAR10_TARBALL
    return None
