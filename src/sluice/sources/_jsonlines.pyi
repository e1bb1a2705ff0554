"""Type stub of the compiled JSON lines pass (``native/jsonlines.c``)."""

from typing import Any

def decode(
    offsets: Any,
    data: Any,
    validity: Any | None,
    start: int,
    n: int,
    wide: bool,
    names: tuple[bytes, ...],
    kinds: bytes,
    values: list[Any],
    valid: list[Any],
    str_offsets: list[Any | None],
    unsure: Any,
    /,
) -> list[int]:
    """Decode JSON lines into the given column buffers; bytes used per string column."""

def newlines(data: Any, /) -> bytearray:
    """Positions (int64) of the newline bytes of ``data``."""

def prefixed_numbers(prefix: bytes, numbers: Any, /) -> tuple[bytearray, bytearray]:
    """Int32 offsets and data of the strings ``prefix + str(number)`` (int64 numbers)."""
