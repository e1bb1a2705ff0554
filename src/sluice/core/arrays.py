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


def to_numpy(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``array.to_numpy()`` for numbers or booleans without nulls (read-only for numbers)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
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


def scalar(value: int | str, type_: pa.DataType) -> pa.Scalar:
    """``pa.scalar(value, type_)`` for an int (as a 64-bit type: int64, timestamp) or a str
    (as a string type)."""
    if isinstance(value, str):
        data = value.encode()
        offsets = np.array([0, len(data)], np.int64 if type_ == pa.large_string() else np.int32)
        return pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])[0]
    if type_.bit_width != 64:
        raise TypeError(f"scalar: {type_} is not a 64-bit type")
    return pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(np.array([value], np.int64))])[0]
