"""The explicit array format model snapshots and checkpoints are stored in.

A blob is ``b"TDL1"``, a little-endian uint32 header length, a JSON header,
then the raw little-endian bytes of each array. Only plain numeric dtypes
are allowed, so reading a blob from the network never runs code (unlike
pickle).

Examples
--------
>>> import numpy as np
>>> blob = encode({"w": np.arange(3.0), "n": np.array(7)}, {"version": 2})
>>> arrays, meta = decode(blob)
>>> arrays["w"].tolist(), int(arrays["n"]), meta["version"]
([0.0, 1.0, 2.0], 7, 2)
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

MAGIC = b"TDL1"
_DTYPES = {"<f8", "<f4", "<i8", "<i4", "<u8", "|b1", "|u1"}


class CodecError(ValueError):
    """A blob that is not in the tideline array format."""


def encode(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> bytes:
    entries = []
    chunks = []
    offset = 0
    for name, value in arrays.items():
        a = np.asarray(value)  # (ascontiguousarray would turn a 0-d array into 1-d)
        if not a.flags.c_contiguous:
            a = a.copy(order="C")
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        a = a.astype(dtype, copy=False)
        if dtype.str not in _DTYPES:
            raise CodecError(f"array {name!r}: dtype {dtype} is not storable")
        raw = a.tobytes()
        entries.append({"name": name, "dtype": dtype.str, "shape": list(a.shape), "offset": offset})
        chunks.append(raw)
        offset += len(raw)
    header = orjson.dumps({"arrays": entries, "meta": dict(meta or {})})
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *chunks])


def decode(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if len(blob) < 8 or blob[:4] != MAGIC:
        raise CodecError("not a tideline blob (bad magic)")
    (hlen,) = struct.unpack("<I", blob[4:8])
    try:
        header = orjson.loads(blob[8 : 8 + hlen])
    except orjson.JSONDecodeError as err:
        raise CodecError(f"bad header: {err}") from None
    body = memoryview(blob)[8 + hlen :]
    arrays: dict[str, np.ndarray] = {}
    for e in header["arrays"]:
        if e["dtype"] not in _DTYPES:
            raise CodecError(f"array {e['name']!r}: dtype {e['dtype']} is not allowed")
        dtype = np.dtype(e["dtype"])
        count = int(np.prod(e["shape"], dtype=np.int64))
        end = e["offset"] + count * dtype.itemsize
        if end > len(body):
            raise CodecError(f"array {e['name']!r} runs past the end of the blob")
        a = np.frombuffer(body[e["offset"] : end], dtype=dtype).reshape(e["shape"])
        arrays[e["name"]] = a.copy()
    return arrays, header["meta"]
