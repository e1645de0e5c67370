"""A NumPy-only reader for the IDX format of MNIST and Fashion-MNIST (gzip or plain).

An IDX file is a 4-byte magic number ``00 00 TT NN`` (``TT`` the element type, ``NN`` the number
of dimensions), ``NN`` big-endian ``uint32`` sizes, then the elements in C order, big-endian.
Reference: Y. LeCun, C. Cortes and C. J. C. Burges, "The MNIST database of handwritten digits",
http://yann.lecun.com/exdb/mnist/ (section "File formats for the MNIST database").
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

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


def _read_bytes(path: Path) -> bytes:
    """All bytes of ``path``, gunzipped when it starts with the gzip magic."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise UserError(f"IDX file {path} does not exist; check the path") from err
    except IsADirectoryError as err:
        raise UserError(f"IDX file {path} is a folder, not a file; name the file") from err
    except OSError as err:
        raise UserError(f"IDX file {path} cannot be read ({err.strerror}); check it") from err
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise UserError(
            f"IDX file {path} is a damaged or truncated gzip file ({err}); download it again"
        ) from err


def read_idx(path: str | Path) -> npt.NDArray[np.generic]:
    """Read one IDX file (plain or gzip-compressed, detected from its first bytes).

    The whole file is validated before any array is built: the magic number (two zero bytes, a
    known element type, at least one dimension), the header length and the exact number of data
    bytes (a truncated file and trailing bytes are both errors).

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        The array with the file's shape (e.g. ``(60000, 28, 28)`` ``uint8`` for MNIST images,
        ``(60000,)`` for labels), in native byte order; read-only when the type is one byte wide.

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
    data = _read_bytes(path)
    if len(data) < 4:
        raise UserError(f"IDX file {path} is too short ({len(data)} bytes) to hold a header")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in IDX_DTYPES or ndim == 0:
        raise UserError(
            f"IDX file {path} has a bad magic number 0x{data[:4].hex()} (expected 0x0000TTNN "
            f"with type TT in {{{', '.join(f'{t:02x}' for t in IDX_DTYPES)}}} and NN >= 1); "
            "is it an IDX file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"IDX file {path} is truncated inside its header; download it again")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "longer than its header says"
        raise UserError(
            f"IDX file {path} is {problem}: {len(data)} bytes, expected {expected} for shape "
            f"{dims}; download it again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))
    return array
