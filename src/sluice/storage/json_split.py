"""Split a JSON array into its elements' raw text without building a Python object per element.

The array must already be known to be valid JSON (the caller validates it with a strict
parser): the split only finds the top-level commas, outside strings, with vectorised numpy
passes over the bytes, and returns the elements as slices of the original text in one Arrow
string array. Memory is a small multiple of the body, whatever the number of elements.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_QUOTE, _BACKSLASH, _COMMA = 34, 92, 44
_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))
_TRIM = " \t\r\n,"


def _real_quotes(data: np.ndarray) -> np.ndarray:
    """Positions of the quotes that open or close a string (not escaped ones)."""
    quotes = np.flatnonzero(data == _QUOTE)
    slashes = np.flatnonzero(data == _BACKSLASH)
    if len(slashes) == 0 or len(quotes) == 0:
        return quotes
    breaks = np.flatnonzero(np.diff(slashes) != 1)
    run_starts = slashes[np.concatenate(([0], breaks + 1))]
    run_ends = slashes[np.concatenate((breaks, [len(slashes) - 1]))]
    at = np.minimum(np.searchsorted(run_ends, quotes - 1), len(run_ends) - 1)
    after_run = run_ends[at] == quotes - 1
    odd_run = (run_ends[at] - run_starts[at] + 1) % 2 == 1
    return quotes[~(after_run & odd_run)]


def top_level_commas(data: np.ndarray) -> np.ndarray:
    """Positions of the commas that separate the elements of the array held in ``data``."""
    structural = np.flatnonzero(np.isin(data, (*_OPEN, *_CLOSE, _COMMA)))
    quotes = _real_quotes(data)
    outside = np.searchsorted(quotes, structural) % 2 == 0
    structural = structural[outside]
    chars = data[structural]
    delta = np.isin(chars, _OPEN).astype(np.int32) - np.isin(chars, _CLOSE).astype(np.int32)
    depth = np.cumsum(delta)
    return structural[(chars == _COMMA) & (depth == 1)]


def split_array(text: bytes, count: int) -> pa.StringArray:
    """The ``count`` elements of the JSON array ``text`` (valid UTF-8 JSON) as raw strings."""
    text = text.strip()
    if count == 0:
        return pa.array([], pa.string())
    data = np.frombuffer(text, dtype=np.uint8)
    commas = top_level_commas(data)
    if len(commas) != count - 1:
        raise ValueError(f"found {len(commas) + 1} array elements, expected {count}")
    offsets = np.concatenate(([1], commas + 1, [len(text) - 1])).astype(np.int64)
    raw = pa.LargeStringArray.from_buffers(
        count, pa.py_buffer(offsets.tobytes()), pa.py_buffer(text)
    )
    trimmed = pc.utf8_trim(raw, characters=_TRIM)
    return trimmed.cast(pa.string())
