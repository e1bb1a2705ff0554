"""A flat container for named numpy arrays: a checkpoint's state without a zip archive.

``np.savez`` writes a zip entry per array, which costs more than the arrays themselves
when a delta holds a few kilobytes of each of fifty arrays. :func:`pack` writes a magic
line, the JSON list of (name, dtype, shape) and the arrays' bytes back to back, compressed
with LZ4 from :data:`COMPRESS_FROM` bytes (per-key state compresses about 3x, faster than
a checkpoint store writes the difference); :func:`unpack` reads that, or an ``.npz``
archive written by earlier versions.
"""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pyarrow as pa

MAGIC = b"SLUICE-ARRAYS-1\n"
LZ4_MAGIC = b"SLUICE-ARRAYS-LZ4\n"  # then the packed size and the LZ4 frame of the packing
COMPRESS_FROM = 1 << 14
_LENGTH = struct.Struct("<Q")


def _codec() -> pa.Codec | None:
    return pa.Codec("lz4") if pa.Codec.is_available("lz4") else None


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise ``arrays`` (any dtype numpy can describe without pickling)."""
    index: list[list[object]] = []
    parts: list[memoryview] = []
    for name, value in arrays.items():
        value = np.ascontiguousarray(value)
        if value.dtype.hasobject:
            raise ValueError(f"array {name!r} holds Python objects")
        index.append([name, value.dtype.str, list(value.shape)])
        parts.append(value.reshape(-1).view(np.uint8).data)  # joined without a copy of its own
    head = json.dumps(index).encode()
    pieces: list[bytes | memoryview] = [MAGIC, _LENGTH.pack(len(head)), head, *parts]
    size = sum(len(piece) for piece in pieces)
    if size < COMPRESS_FROM or _codec() is None:
        return b"".join(pieces)
    sink = pa.BufferOutputStream()  # streamed: the uncompressed packing is never built whole
    stream = pa.CompressedOutputStream(sink, "lz4")
    for piece in pieces:
        stream.write(piece)
    stream.close()
    return b"".join([LZ4_MAGIC, _LENGTH.pack(size), sink.getvalue()])


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    """The arrays :func:`pack` (or ``np.savez``) wrote, writable; ValueError when damaged."""
    if blob.startswith(LZ4_MAGIC):
        blob = _decompress(blob)
    if not blob.startswith(MAGIC):
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    data = bytearray(blob)  # one copy, so that the arrays are writable
    at = len(MAGIC) + _LENGTH.size
    try:
        (length,) = _LENGTH.unpack_from(data, len(MAGIC))
        index = json.loads(bytes(data[at : at + length]))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"damaged array index: {exc}") from exc
    at += length
    out = {}
    for name, dtype, shape in index:
        kind = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if at + count * kind.itemsize > len(data):
            raise ValueError(f"array {name!r} is truncated")
        out[name] = np.frombuffer(data, kind, count, at).reshape(shape)
        at += count * kind.itemsize
    return out


def _decompress(blob: bytes) -> bytes:
    """The packing inside an LZ4 blob of :func:`pack`."""
    codec = _codec()
    if codec is None:
        raise ValueError("state is LZ4-compressed and this pyarrow has no LZ4 codec")
    try:
        (size,) = _LENGTH.unpack_from(blob, len(LZ4_MAGIC))
        data = memoryview(blob)[len(LZ4_MAGIC) + _LENGTH.size :]
        return bytes(codec.decompress(data, decompressed_size=size, asbytes=True))
    except (struct.error, OSError, pa.ArrowException) as exc:
        raise ValueError(f"damaged compressed state: {exc}") from exc


CHUNK_ROWS = 1 << 16  # keys packed at a time: bounds the temporaries of a large snapshot


RING_VALUES = 1 << 20  # ring values gathered at a time: bounds the temporaries


def ring_span(count: np.ndarray, n: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and ring position of the last ``n[i]`` events (of ``count[i]``) of each row ``i``,
    event after event (event ``tau`` is kept at ``tau % window``)."""
    n = n.astype(np.int64)
    row = np.repeat(np.arange(n.shape[0]), n)
    first = np.cumsum(n) - n
    tau = (count.astype(np.int64) - n - first)[row] + np.arange(row.shape[0])
    return row, tau % window


def _ring_chunks(n: np.ndarray, window: int) -> list[slice]:
    rows = max(1, RING_VALUES // max(window, 1))
    return [slice(start, start + rows) for start in range(0, n.shape[0], rows)]


def ring_values(buf: np.ndarray, slots: np.ndarray, count: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The values (k, ...) of the last ``n[i]`` events of slot ``slots[i]`` of the rings
    ``buf`` (slots, window, ...) whose keys saw ``count[i]`` events, slot after slot."""
    window = buf.shape[1]
    parts = []
    for part in _ring_chunks(n, window):
        row, pos = ring_span(count[part], n[part], window)
        parts.append(buf[slots[part][row], pos])
    return np.concatenate(parts) if parts else np.zeros((0, *buf.shape[2:]), buf.dtype)


def put_ring(
    buf: np.ndarray, slots: np.ndarray, count: np.ndarray, n: np.ndarray, values: np.ndarray
) -> None:
    """Inverse of :func:`ring_values`: store ``values`` in the rings; ValueError when they
    are not as many as ``n`` says."""
    if int(n.astype(np.int64).sum()) != values.shape[0]:
        raise ValueError(f"{values.shape[0]} ring values for {int(n.sum())} positions")
    window, at = buf.shape[1], 0
    for part in _ring_chunks(n, window):
        row, pos = ring_span(count[part], n[part], window)
        buf[slots[part][row], pos] = values[at : at + row.shape[0]]
        at += row.shape[0]


def set_words(words: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions and values of the non-zero entries of ``words`` (rows, ...) in rows
    where ``used``, a chunk of rows at a time (no copy of the whole array)."""
    width = int(np.prod(words.shape[1:], dtype=np.int64))
    flat = words.reshape(len(words), width)
    at_parts, value_parts = [], []
    for start in range(0, len(used), CHUNK_ROWS):
        rows = flat[start : start + CHUNK_ROWS]
        row, col = np.nonzero(rows * used[start : start + CHUNK_ROWS, None])
        at_parts.append((row + start) * width + col)
        value_parts.append(rows[row, col])
    dtype = np.uint32 if words.size < 2**32 else np.int64
    if not at_parts:
        return np.zeros(0, dtype=dtype), np.zeros(0, dtype=words.dtype)
    return np.concatenate(at_parts).astype(dtype), np.concatenate(value_parts)
