"""Reader for the IDX format of the original MNIST files (LeCun's spec), numpy + gzip only."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from fedcore.datasets.base import DatasetError

UBYTE_CODE = 0x08  # the only element type MNIST uses


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode uncompressed IDX bytes into a uint8 array of the header's shape.

    Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32
    per dimension, then the data. Anything else raises ``DatasetError`` naming ``source``.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE_CODE:
        raise DatasetError(
            f"{source} is not an unsigned-byte IDX file (magic number {raw[:4].hex() or 'empty'})"
        )
    ndim = raw[3]
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise DatasetError(f"{source} is truncated inside its IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header_bytes])
    data_bytes = len(raw) - header_bytes
    if data_bytes != math.prod(dims):
        raise DatasetError(
            f"{source}: IDX header promises shape {dims} ({math.prod(dims)} bytes) "
            f"but {data_bytes} bytes follow; the file is truncated or malformed"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(dims)


def read_idx_gz(path: Path, ndim: int) -> np.ndarray:
    """Read a gzip-compressed IDX file and check it has ``ndim`` dimensions."""
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"{path} is not a readable gzip file ({err})") from err
    array = parse_idx(raw, str(path))
    if array.ndim != ndim:
        raise DatasetError(f"{path}: expected {ndim} IDX dimensions, found shape {array.shape}")
    return array
