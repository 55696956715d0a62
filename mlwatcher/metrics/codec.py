"""A small self-describing binary container for named numpy arrays plus JSON metadata.

Layout (all little-endian)::

    magic (4 bytes) | version u8 | header length u32 | header JSON (utf-8) | array blobs

The header is ``{"meta": {...}, "arrays": [[name, dtype, shape], ...]}``; the blobs follow in
that order, each ``prod(shape) * itemsize`` bytes, C order. Used for window states and deltas
because it is several times more compact and faster than ``npz`` for small payloads.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

VERSION = 1
_HEAD = struct.Struct("<4sBI")


class DecodeError(ValueError):
    """Bytes that are not a valid encoded object of the expected kind."""


def pack(magic: bytes, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    specs = []
    blobs = []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        arr = arr.astype(dtype, copy=False)
        specs.append([name, dtype.str, list(arr.shape)])
        blobs.append(arr.tobytes())
    header = json.dumps({"meta": meta, "arrays": specs}, separators=(",", ":")).encode()
    return b"".join([_HEAD.pack(magic, VERSION, len(header)), header, *blobs])


def unpack(magic: bytes, data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if len(data) < _HEAD.size:
        raise DecodeError(f"expected at least {_HEAD.size} bytes, got {len(data)}")
    got_magic, version, header_len = _HEAD.unpack_from(data)
    if got_magic != magic:
        raise DecodeError(f"expected magic {magic!r}, got {got_magic!r}")
    if version != VERSION:
        raise DecodeError(f"unsupported version {version} (expected {VERSION})")
    start = _HEAD.size
    try:
        header = json.loads(data[start : start + header_len])
    except ValueError as exc:
        raise DecodeError(f"corrupt header ({exc})") from exc
    pos = start + header_len
    arrays: dict[str, np.ndarray] = {}
    for name, dtype_str, shape in header["arrays"]:
        dtype = np.dtype(dtype_str)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if pos + nbytes > len(data):
            raise DecodeError(f"truncated data in array {name!r}")
        arrays[name] = (
            np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize, offset=pos)
            .reshape(shape)
            .copy()
        )
        pos += nbytes
    if pos != len(data):
        raise DecodeError(f"{len(data) - pos} unexpected trailing bytes")
    return header["meta"], arrays
