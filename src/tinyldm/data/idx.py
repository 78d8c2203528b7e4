"""Reading and writing IDX files (the MNIST / Fashion-MNIST on-disk format).

Why our own reader instead of ``torchvision.datasets.MNIST``: torchvision
verifies the MD5 of the *compressed* archives it expects, so perfectly good
copies that were re-compressed (e.g. Debian's ``dataset-fashion-mnist``
package ships re-gzipped files under ``/usr/share/datasets/fashion-mnist``)
are rejected.  The IDX format itself is trivial, so we parse it directly and
validate it more strictly than torchvision does: a truncated download should
fail loudly with the file name, not surface later as a reshape error.

Format (big-endian)::

    magic   : 0x00 0x00 <dtype code> <ndim>
    dims    : ndim x uint32
    payload : prod(dims) items of <dtype>

Gzip compression is detected from the gzip magic bytes (``1f 8b``), not
from the file extension, because extensions are frequently wrong after
manual downloads/renames.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from tinyldm.utils.files import write_bytes

__all__ = ["read_idx", "write_idx", "IDX_DTYPES"]

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_PREFIX = 4  # two zero bytes, dtype code, ndim
_MAX_NDIM = 8  # IDX allows up to 255, but anything above this is garbage for us


def _read_raw_bytes(path: Path) -> bytes:
    """Return the (decompressed) file contents; corrupt gzip -> ValueError."""
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        # EOFError: truncated stream; BadGzipFile (an OSError) / zlib.error: corrupt.
        raise ValueError(
            f"IDX file {path} is gzip-compressed but could not be decompressed "
            f"({type(err).__name__}: {err}); the file is probably truncated or corrupt, "
            "delete it and fetch it again"
        ) from err


def _parse_header(data: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate the IDX header; return (dtype, shape, payload offset)."""
    if len(data) < _HEADER_PREFIX:
        raise ValueError(
            f"IDX file {path} is too short ({len(data)} bytes) to contain an IDX header "
            f"(needs at least {_HEADER_PREFIX} bytes)"
        )
    zero0, zero1, code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0:
        raise ValueError(
            f"IDX file {path} has a bad magic number 0x{data[:4].hex()}: the first two "
            "bytes must be 0x00 0x00 (is this really an IDX file?)"
        )
    if code not in IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"IDX file {path} has unknown dtype code 0x{code:02X}; allowed codes: {allowed}")
    if not 1 <= ndim <= _MAX_NDIM:
        raise ValueError(f"IDX file {path} declares {ndim} dimensions; expected 1..{_MAX_NDIM}")
    dims_end = _HEADER_PREFIX + 4 * ndim
    if len(data) < dims_end:
        raise ValueError(
            f"IDX file {path} is truncated inside its header: {ndim} dimensions need "
            f"{dims_end} header bytes but the file has only {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[_HEADER_PREFIX:dims_end])
    return IDX_DTYPES[code], tuple(int(d) for d in shape), dims_end


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a native-endian numpy array.

    Args:
        path: File to read.  Compression is detected from the content.

    Returns:
        Array with the shape declared in the header, e.g. ``(60000, 28, 28)``
        ``uint8`` for ``train-images-idx3-ubyte`` or ``(60000,)`` for labels.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is corrupt: bad magic, unknown dtype code,
            implausible number of dimensions, truncated header, or a payload
            whose size does not match the header.  The message names the path.
    """
    path = Path(path)
    data = _read_raw_bytes(path)
    dtype, shape, offset = _parse_header(data, path)

    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - offset
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise ValueError(
            f"IDX file {path} is {problem}: header declares shape {shape} of {dtype} "
            f"({expected} payload bytes) but the file holds {actual} payload bytes"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
    # astype(native) copies, which also makes the array writable (frombuffer on
    # bytes is read-only, and torch.from_numpy warns about read-only arrays).
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write a ``uint8`` array as an IDX file; gzip it if ``path`` ends in ``.gz``.

    Only ``uint8`` is supported because that is all MNIST-style data needs;
    the main use is building tiny fixture files in tests.

    Returns:
        The path written.
    """
    path = Path(path)
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx only supports uint8 arrays, got dtype {array.dtype}")
    if not 1 <= array.ndim <= _MAX_NDIM:
        raise ValueError(f"write_idx needs 1..{_MAX_NDIM} dimensions, got {array.ndim}")
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload)
    return write_bytes(path, payload)
