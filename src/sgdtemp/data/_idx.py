"""A NumPy-only reader for the IDX format of MNIST and Fashion-MNIST (gzip or plain).

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT`` the element type, ``NN`` the number
of dimensions), ``NN`` big-endian ``uint32`` sizes, then the elements in C order, big-endian.
Reference: Y. LeCun, C. Cortes and C. J. C. Burges, "The MNIST database of handwritten digits",
http://yann.lecun.com/exdb/mnist/ (section "File formats for the MNIST database").
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from sgdtemp.errors import UserError

__all__ = ["read_idx"]

# Element-type byte of the magic number -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DEFLATE_RATIO = 1032  # the largest expansion of deflate (RFC 1951)


def _open(path: Path) -> BinaryIO:
    """``path`` opened for reading (binary)."""
    try:
        handle: BinaryIO = path.open("rb")
    except FileNotFoundError as err:
        raise UserError(f"IDX file {path} does not exist; check the path") from err
    except IsADirectoryError as err:
        raise UserError(f"IDX file {path} is a folder, not a file; name the file") from err
    except OSError as err:
        raise UserError(f"IDX file {path} cannot be read ({err.strerror}); check it") from err
    return handle


def _read_exactly(handle: BinaryIO, out: memoryview) -> int:
    """Fill ``out`` from ``handle``; the number of bytes read (less at the end of the file)."""
    done = 0
    while done < len(out):
        got = handle.readinto(out[done:])  # type: ignore[attr-defined]
        if not got:
            break
        done += got
    return done


def read_idx(path: str | Path) -> npt.NDArray[np.generic]:
    """Read one IDX file (plain or gzip-compressed, detected from its first bytes).

    The file is decoded straight into the returned array (no copy of the raw or decompressed
    bytes is kept) and validated on the way: the magic number (two zero bytes, a known element
    type, at least one dimension), the header length and the exact number of data bytes (a
    truncated file and trailing bytes are both errors).

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        The array with the file's shape (e.g. ``(60000, 28, 28)`` ``uint8`` for MNIST images,
        ``(60000,)`` for labels), in native byte order, writable.

    Raises:
        UserError: naming the path, if the file is missing, unreadable, not IDX, or truncated.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
        >>> _ = p.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 1]))
        >>> read_idx(p)
        array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    raw = _open(path)
    try:
        with raw:
            gzipped = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            if not gzipped:
                return _read_idx_stream(path, raw, os.fstat(raw.fileno()).st_size)
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                bound = os.fstat(raw.fileno()).st_size * _MAX_DEFLATE_RATIO
                return _read_idx_stream(path, unzipped, bound)  # type: ignore[arg-type]
    except (EOFError, OSError, zlib.error) as err:
        raise UserError(
            f"IDX file {path} is a damaged or truncated gzip file ({err}); download it again"
        ) from err


def _read_idx_stream(path: Path, handle: BinaryIO, most: int) -> npt.NDArray[np.generic]:
    """The body of :func:`read_idx`: decoded straight into the array, one copy of the data.

    ``most`` bounds the decoded size (the file size, or what a gzip file can expand to), so a
    damaged header never makes it allocate more than the file can hold.
    """
    head = handle.read(4)
    if len(head) < 4:
        raise UserError(f"IDX file {path} is too short ({len(head)} bytes) to hold a header")
    zero0, zero1, type_code, ndim = head[0], head[1], head[2], head[3]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise UserError(
            f"IDX file {path} has a bad magic number 0x{head.hex()} (expected 0x0000TTNN "
            f"with type TT in {{{', '.join(f'{t:02x}' for t in IDX_DTYPES)}}} and NN >= 1); "
            "is it an IDX file?"
        )
    header = 4 + 4 * ndim
    sizes = handle.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise UserError(f"IDX file {path} is truncated inside its header; download it again")
    dims = tuple(int(d) for d in np.frombuffer(sizes, dtype=">u4", count=ndim))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = header + math.prod(dims) * dtype.itemsize
    if expected > most:
        raise UserError(
            f"IDX file {path} is truncated: it cannot hold the {expected} bytes of shape "
            f"{dims}; download it again"
        )
    array = np.empty(dims, dtype=dtype)
    got = header + _read_exactly(handle, array.reshape(-1).view(np.uint8).data)
    if got == expected:
        got += len(handle.read(1))  # one byte more: trailing data
    if got != expected:
        problem = "truncated" if got < expected else "longer than its header says"
        size = f"{got} bytes" if got < expected else f"more than {expected} bytes"
        raise UserError(
            f"IDX file {path} is {problem}: {size}, expected {expected} for shape "
            f"{dims}; download it again"
        )
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    return array
