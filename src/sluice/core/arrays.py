"""Numpy ↔ Arrow conversions for the hot path that leave pandas unimported.

pyarrow imports pandas (when it is installed: about 0.2 s of a ``sluice run``) the first
time it converts Python or numpy values (``pa.array``, ``pa.scalar``, a Python value given
to a compute function) or returns numpy values (``to_numpy``, ``np.asarray``): its pandas
shim and its C++ pandas support look for pandas then. These helpers build and read the
buffers directly, with the same results, so that a pipeline that uses no pandas never
pays for it. ``tests/unit/test_arrays.py`` compares them with pyarrow's conversions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

_NUMPY_TYPES: dict[pa.DataType, np.dtype[Any]] = {
    pa.int8(): np.dtype(np.int8),
    pa.int16(): np.dtype(np.int16),
    pa.int32(): np.dtype(np.int32),
    pa.int64(): np.dtype(np.int64),
    pa.uint8(): np.dtype(np.uint8),
    pa.uint16(): np.dtype(np.uint16),
    pa.uint32(): np.dtype(np.uint32),
    pa.uint64(): np.dtype(np.uint64),
    pa.float32(): np.dtype(np.float32),
    pa.float64(): np.dtype(np.float64),
}
_ARROW_TYPES: dict[np.dtype[Any], pa.DataType] = {
    dtype: type_ for type_, dtype in _NUMPY_TYPES.items()
}


def from_numpy(values: np.ndarray) -> pa.Array:
    """``pa.array(values)`` for a 1-D numpy array of numbers or booleans (no copy for numbers)."""
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
    return pa.Array.from_buffers(
        _ARROW_TYPES[values.dtype], len(values), [None, pa.py_buffer(values)]
    )


def contiguous(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``array`` as one Array: its only chunk as it is (``combine_chunks`` copies even one)."""
    if isinstance(array, pa.Array):
        return array
    if array.num_chunks == 1:
        return array.chunk(0)
    return array.combine_chunks()


def to_numpy(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``array.to_numpy()`` for numbers or booleans without nulls (read-only for numbers)."""
    array = contiguous(array)
    if array.null_count:
        raise ValueError("to_numpy: the array holds nulls")
    if pa.types.is_boolean(array.type):
        if len(array) == 0:
            return np.zeros(0, bool)
        bits = np.frombuffer(array.buffers()[1], np.uint8)
        unpacked = np.unpackbits(bits, count=array.offset + len(array), bitorder="little")
        return unpacked[array.offset :].view(bool)
    dtype = _NUMPY_TYPES[array.type]
    if len(array) == 0:
        return np.zeros(0, dtype)
    return np.frombuffer(array.buffers()[1], dtype, len(array), array.offset * dtype.itemsize)


def scalar(value: bool | int | str | bytes, type_: pa.DataType) -> pa.Scalar:
    """``pa.scalar(value, type_)`` for a bool (as bool), an int (as a 64-bit type: int64,
    timestamp), a str (as a string type) or bytes (as binary)."""
    if isinstance(value, bool):
        bits = pa.py_buffer(np.array([value], np.uint8))
        return pa.Array.from_buffers(pa.bool_(), 1, [None, bits])[0]
    if isinstance(value, str | bytes):
        data = value.encode() if isinstance(value, str) else value
        large = type_ in (pa.large_string(), pa.large_binary())
        offsets = np.array([0, len(data)], np.int64 if large else np.int32)
        return pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])[0]
    if type_.bit_width != 64:
        raise TypeError(f"scalar: {type_} is not a 64-bit type")
    return pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(np.array([value], np.int64))])[0]


def bools(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean array as a (writable) numpy bool array, nulls as False."""
    array = contiguous(array)
    if array.null_count:
        array = array.fill_null(scalar(False, pa.bool_()))
    return to_numpy(array)


def floats(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``pc.cast(array, float64).to_numpy(zero_copy_only=False)``: a float64 copy, nulls as NaN."""
    array = contiguous(array)
    array = array.cast(pa.float64())
    if len(array) == 0:
        return np.zeros(0, np.float64)
    values = np.frombuffer(array.buffers()[1], np.float64, len(array), array.offset * 8).copy()
    if array.null_count:
        values[to_numpy(array.is_null())] = np.nan
    return values


def objects(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``array.to_numpy(zero_copy_only=False)`` for a string array: an object array of str,
    None for nulls. Each distinct value becomes one Python string, shared by its rows."""
    array = contiguous(array)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        raise TypeError(f"objects: {array.type} is not a string type")
    encoded = array.dictionary_encode()
    distinct = np.empty(len(encoded.dictionary) + 1, dtype=object)  # the last one: None
    distinct[:-1] = encoded.dictionary.to_pylist()
    indices = encoded.indices.cast(pa.int64())
    if indices.null_count:
        indices = indices.fill_null(scalar(len(distinct) - 1, pa.int64()))
    return distinct[to_numpy(indices)]


def strings(values: np.ndarray) -> pa.Array:
    """``pa.array(values, pa.string())`` for an object array of str and None (null); cheap
    when most values are empty, as a model's per-row reasons are."""
    n = len(values)
    nulls = np.asarray(values == None)  # noqa: E711 - elementwise
    rows = np.flatnonzero(values.astype(bool) & ~nulls)  # '' and None add no bytes
    encoded = [text.encode() for text in values[rows]]
    lengths = np.zeros(n, np.int64)
    lengths[rows] = [len(b) for b in encoded]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    kind = pa.string() if offsets[-1] < 2**31 else pa.large_string()
    if kind == pa.string():
        offsets = offsets.astype(np.int32)
    validity = None
    if nulls.any():
        validity = pa.py_buffer(np.packbits(~nulls, bitorder="little"))
    data = pa.py_buffer(b"".join(encoded))
    array = pa.Array.from_buffers(kind, n, [validity, pa.py_buffer(offsets), data])
    return array if kind == pa.string() else array.cast(pa.string())


def binaries(values: list[bytes], type_: pa.DataType | None = None) -> pa.Array:
    """``pa.array(values, pa.binary())`` for a list of bytes (no nulls); ``type_``
    ``pa.string()`` for UTF-8 bytes taken as strings (not checked)."""
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(np.fromiter(map(len, values), np.int64, len(values)), out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError("binaries: 2 GiB or more")
    kind = type_ or pa.binary()
    data = pa.py_buffer(b"".join(values))
    return pa.Array.from_buffers(
        kind, len(values), [None, pa.py_buffer(offsets.astype(np.int32)), data]
    )
