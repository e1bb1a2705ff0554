"""JSON lines to typed Arrow columns in one compiled pass (the decode's fast path).

``sluice.sources._jsonlines`` (C, over yyjson; built with the package, optional) parses each
line once and writes the schema's fields into column buffers. Lines whose values could differ
from the DuckDB decode's, or that would be rejected, come back flagged *unsure*: the caller
decodes those with DuckDB, which also gives the rejection reasons.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa

from sluice.core.types import arrow_type

native: ModuleType | None  # the extension (None: not built; callers fall back)
try:
    from sluice.sources import _jsonlines as native
except ImportError:  # built without a C compiler: DuckDB decodes everything
    native = None

# The schema types the extension writes, and its code for each.
KINDS = {"string": 0, "double": 1, "long": 2, "boolean": 3, "timestamp": 4, "date": 5}
_STRING, _BOOLEAN = KINDS["string"], KINDS["boolean"]
_VALUE_DTYPES = {1: np.float64, 2: np.int64, 3: np.uint8, 4: np.int64, 5: np.int32}


def available() -> bool:
    """True when the extension is built."""
    return native is not None


def _bitmap(flags: np.ndarray) -> tuple[pa.Buffer | None, int]:
    """An Arrow validity bitmap of byte ``flags`` (None when all are set) and its null count."""
    nulls = int(flags.size - np.count_nonzero(flags))
    if nulls == 0:
        return None, 0
    return pa.py_buffer(np.packbits(flags, bitorder="little")), nulls


class LineDecoder:
    """Decodes a string array of JSON objects into the columns of ``types`` (name → type)."""

    def __init__(self, types: dict[str, str]) -> None:
        if native is None:
            raise RuntimeError("the JSON lines extension is not built")
        self._native_decode = native.decode
        unknown = [t for t in types.values() if t not in KINDS]
        if unknown:
            raise ValueError(f"types the extension does not decode: {unknown}")
        self.types = dict(types)
        self._names = tuple(name.encode() for name in types)
        self._kinds = bytes(KINDS[t] for t in types.values())

    def decode(self, raw: pa.Array) -> tuple[dict[str, pa.Array], np.ndarray]:
        """The typed columns of ``raw``'s lines, and a bool mask of the unsure lines.

        An unsure line's values are null in every column.
        """
        wide = pa.types.is_large_string(raw.type)
        if not (wide or pa.types.is_string(raw.type)):
            raise TypeError(f"expected a string array, not {raw.type}")
        n = len(raw)
        validity, offsets, data = raw.buffers()
        data_size = data.size if data is not None else 0
        if data is None:
            data = pa.py_buffer(b"")
        offset_type = np.int64 if wide else np.int32
        values: list[Any] = []
        valid: list[np.ndarray] = []
        str_offsets: list[np.ndarray | None] = []
        for kind in self._kinds:
            valid.append(np.empty(n, np.uint8))
            if kind == _STRING:
                values.append(np.empty(max(data_size, 1), np.uint8))
                str_offsets.append(np.empty(n + 1, offset_type))
            else:
                values.append(np.empty(n, _VALUE_DTYPES[kind]))
                str_offsets.append(None)
        unsure = np.empty(n, np.uint8)
        used = self._native_decode(
            offsets,
            data,
            validity,
            raw.offset,
            n,
            wide,
            self._names,
            self._kinds,
            values,
            valid,
            str_offsets,
            unsure,
        )
        columns = {}
        for j, (name, type_name) in enumerate(self.types.items()):
            bitmap, nulls = _bitmap(valid[j])
            kind = self._kinds[j]
            if kind == _STRING:
                data_buffers = [pa.py_buffer(str_offsets[j]), pa.py_buffer(values[j][: used[j]])]
                array_type = pa.large_string() if wide else pa.string()
            elif kind == _BOOLEAN:
                data_buffers = [pa.py_buffer(np.packbits(values[j], bitorder="little"))]
                array_type = arrow_type(type_name)
            else:
                data_buffers = [pa.py_buffer(values[j])]
                array_type = arrow_type(type_name)
            array = pa.Array.from_buffers(array_type, n, [bitmap, *data_buffers], null_count=nulls)
            # 64-bit offsets follow the input's; the schema's strings have 32-bit ones
            columns[name] = array.cast(arrow_type(type_name)) if wide else array
        return columns, unsure.view(np.bool_)
