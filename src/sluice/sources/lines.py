"""Split byte chunks of text files into records (lines, or CSV records), vectorised.

A chunk always starts at a record boundary. ``cut_point`` says how much of a chunk holds
whole records; ``split_records`` turns those bytes into an Arrow string array sharing the
chunk's memory, with each record's end offset and first line number. Invalid UTF-8 is
found only when the cheap whole-chunk check fails.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sluice.core.arrays import from_numpy, scalar, to_numpy
from sluice.sources.json_lines import native

Buffer = bytes | memoryview
NEWLINE = 10
QUOTE = 34
_TAIL_SCAN = 1 << 16
SCAN_BLOCK = 1 << 18  # bytes compared at a time when looking for newlines


def newline_positions(buf: np.ndarray) -> np.ndarray:
    """Positions (int64) of the newline bytes of ``buf``.

    The compiled module scans with ``memchr``; without it, numpy compares a block at a time
    (one reused block-sized mask, no fresh pages to clear for each 16 MiB chunk).
    """
    if native is not None:
        return np.frombuffer(native.newlines(buf), np.int64)
    if buf.size <= SCAN_BLOCK:
        return np.flatnonzero(buf == NEWLINE)
    mask = np.empty(SCAN_BLOCK, bool)
    found = []
    for start in range(0, buf.size, SCAN_BLOCK):
        block = buf[start : start + SCAN_BLOCK]
        part = mask[: block.size]
        np.equal(block, NEWLINE, out=part)
        hits = np.flatnonzero(part)
        hits += start
        found.append(hits)
    return np.concatenate(found)


def record_ends(buf: np.ndarray, quoted: bool = False) -> np.ndarray:
    """Positions of the newlines that end records (``quoted``: skip newlines in CSV quotes)."""
    newlines = newline_positions(buf)
    if not quoted or newlines.size == 0:
        return newlines
    quotes = np.cumsum(buf == QUOTE, dtype=np.int64)
    return newlines[(quotes[newlines] & 1) == 0]


def cut_point(data: bytes, at_eof: bool, quoted: bool = False) -> int:
    """How many leading bytes of ``data`` hold whole records (0: no record ends in it yet)."""
    if at_eof:
        return len(data)
    if not quoted:
        return data.rfind(b"\n") + 1
    ends = record_ends(np.frombuffer(data, np.uint8), quoted=True)
    return int(ends[-1]) + 1 if ends.size else 0


def origin_column(name: str, numbers: np.ndarray) -> pa.Array:
    """``name:<number>`` for each number (``a.jsonl:12``), built without a Python loop."""
    if native is not None:
        values = np.ascontiguousarray(numbers, np.int64)
        try:
            offsets, data = native.prefixed_numbers((name + ":").encode(), values)
        except OverflowError:  # more than 2 GiB of text: Arrow's join below
            pass
        else:
            return pa.StringArray.from_buffers(
                len(values), pa.py_buffer(offsets), pa.py_buffer(data)
            )
    return pc.binary_join_element_wise(
        scalar(name + ":", pa.string()),
        from_numpy(numbers).cast(pa.string()),
        scalar("", pa.string()),
    )


@dataclass
class Records:
    """The records of one chunk: their text and where each one ends and starts."""

    text: pa.StringArray  # without the line ending (and trailing ``strip`` characters)
    ends: np.ndarray  # int64: offset in the chunk just after each record (newline included)
    lines: np.ndarray  # int64: 0-based index of the line each record starts on
    invalid_utf8: np.ndarray | None  # bool per record when some records are not UTF-8
    newlines: int  # newline bytes in the chunk


def split_records(data: Buffer, quoted: bool = False, strip: str = "\r\n") -> Records:
    """Split ``data`` (whole records; the last one may lack its newline) into records."""
    buf = np.frombuffer(data, np.uint8)
    newlines = newline_positions(buf)
    ends = record_ends(buf, quoted) if quoted else newlines
    stops = ends.astype(np.int64) + 1
    if buf.size and (ends.size == 0 or int(ends[-1]) != buf.size - 1):
        stops = np.append(stops, np.int64(buf.size))
    starts = np.empty_like(stops)
    if stops.size:
        starts[0] = 0
        starts[1:] = stops[:-1]
    if quoted:
        lines = np.searchsorted(newlines, starts, side="left").astype(np.int64)
    else:  # every record starts on the line after the previous one's newline
        lines = np.arange(stops.size, dtype=np.int64)
    offsets = np.empty(stops.size + 1, np.int64)
    offsets[0] = 0
    offsets[1:] = stops
    if buf.size < 2**31 - 1:
        raw: pa.Array = pa.StringArray.from_buffers(
            stops.size, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)
        )
    else:
        raw = pa.LargeStringArray.from_buffers(
            stops.size, pa.py_buffer(offsets), pa.py_buffer(data)
        )
    invalid = None
    if not is_utf8(data):
        invalid = invalid_utf8_records(data, starts, stops)
        raw = _replace_invalid(raw, invalid, data, starts, stops)
    text = pc.ascii_rtrim(raw, strip)
    return Records(text, stops, lines, invalid, int(newlines.size))


def non_blank(text: pa.Array) -> np.ndarray:
    """A numpy bool per record: True when it is not empty (lengths read without a copy)."""
    return to_numpy(pc.binary_length(text)) > 0


def is_utf8(data: Buffer) -> bool:
    """True when ``data`` is valid UTF-8 (one vectorised Arrow validation, no copy)."""
    offsets = np.array([0, len(data)], np.int64)
    whole = pa.LargeStringArray.from_buffers(1, pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        whole.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def invalid_utf8_records(data: Buffer, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Mark the records holding invalid UTF-8, bisecting the record range that fails."""
    invalid = np.zeros(stops.size, bool)
    view = memoryview(data)
    pending = [(0, int(stops.size))]
    while pending:
        first, last = pending.pop()
        try:
            codecs.decode(view[int(starts[first]) : int(stops[last - 1])], "utf-8")
        except UnicodeDecodeError:
            if last - first == 1:
                invalid[first] = True
            else:
                middle = (first + last) // 2
                pending += [(first, middle), (middle, last)]
    return invalid


def _replace_invalid(
    raw: pa.Array, invalid: np.ndarray, data: Buffer, starts: np.ndarray, stops: np.ndarray
) -> pa.Array:
    """Swap each invalid record for its text decoded with replacement characters."""
    bad = np.flatnonzero(invalid)
    view = memoryview(data)
    fixed = pa.array(
        [codecs.decode(view[starts[i] : stops[i]], "utf-8", "replace") for i in bad], pa.string()
    )
    binary = raw.view(pa.binary() if raw.type == pa.string() else pa.large_binary())
    replaced = pc.replace_with_mask(binary, pa.array(invalid), fixed.cast(binary.type))
    return replaced.cast(raw.type)


def decode_utf8(values: list[bytes | None]) -> tuple[pa.Array, pa.Array]:
    """Payloads as strings and a per-row invalid-UTF-8 flag (bad bytes become U+FFFD)."""
    binary = pa.array(values, pa.binary())
    try:
        return binary.cast(pa.string()), pa.array(np.zeros(len(values), bool))
    except pa.ArrowInvalid:
        pass
    offsets = np.frombuffer(binary.buffers()[1], np.int32, len(values) + 1).astype(np.int64)
    invalid = invalid_utf8_records(binary.buffers()[2], offsets[:-1], offsets[1:])
    fixed = pa.array(
        [bytes(values[i] or b"").decode("utf-8", "replace") for i in np.flatnonzero(invalid)],
        pa.string(),
    )
    mask = pa.array(invalid)
    replaced = pc.replace_with_mask(binary, mask, fixed.cast(pa.binary()))
    return replaced.cast(pa.string()), mask
