"""Download the official dataset files into a cache folder, verifying size and SHA-256.

Each file is streamed into a temporary file in the destination folder, checked against the
registry's byte count and SHA-256, flushed to disk and only then renamed over its final name with
:func:`os.replace` (atomic on POSIX and Windows). A failed, interrupted or corrupted transfer
leaves nothing behind, and a file already in the cache with the right checksum is not fetched
again. Downloads do not resume; a stale ``.*.part`` file left by a killed process is never read.

Checksum sources (the official servers publish none; each value below appears, for the same URL
and byte count, in independent well-used projects):

- Fashion-MNIST: SHA-256 and sizes from TensorFlow Datasets
  (``tensorflow_datasets/url_checksums/fashion_mnist.txt``); the MD5 sums of torchvision's
  ``FashionMNIST.resources`` name the same files.
- MNIST: SHA-256 and sizes from TensorFlow Datasets (``url_checksums/mnist.txt``, mirror
  ``storage.googleapis.com/cvdf-datasets/mnist``), which other projects list for torchvision's
  mirror ``ossci-datasets.s3.amazonaws.com/mnist`` as well; torchvision's MD5 sums for them are
  in :data:`REMOTE_DATASETS` comments.
- CIFAR-10: SHA-256 from Keras (``keras/datasets/cifar10.py``, ``file_hash``), MD5
  ``c58f30108f718f92721af3b95e74349a`` from torchvision (``CIFAR10.tgz_md5``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sgdtemp.errors import UserError
from sgdtemp.files import atomic_writer, make_dirs, remove_created

__all__ = ["RemoteFile", "RemoteDataset", "REMOTE_DATASETS", "cache_root", "download"]

_CHUNK = 1 << 20  # bytes per read
_TIMEOUT_S = 60.0  # socket timeout of one read


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset on a mirror.

    Attributes:
        name: file name, appended to the mirror URL and used in the cache folder.
        size: exact length in bytes.
        sha256: hex SHA-256 of the file's bytes.
    """

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class RemoteDataset:
    """The files of one dataset and the mirrors (URL prefixes ending in ``/``) that serve them."""

    mirrors: tuple[str, ...]
    files: tuple[RemoteFile, ...]


REMOTE_DATASETS: dict[str, RemoteDataset] = {
    "fashion-mnist": RemoteDataset(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=(
            # torchvision MD5 8d4fb7e6c68d591d4c3dfef9ec88bf0d
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                26_421_880,
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            # torchvision MD5 25c81989df183df01b3e8a0aad5dffbe
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                29_515,
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            # torchvision MD5 bef4ecab320f06d8554ea6380940ec79
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                4_422_102,
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            # torchvision MD5 bb300cfdad3c16e7a12a480ee83cd310
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                5_148,
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ),
    ),
    "mnist": RemoteDataset(
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        files=(
            # torchvision MD5 f68b3c2dcbeaaa9fbdd348bbdeb94873
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                9_912_422,
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            ),
            # torchvision MD5 d53e105ee54ea40749a09fcbcd1e9432
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                28_881,
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            ),
            # torchvision MD5 9fb629c4189551a2d022fa330f9573f3
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                1_648_877,
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            ),
            # torchvision MD5 ec29112dd5afa0611ce80d1b7f02629c
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                4_542,
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            ),
        ),
    ),
    "cifar10": RemoteDataset(
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        files=(
            # torchvision MD5 c58f30108f718f92721af3b95e74349a
            RemoteFile(
                "cifar-10-python.tar.gz",
                170_498_071,
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
            ),
        ),
    ),
}


def cache_root() -> Path:
    """The download cache folder.

    It is ``$SGDTEMP_DATA`` when set, else ``$XDG_CACHE_HOME/sgdtemp``, else ``~/.cache/sgdtemp``.
    """
    explicit = os.environ.get("SGDTEMP_DATA")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sgdtemp"


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_cached(path: Path, spec: RemoteFile) -> bool:
    try:
        return path.stat().st_size == spec.size and _sha256_of(path) == spec.sha256
    except OSError:
        return False


def _fetch(url: str, target: Path, spec: RemoteFile) -> None:
    """Stream ``url`` into ``target`` through a verified temporary file; raise on any fault."""
    with atomic_writer(target, suffix=".part", sync=True) as out:
        digest = hashlib.sha256()
        received = 0
        request = urllib.request.Request(url, headers={"User-Agent": "sgdtemp"})
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > spec.size:
                    raise UserError(f"{url} is longer than the expected {spec.size} bytes")
                digest.update(chunk)
                out.write(chunk)
        if received != spec.size:
            raise UserError(
                f"download of {url} stopped after {received} of {spec.size} bytes; try again"
            )
        if digest.hexdigest() != spec.sha256:
            raise UserError(
                f"{url} failed its checksum (sha256 {digest.hexdigest()}, expected "
                f"{spec.sha256}); the mirror serves a different file"
            )


def download(
    name: str,
    *,
    root: str | Path | None = None,
    base_url: str | None = None,
    registry: dict[str, RemoteDataset] | None = None,
) -> Path:
    """Download a dataset's official files into ``root/name``, verifying size and SHA-256.

    Files already present with the right checksum are kept; others are fetched from the mirrors
    in order (or only from ``base_url``) and appear under their final name only once verified.

    Args:
        name: a dataset with remote files (``fashion-mnist``, ``mnist``, ``cifar10``).
        root: cache folder; default :func:`cache_root`.
        base_url: a mirror URL prefix to use instead of the official ones (e.g. a local server).
        registry: files and checksums per dataset; default :data:`REMOTE_DATASETS`.

    Returns:
        The folder ``root/name`` holding the verified files, which :func:`load_dataset` reads.

    Raises:
        UserError: for an unknown name, an unwritable cache, or when every mirror fails (network
            error, interrupted transfer, checksum mismatch); no partial file is left behind,
            nor a folder this call created and left empty.
    """
    registry = REMOTE_DATASETS if registry is None else registry
    if name not in registry:
        raise UserError(
            f"no download for dataset {name!r}; choose one of {', '.join(sorted(registry))}"
        )
    remote = registry[name]
    mirrors = (
        (base_url if base_url.endswith("/") else base_url + "/",) if base_url else remote.mirrors
    )
    folder = (Path(root).expanduser() if root is not None else cache_root()) / name
    try:
        created = make_dirs(folder)
    except OSError as err:
        raise UserError(
            f"download folder {folder} cannot be created ({err.strerror}); "
            "choose another root or set SGDTEMP_DATA"
        ) from err
    try:
        _fetch_all(remote, name, folder, mirrors)
    except BaseException:
        remove_created(created, keep_files=True)  # verified files stay; empty folders go
        raise
    return folder


def _fetch_all(remote: RemoteDataset, name: str, folder: Path, mirrors: tuple[str, ...]) -> None:
    """Fetch every file of ``remote`` missing from ``folder``, trying the mirrors in order."""
    for spec in remote.files:
        target = folder / spec.name
        if _is_cached(target, spec):
            continue
        failures: list[str] = []
        for mirror in mirrors:
            url = mirror + spec.name
            try:
                _fetch(url, target, spec)
                break
            except UserError as err:
                failures.append(str(err))
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
                reason = getattr(err, "reason", None) or err
                failures.append(f"{url}: {reason}")
        else:
            raise UserError(
                f"could not download {spec.name} for {name} ({'; '.join(failures)}); check the "
                "network or pass another mirror as base_url"
            )
