"""The embedded durable log: named, append-only, offset-addressed streams in SQLite (WAL).

Each stream is one SQLite database ``<log_dir>/<stream>.db`` holding
``records(offset INTEGER PRIMARY KEY, ts INTEGER, payload BLOB)``, the next offset to
assign, the positions committed by consumers, and the dead-letter origins already
replayed. Offsets start at 0, are dense, and are never reused (retention deletes the
oldest records but the next offset is kept apart from the records).

Retention (``apply_retention``) deletes the oldest records beyond a size or age limit but
never one a consumer has not processed yet: those are kept, and reported, until it has.

Every ``append`` is one transaction with ``synchronous=FULL``: when it returns, the
records are on disk (a SIGKILL right after loses nothing). Threads of one process share
one writer connection per stream behind a lock; other processes may append and read the
same files concurrently (WAL + ``BEGIN IMMEDIATE`` + a busy timeout).
"""

from __future__ import annotations

import re
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import repeat
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
import pyarrow as pa

from sluice.core.errors import NotFoundError, SchemaError, SourceError
from sluice.core.types import parse_duration
from sluice.storage.json_split import split_array
from sluice.storage.sqlite_wal import enable_wal

if TYPE_CHECKING:
    from sluice.core.settings import Settings

STREAM_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
RECORD_SCHEMA = pa.schema(
    [
        pa.field("_offset", pa.int64()),
        pa.field("_raw", pa.string()),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
    ]
)
_BUSY_TIMEOUT_MS = 30_000
_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS records (offset INTEGER PRIMARY KEY, ts INTEGER NOT NULL,
                                    payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('next_offset', 0);
CREATE TABLE IF NOT EXISTS consumers (name TEXT PRIMARY KEY, next_offset INTEGER NOT NULL,
                                      updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS replayed (origin TEXT PRIMARY KEY, offset INTEGER NOT NULL);
"""


def is_stream_name(stream: str) -> bool:
    """True when ``stream`` is a valid stream name (no path separators, not ``.``/``..``)."""
    return bool(STREAM_NAME.match(stream)) and stream not in {".", ".."}


def check_stream_name(stream: str) -> str:
    """Return ``stream`` if it is a valid stream name, else raise ValueError."""
    if not is_stream_name(stream):
        raise ValueError(
            f"invalid stream name {stream!r}: use 1-100 letters, digits, '_', '.' or '-'"
        )
    return stream


def _now_us() -> int:
    return time.time_ns() // 1000


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000
    )
    conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    enable_wal(conn)
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class _Stream:
    """One stream's connections: a writer and a reader, each behind its own lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer = _connect(path)
        self.writer.executescript(_SCHEMA_SQL)
        self.reader = _connect(path)
        self.write_lock = threading.Lock()
        self.read_lock = threading.Lock()
        self.appended = threading.Condition()

    def close(self) -> None:
        with self.write_lock, self.read_lock:
            self.writer.close()
            self.reader.close()


@dataclass(frozen=True)
class Retention:
    """What one retention pass did to a stream."""

    deleted: int = 0
    held: int = 0  # records past the limits kept because a consumer has not processed them
    holders: dict[str, int] = field(default_factory=dict)  # those consumers: next offset


class EmbeddedLog:
    """Named append-only streams under ``root``; thread-safe, durable when ``append`` returns.

    ``clock`` (microseconds since the epoch) stamps records and judges their age.
    """

    def __init__(self, root: Path | str, clock: Callable[[], int] = _now_us) -> None:
        self.root = Path(root)
        self.clock = clock
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()

    # -- streams ---------------------------------------------------------------------------
    def _path(self, stream: str) -> Path:
        return self.root / f"{check_stream_name(stream)}.db"

    def exists(self, stream: str) -> bool:
        """True when the stream has been created (by an append or ``create``)."""
        return stream in self._streams or self._path(stream).exists()

    def create(self, stream: str) -> None:
        """Create ``stream`` if it does not exist."""
        self._open(stream, create=True)

    def streams(self) -> list[str]:
        """Names of the existing streams, sorted."""
        if not self.root.exists():
            return []
        names = {p.stem for p in self.root.glob("*.db") if is_stream_name(p.stem)}
        return sorted(names | set(self._streams))

    def _open(self, stream: str, create: bool = False) -> _Stream:
        handle = self._streams.get(stream)
        if handle is not None:
            return handle
        path = self._path(stream)
        with self._lock:
            handle = self._streams.get(stream)
            if handle is None:
                if not create and not path.exists():
                    raise NotFoundError(f"stream {stream!r} does not exist")
                self.root.mkdir(parents=True, exist_ok=True)
                handle = self._streams[stream] = _Stream(path)
            return handle

    def close(self) -> None:
        """Close every open stream."""
        with self._lock:
            for handle in self._streams.values():
                handle.close()
            self._streams.clear()

    # -- writing ---------------------------------------------------------------------------
    def append(
        self, stream: str, payloads: list[bytes] | pa.Array, *, create: bool = True
    ) -> tuple[int, int]:
        """Append payloads in one durable transaction; return (first_offset, last_offset).

        An empty append returns ``(next, next - 1)`` and writes nothing.
        """
        items = _as_bytes_list(payloads)
        handle = self._open(stream, create=create)
        with handle.write_lock:
            first, last = _insert(handle.writer, items, self.clock())
        if items:
            with handle.appended:
                handle.appended.notify_all()
        return first, last

    def replay(
        self, stream: str, payloads: list[bytes], origins: list[str]
    ) -> tuple[int, int, int]:
        """Re-append dead letters once each (keyed by origin); return (count, first, last)."""
        if len(payloads) != len(origins):
            raise ValueError("replay needs one origin per payload")
        handle = self._open(stream)
        with handle.write_lock:
            conn = handle.writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                done = {row[0] for row in conn.execute("SELECT origin FROM replayed")}
                todo = [(p, o) for p, o in zip(payloads, origins, strict=True) if o not in done]
                first, last = _insert(conn, [p for p, _ in todo], self.clock(), in_tx=True)
                conn.executemany(
                    "INSERT INTO replayed(origin, offset) VALUES (?, ?)",
                    [(o, first + i) for i, (_, o) in enumerate(todo)],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        with handle.appended:
            handle.appended.notify_all()
        return len(todo), first, last

    # -- reading ---------------------------------------------------------------------------
    def read(
        self, stream: str, from_offset: int, max_records: int, until: int | None = None
    ) -> pa.Table:
        """Records with ``from_offset <= offset < until`` (at most ``max_records``), as Arrow."""
        handle = self._open(stream)
        stop = until if until is not None else sys.maxsize
        with handle.read_lock:
            rows = handle.reader.execute(
                "SELECT offset, payload, ts FROM records WHERE offset >= ? AND offset < ? "
                "ORDER BY offset LIMIT ?",
                (from_offset, stop, max_records),
            ).fetchall()
        if not rows:
            return RECORD_SCHEMA.empty_table()
        offsets, payloads, stamps = zip(*rows, strict=True)
        return pa.table(
            [
                pa.array(offsets, pa.int64()),
                pa.array(payloads, pa.binary()).cast(pa.string()),
                pa.array(stamps, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            ],
            schema=RECORD_SCHEMA,
        )

    def _scalar(self, stream: str, sql: str, args: tuple[object, ...] = ()) -> int | None:
        handle = self._open(stream)
        with handle.read_lock:
            row = handle.reader.execute(sql, args).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def end_offset(self, stream: str) -> int:
        """The offset the next appended record will get (one past the last record)."""
        return self._scalar(stream, "SELECT value FROM meta WHERE key = 'next_offset'") or 0

    def start_offset(self, stream: str) -> int:
        """The oldest retained offset (``end_offset`` when the stream is empty)."""
        first = self._scalar(stream, "SELECT MIN(offset) FROM records")
        return self.end_offset(stream) if first is None else first

    def wait(self, stream: str, offset: int, timeout: float) -> bool:
        """Wait until a record at or after ``offset`` exists; True if one does."""
        handle = self._open(stream)
        deadline = time.monotonic() + timeout
        while self.end_offset(stream) <= offset:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with handle.appended:  # other processes do not notify: re-check every 100 ms
                handle.appended.wait(min(remaining, 0.1))
        return True

    # -- consumers and backpressure ----------------------------------------------------
    def commit_consumer(self, stream: str, consumer: str, next_offset: int) -> None:
        """Record that ``consumer`` has durably processed every record before ``next_offset``."""
        handle = self._open(stream)
        with handle.write_lock:
            handle.writer.execute(
                "INSERT INTO consumers(name, next_offset, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET next_offset = excluded.next_offset, "
                "updated_at = excluded.updated_at",
                (consumer, next_offset, self.clock()),
            )

    def forget_consumer(self, stream: str, consumer: str) -> bool:
        """Drop ``consumer``'s position so it holds nothing back; False if it had none."""
        handle = self._open(stream)
        with handle.write_lock:
            cursor = handle.writer.execute("DELETE FROM consumers WHERE name = ?", (consumer,))
        return cursor.rowcount > 0

    def consumers(self, stream: str) -> dict[str, int]:
        """Committed next offsets by consumer name."""
        handle = self._open(stream)
        with handle.read_lock:
            rows = handle.reader.execute("SELECT name, next_offset FROM consumers").fetchall()
        return {name: int(offset) for name, offset in rows}

    def min_consumer_offset(self, stream: str) -> int | None:
        """The smallest committed consumer position, or None when nobody consumes the stream."""
        return self._scalar(stream, "SELECT MIN(next_offset) FROM consumers")

    def lag(self, stream: str) -> int:
        """Records not yet processed by the slowest consumer (0 when there is no consumer)."""
        low = self.min_consumer_offset(stream)
        return 0 if low is None else max(0, self.end_offset(stream) - low)

    def pending_bytes(self, stream: str) -> int:
        """Payload bytes not yet processed by the slowest consumer (0 without consumers)."""
        low = self.min_consumer_offset(stream)
        if low is None:
            return 0
        sql = "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM records WHERE offset >= ?"
        return self._scalar(stream, sql, (low,)) or 0

    def size_bytes(self, stream: str) -> int:
        """Total payload bytes retained in the stream."""
        sql = "SELECT COALESCE(SUM(LENGTH(payload)), 0) FROM records"
        return self._scalar(stream, sql) or 0

    # -- retention -----------------------------------------------------------------------
    def retain(
        self,
        stream: str,
        max_bytes: int | None = None,
        max_age: str | float | timedelta | None = None,
        keep_from: int | None = None,
    ) -> int:
        """Delete the oldest records beyond ``max_bytes`` or older than ``max_age``.

        Never deletes a record at or after ``keep_from`` nor after the slowest committed
        consumer. Returns the number of records deleted.
        """
        return self.apply_retention(stream, max_bytes, max_age, keep_from).deleted

    def apply_retention(
        self,
        stream: str,
        max_bytes: int | None = None,
        max_age: str | float | timedelta | None = None,
        keep_from: int | None = None,
    ) -> Retention:
        """Like :meth:`retain`; also count the records that consumers kept past the limits."""
        limit = self._retention_cutoff(stream, max_bytes, max_age)
        consumers = self.consumers(stream)
        holders = {name: offset for name, offset in consumers.items() if offset < limit}
        cutoff = min([limit, *holders.values()] + ([keep_from] if keep_from is not None else []))
        held = 0
        if holders:
            sql = "SELECT COUNT(*) FROM records WHERE offset >= ? AND offset < ?"
            held = self._scalar(stream, sql, (min(holders.values()), limit)) or 0
        if cutoff <= 0:
            return Retention(0, held, holders)
        handle = self._open(stream)
        with handle.write_lock:
            cursor = handle.writer.execute("DELETE FROM records WHERE offset < ?", (cutoff,))
        return Retention(cursor.rowcount, held, holders)

    def _retention_cutoff(
        self, stream: str, max_bytes: int | None, max_age: str | float | timedelta | None
    ) -> int:
        """First offset to keep according to size and age (0: keep everything)."""
        cutoff = 0
        if max_age is not None:
            age = max_age if isinstance(max_age, timedelta) else parse_duration(max_age)
            oldest_kept = self.clock() - int(age.total_seconds() * 1_000_000)
            first_young = self._scalar(
                stream, "SELECT MIN(offset) FROM records WHERE ts >= ?", (oldest_kept,)
            )
            cutoff = max(cutoff, self.end_offset(stream) if first_young is None else first_young)
        if max_bytes is not None:
            last_too_old = self._scalar(
                stream,
                """
                SELECT offset FROM (SELECT offset, SUM(LENGTH(payload))
                                    OVER (ORDER BY offset DESC) AS newer_bytes FROM records)
                WHERE newer_bytes > ? ORDER BY offset DESC LIMIT 1""",
                (max_bytes,),
            )
            if last_too_old is not None:
                cutoff = max(cutoff, last_too_old + 1)
        return cutoff


def _as_bytes_list(payloads: list[bytes] | pa.Array | pa.ChunkedArray) -> Sequence[bytes]:
    if isinstance(payloads, pa.ChunkedArray):
        payloads = payloads.combine_chunks()
    if isinstance(payloads, pa.Array):
        if payloads.null_count:
            raise SchemaError("cannot append null payloads to the log")
        return _ArrowPayloads(payloads.cast(pa.binary()))
    return list(payloads)


class _ArrowPayloads(Sequence[bytes]):
    """An Arrow binary array read as bytes a slice at a time (no list of them all at once)."""

    _SLICE = 10_000

    def __init__(self, array: pa.Array) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.array[index].to_pylist()
        return self.array[index].as_py()

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.array), self._SLICE):
            yield from self.array.slice(start, self._SLICE).to_pylist()


def _insert(
    conn: sqlite3.Connection, payloads: Sequence[bytes], ts: int, in_tx: bool = False
) -> tuple[int, int]:
    """Insert payloads at the next offsets (in its own transaction unless ``in_tx``)."""
    if not in_tx:
        conn.execute("BEGIN IMMEDIATE")
    try:
        first = int(conn.execute("SELECT value FROM meta WHERE key = 'next_offset'").fetchone()[0])
        last = first + len(payloads) - 1
        if payloads:
            conn.executemany(
                "INSERT INTO records(offset, ts, payload) VALUES (?, ?, ?)",
                zip(range(first, last + 1), repeat(ts), payloads),
            )
            conn.execute("UPDATE meta SET value = ? WHERE key = 'next_offset'", (last + 1,))
        if not in_tx:
            conn.execute("COMMIT")
    except BaseException:
        if not in_tx:
            conn.execute("ROLLBACK")
        raise
    return first, last


# -- shared registry: the API and log sources of one process share one EmbeddedLog per root --
_logs: dict[Path, EmbeddedLog] = {}
_logs_lock = threading.Lock()


def open_log(root: Path | str) -> EmbeddedLog:
    """Return the process-wide EmbeddedLog for ``root`` (appends wake in-process readers)."""
    key = Path(root).absolute()
    with _logs_lock:
        log = _logs.get(key)
        if log is None:
            log = _logs[key] = EmbeddedLog(key)
        return log


# -- parsing pushed events (HTTP ingest and ``sluice ingest``) ------------------------------
class PayloadError(SchemaError):
    """A pushed body is not a JSON object, a JSON array of objects, or NDJSON of objects."""

    def __init__(self, message: str, line: int | None = None, item: int | None = None) -> None:
        self.line, self.item, self.reason = line, item, message
        where = ""
        if line is not None:
            where = f"line {line}: "
        elif item is not None:
            where = f"item {item}: "
        super().__init__(f"{where}{message}")


def parse_events(body: bytes, first_line: int = 1) -> list[bytes] | pa.Array:
    """Split and validate a JSON object, JSON array of objects or NDJSON into event payloads.

    An array's events come back as one Arrow string array of the elements' own text.
    """
    text = body.strip()
    if not text:
        raise PayloadError("the body is empty; send a JSON object, a JSON array or NDJSON")
    if text[:1] == b"[":
        return _parse_array(text)
    if text[:1] == b"{":
        try:
            single = orjson.loads(text)
        except orjson.JSONDecodeError:
            single = None
        if isinstance(single, dict):
            return [_dump(single)]
    return _parse_ndjson(body, first_line)


# The deepest record orjson writes back (it refuses deeper ones): deeper records are
# refused at the door in every format, rather than failing later when re-serialised.
MAX_NESTING = 254


def _maybe_deep(text: bytes, records: int) -> bool:
    """Whether a record in ``text`` could nest deeper than MAX_NESTING (a cheap upper bound)."""
    return text.count(b"{") + text.count(b"[") - records >= MAX_NESTING


def _dump(value: object, *, line: int | None = None, item: int | None = None) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        message = f"the record is nested more than {MAX_NESTING} levels deep"
        raise PayloadError(message, line=line, item=item) from None


def _parse_array(text: bytes) -> pa.Array:
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        line = text.count(b"\n", 0, exc.pos) + 1
        raise PayloadError(f"invalid JSON: {exc.msg}", line=line) from None
    bad = next((i for i, item in enumerate(items) if type(item) is not dict), None)
    if bad is not None:
        raise PayloadError(f"expected a JSON object, got {_json_kind(items[bad])}", item=bad)
    count = len(items)
    if _maybe_deep(text, count):  # rare: only then is each record written back to check
        for i, value in enumerate(items):
            _dump(value, item=i)
    del items  # the elements are kept as slices of the body, not re-serialised one by one
    return split_array(text, count)


def _parse_ndjson(body: bytes, first_line: int) -> list[bytes]:
    lines = body.split(b"\n")
    events = [line.strip() for line in lines]
    events = [e for e in events if e]
    try:  # fast path: one C-level parse of all lines joined as an array
        items = orjson.loads(b"[" + b",".join(events) + b"]")
        if len(items) == len(events) and all(type(item) is dict for item in items):
            if not _maybe_deep(body, len(events)):
                return events
            for item in items:
                _dump(item)
            return events
    except (orjson.JSONDecodeError, PayloadError):
        pass
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise PayloadError(f"invalid JSON: {exc.msg}", line=number) from None
        if type(value) is not dict:
            raise PayloadError(f"expected a JSON object, got {_json_kind(value)}", line=number)
        if _maybe_deep(line, 1):
            _dump(value, line=number)
    raise PayloadError("invalid NDJSON")  # unreachable: some line above failed


def _json_kind(value: object) -> str:
    names = {
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


def ingest_file(
    settings: Settings,
    stream: str,
    source: str | Path | IO[bytes],
    chunk_lines: int = 10_000,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int, int]:
    """Append the NDJSON (or one JSON array) in a file or ``-`` (stdin) to ``stream``.

    Each chunk of lines is validated before it is appended; on a bad line the error names
    it, and the chunks before it stay appended. ``progress`` gets the bytes read so far
    after each chunk. Returns (count, first_offset, last_offset).
    """
    check_stream_name(stream)
    log = open_log(settings.log_dir)
    if isinstance(source, str | Path) and str(source) == "-":
        return _ingest_stream(log, stream, sys.stdin.buffer, "<stdin>", chunk_lines, progress)
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise SourceError(f"{path}: no such file")
        with path.open("rb") as handle:
            return _ingest_stream(log, stream, handle, str(path), chunk_lines, progress)
    return _ingest_stream(log, stream, source, "<input>", chunk_lines, progress)


def _ingest_stream(
    log: EmbeddedLog,
    stream: str,
    handle: IO[bytes],
    name: str,
    chunk_lines: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, int, int]:
    count, first, last = 0, -1, -1
    line_no, read = 1, 0
    for chunk in _chunks(handle, chunk_lines):
        read += len(chunk)
        if progress is not None:
            progress(read)
        try:
            events = parse_events(chunk, first_line=line_no)
        except PayloadError as exc:
            done = f" ({count} events before it were appended)" if count else ""
            raise PayloadError(f"{name}: {exc}{done}") from None
        line_no += chunk.count(b"\n")
        if events:
            start, end = log.append(stream, events)
            first = start if first < 0 else first
            count, last = count + len(events), end
    return count, first, last


def _chunks(handle: IO[bytes], chunk_lines: int) -> Iterable[bytes]:
    buffer: list[bytes] = []
    started = False
    for line in handle:
        if not started and line.strip():
            started = True
            if line.lstrip()[:1] == b"[":  # a JSON array is validated as a whole
                yield b"".join(buffer) + line + handle.read()
                return
        buffer.append(line)
        if len(buffer) >= chunk_lines:
            yield b"".join(buffer)
            buffer = []
    if buffer:
        yield b"".join(buffer)
