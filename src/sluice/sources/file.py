"""The ``file`` source: JSON lines, CSV and Parquet files, globs and directories, resumable.

Files are read in sorted order, in bounded chunks (``chunk_bytes``; a record longer than a
chunk grows that one read). A position holds, per file, the offset of the next unread
record (bytes for JSON/CSV, rows for Parquet), its line number, and whether the file is
done, so ``open(position)`` resumes exactly and ``poll(until=...)`` replays exactly.

Options: ``path`` (file, directory or glob; relative to the working directory),
``format`` (``json``, ``csv``, ``parquet``; default from the extension), ``csv``
(``delimiter``, ``header``, ``columns``), ``chunk_bytes`` (default 16 MiB),
``poll_interval`` (seconds between looks for new files).
"""

from __future__ import annotations

import copy
import glob
import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sluice.config.models import SourceConfig
from sluice.core.errors import ConfigError, SourceError
from sluice.sources.base import Position, Source, SourceBatch, SourceContext
from sluice.sources.lines import Records, cut_point, non_blank, origin_column, split_records

FORMAT_SUFFIXES = {
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
RAW_FORMATS = {"json": "json", "csv": "csv", "parquet": "arrow"}
_GLOB_CHARS = set("*?[")
_BLANK_GAP_LIMIT = 1 << 20  # bytes of trailing blank lines a replay looks through


class CsvOptions(BaseModel):
    """How CSV files are parsed."""

    model_config = ConfigDict(extra="forbid")

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    header: bool = True
    columns: list[str] | None = None

    @model_validator(mode="after")
    def _names_known(self) -> CsvOptions:
        if not self.header and not self.columns:
            raise ValueError("csv files without a header need 'columns'")
        return self


class FileOptions(BaseModel):
    """Options of the ``file`` source."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    format: Literal["json", "jsonl", "ndjson", "csv", "parquet"] | None = None
    csv: CsvOptions = Field(default_factory=CsvOptions)
    chunk_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    poll_interval: float = Field(default=1.0, gt=0)


def parse_options(config: SourceConfig) -> FileOptions:
    """Validate the ``file`` source options; errors raise ConfigError naming the key."""
    try:
        return FileOptions.model_validate({**config.options, "format": config.format})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = "source." + ".".join(str(p) for p in first["loc"])
        raise ConfigError(first["msg"], key=key) from None


@dataclass
class Chunk:
    """Rows read from one file, buffered until polled, with the position after each row."""

    file: str
    table: pa.Table
    ends: np.ndarray  # offset just after each row
    next_lines: np.ndarray  # line number of the record after each row
    end_offset: int  # offset just after the chunk (trailing blank lines included)
    end_line: int
    eof: bool
    start: int = 0  # rows already polled

    @property
    def rows(self) -> int:
        """Rows in the chunk."""
        return self.table.num_rows

    @property
    def remaining(self) -> int:
        """Rows not polled yet."""
        return self.table.num_rows - self.start


class FileReader(ABC):
    """Reads one file from an offset, a chunk at a time."""

    def __init__(self, path: str, offset: int, line: int, options: FileOptions) -> None:
        self.path, self.offset, self.line, self.options = path, offset, line, options
        self.name = Path(path).name

    @abstractmethod
    def read(self) -> Chunk:
        """Read the next chunk (empty with ``eof`` at the end of the file)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the file."""

    def _chunk(
        self,
        table: pa.Table,
        ends: np.ndarray,
        next_lines: np.ndarray,
        end: tuple[int, int],
        eof: bool,
    ) -> Chunk:
        self.offset, self.line = end
        return Chunk(self.path, table, ends, next_lines, end[0], end[1], eof)


class TextReader(FileReader):
    """Reads whole records of a text file in chunks of about ``chunk_bytes``."""

    quoted = False

    def __init__(self, path: str, offset: int, line: int, options: FileOptions) -> None:
        super().__init__(path, offset, line, options)
        try:
            self._handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise SourceError(f"file source: cannot open {path}: {exc.strerror}") from None

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def read_records(self) -> tuple[memoryview, bool]:
        """Bytes of whole records from the current offset, and whether they end the file."""
        self._handle.seek(self.offset)
        want = self.options.chunk_bytes
        data = self._handle.read(want)
        while True:
            at_eof = len(data) < want
            cut = cut_point(data, at_eof, self.quoted)
            if cut or at_eof:
                size = os.fstat(self._handle.fileno()).st_size
                return memoryview(data)[:cut], self.offset + cut >= size
            data += self._handle.read(want)  # a record longer than the chunk: grow this read
            want *= 2

    def positions(
        self, data: memoryview, records: Records, keep: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """Line numbers, end offsets and next-record lines of the kept records."""
        lines = self.line + records.lines
        end = (self.offset + len(data), self.line + records.newlines)
        next_lines = np.append(lines[1:], np.int64(end[1]))
        return lines[keep], self.offset + records.ends[keep], next_lines[keep], end


class JsonLinesReader(TextReader):
    """JSON lines: one ``_raw`` string per non-blank line."""

    def read(self) -> Chunk:
        """Read the next chunk of lines."""
        data, eof = self.read_records()
        records = split_records(data, strip=" \t\r\n")
        keep = non_blank(records.text)
        lines, ends, next_lines, end = self.positions(data, records, keep)
        all_kept = bool(keep.all())
        columns = {
            "_raw": records.text if all_kept else records.text.filter(pa.array(keep)),
            "__origin": origin_column(self.name, lines),
        }
        if records.invalid_utf8 is not None:
            columns["__invalid_utf8"] = pa.array(records.invalid_utf8[keep])
        return self._chunk(pa.table(columns), ends, next_lines, end, eof)


class CsvReader(TextReader):
    """CSV: one string column per CSV column; malformed rows carry ``_raw`` and ``__error``."""

    quoted = True

    def __init__(self, path: str, offset: int, line: int, options: FileOptions) -> None:
        super().__init__(path, offset, line, options)
        self.columns = list(options.csv.columns or [])
        if options.csv.header:
            self._read_header()

    def _read_header(self) -> None:
        """Take the column names from the first record; start after it when at offset 0."""
        start = (self.offset, self.line)
        self.offset, self.line = 0, 1
        data, _ = self.read_records()
        first = split_records(data, quoted=True)
        if first.ends.size == 0:
            self.offset, self.line = start
            return
        header = bytes(data[: int(first.ends[0])])
        try:
            names = pcsv.read_csv(pa.py_buffer(header), parse_options=self._parse_options())
        except pa.ArrowInvalid as exc:
            raise SourceError(
                f"file source: cannot read the CSV header of {self.path}: {exc}"
            ) from None
        self.columns = self.columns or names.column_names
        if start[0] == 0:
            self.offset, self.line = len(header), 1 + header.count(b"\n")
        else:
            self.offset, self.line = start

    def _parse_options(self, handler: Any = None, multiline: bool = True) -> Any:
        return pcsv.ParseOptions(
            delimiter=self.options.csv.delimiter,
            newlines_in_values=multiline,
            invalid_row_handler=handler,
        )

    def read(self) -> Chunk:
        """Read the next chunk of CSV records."""
        data, eof = self.read_records()
        for multiline in (True, False):  # quoted newlines, or (stray quotes) plain lines
            records = split_records(data, quoted=multiline)
            keep = non_blank(records.text)
            text = records.text.filter(pa.array(keep))
            table = self._parse(data, text, records.invalid_utf8 is not None, multiline)
            if table is not None:
                break
        assert table is not None
        lines, ends, next_lines, end = self.positions(data, records, keep)
        table = table.append_column("__origin", origin_column(self.name, lines))
        if records.invalid_utf8 is not None:
            table = table.append_column("__invalid_utf8", pa.array(records.invalid_utf8[keep]))
        return self._chunk(table, ends, next_lines, end, eof)

    def _parse(
        self, data: memoryview | bytes, text: pa.Array, replaced: bool, multiline: bool
    ) -> pa.Table | None:
        """Parse the kept records (None: the parser saw other record boundaries)."""
        if not self.columns or len(text) == 0:
            return pa.table({c: pa.nulls(len(text), pa.string()) for c in self.columns})
        if replaced:  # parse the text with replacement characters, not the invalid bytes
            data = "\n".join(text.to_pylist()).encode()
        try:
            good, errors = self._read_csv(data, multiline)
        except pa.ArrowInvalid:
            return None if multiline else self._parse_each(text)
        if good.num_rows + len(errors) != len(text):
            return None if multiline else self._parse_each(text)
        return self._merge_errors(good, text, errors) if errors else good

    def _read_csv(
        self, data: memoryview | bytes, multiline: bool = True
    ) -> tuple[pa.Table, list[tuple[int, str]]]:
        """Parse CSV bytes to string columns; return the good rows and the malformed ones."""
        errors: list[tuple[int, str]] = []

        def on_invalid(row: Any) -> str:
            message = (
                f"malformed CSV row: expected {row.expected_columns} columns, "
                f"got {row.actual_columns}"
            )
            errors.append((row.number, message))
            return "skip"

        good = pcsv.read_csv(
            pa.py_buffer(data),
            read_options=pcsv.ReadOptions(
                column_names=self.columns, use_threads=False, block_size=max(len(data) + 1, 1 << 20)
            ),
            parse_options=self._parse_options(on_invalid, multiline),
            convert_options=pcsv.ConvertOptions(
                column_types=dict.fromkeys(self.columns, pa.string()), strings_can_be_null=True
            ),
        )
        return good, errors

    def _parse_each(self, text: pa.Array) -> pa.Table:
        """Last resort for a chunk no parse lines up with: one record at a time."""
        rows: list[pa.Table] = []
        for record in text.to_pylist():
            try:
                good, errors = self._read_csv(record.encode(), multiline=False)
            except pa.ArrowInvalid as exc:
                good, errors = self._empty_rows(), [(1, f"malformed CSV row: {exc}")]
            if good.num_rows == 1 and not errors:
                rows.append(good)
            else:
                message = errors[0][1] if errors else "malformed CSV row"
                record_text = pa.array([record], pa.string())
                rows.append(self._merge_errors(self._empty_rows(), record_text, [(1, message)]))
        return pa.concat_tables(rows, promote_options="permissive")

    def _empty_rows(self) -> pa.Table:
        return pa.table({c: pa.array([], pa.string()) for c in self.columns})

    def _merge_errors(
        self, good: pa.Table, text: pa.Array, errors: list[tuple[int, str]]
    ) -> pa.Table:
        """Put malformed records back at their place, with ``_raw`` and ``__error`` set."""
        bad_index = np.array([number - 1 for number, _ in errors], np.int64)
        good_index = np.setdiff1d(np.arange(len(text)), bad_index)
        good = good.append_column("_raw", pa.nulls(good.num_rows, pa.string()))
        good = good.append_column("__error", pa.nulls(good.num_rows, pa.string()))
        bad = pa.table(
            {
                **{c: pa.nulls(len(errors), pa.string()) for c in self.columns},
                "_raw": text.take(pa.array(bad_index)),
                "__error": pa.array([message for _, message in errors], pa.string()),
            }
        )
        order = np.argsort(np.concatenate([good_index, bad_index]), kind="stable")
        return pa.concat_tables([good, bad]).take(pa.array(order))


class ParquetReader(FileReader):
    """Parquet: typed record batches, positions counted in rows."""

    batch_rows = 65_536

    def __init__(self, path: str, offset: int, line: int, options: FileOptions) -> None:
        super().__init__(path, offset, line, options)
        import pyarrow.parquet as pq

        try:
            self._file = pq.ParquetFile(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise SourceError(f"file source: cannot read Parquet file {path}: {exc}") from None
        meta = self._file.metadata
        group_rows = np.array(
            [meta.row_group(i).num_rows for i in range(meta.num_row_groups)], np.int64
        )
        self.total = int(group_rows.sum())
        bounds = np.concatenate([[0], np.cumsum(group_rows)])
        group = int(np.searchsorted(bounds, offset, side="right")) - 1
        self._skip = offset - int(bounds[group]) if group < len(group_rows) else 0
        groups = list(range(max(group, 0), len(group_rows)))
        self._batches = iter(
            self._file.iter_batches(
                batch_size=self.batch_rows, row_groups=groups, use_threads=False
            )
            if groups and offset < self.total
            else ()
        )

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def read(self) -> Chunk:
        """Read the next batch of rows."""
        batch = next(self._batches, None)
        while batch is not None and self._skip >= batch.num_rows:
            self._skip -= batch.num_rows
            batch = next(self._batches, None)
        if batch is None:
            table = self._file.schema_arrow.empty_table()
        else:
            table = pa.Table.from_batches([batch.slice(self._skip)])
            self._skip = 0
        rows = self.offset + np.arange(1, table.num_rows + 1, dtype=np.int64)
        table = table.append_column("__origin", origin_column(self.name, rows))
        end = self.offset + table.num_rows
        return self._chunk(table, rows, rows + 1, (end, end + 1), end >= self.total)


READERS: dict[str, type[FileReader]] = {
    "json": JsonLinesReader,
    "csv": CsvReader,
    "parquet": ParquetReader,
}


def open_reader(fmt: str, path: str, state: dict[str, Any], options: FileOptions) -> FileReader:
    """Open ``path`` at ``state`` (its offset and line) with the reader for ``fmt``."""
    return READERS[fmt](path, int(state.get("offset", 0)), int(state.get("line", 1)), options)


class FileSource(Source):
    """Reads JSON lines, CSV or Parquet files in bounded chunks with exact positions."""

    prefetch_safe = True  # the runner may read the next batch while one is processed

    def __init__(self, config: SourceConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self.options = parse_options(config)
        self.format = self._resolve_format()
        self._files: list[str] = []
        self._state: dict[str, dict[str, Any]] = {}
        self._reader: FileReader | None = None
        self._chunk: Chunk | None = None
        self._opened = False

    # -- files -----------------------------------------------------------------------
    def _resolve_format(self) -> str:
        fmt = self.options.format
        if fmt in ("jsonl", "ndjson"):
            return "json"
        if fmt is not None:
            return fmt
        suffix = Path(self.options.path.rstrip("/")).suffix.lower()
        if suffix in FORMAT_SUFFIXES:
            return FORMAT_SUFFIXES[suffix]
        raise ConfigError(
            f"cannot tell the format of {self.options.path!r} from its extension; "
            "set format: json, csv or parquet",
            key="source.format",
        )

    def _pattern(self) -> tuple[Path, bool]:
        """The absolute path or glob, and whether it is a glob."""
        path = Path(self.options.path).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        return path, bool(_GLOB_CHARS & set(self.options.path))

    def _discover(self) -> None:
        """Refresh the sorted list of files to read."""
        path, is_glob = self._pattern()
        if is_glob:
            found = [Path(p) for p in glob.glob(str(path), recursive=True)]
        elif path.is_dir():
            suffixes = {s for s, f in FORMAT_SUFFIXES.items() if f == self.format}
            found = [p for p in path.rglob("*") if p.suffix.lower() in suffixes]
        elif path.exists():
            found = [path]
        else:
            raise SourceError(
                f"file source: {self.options.path!r} does not exist (looked for {path})"
            )
        self._files = sorted(
            str(p) for p in found if p.is_file() and not p.name.startswith((".", "_"))
        )

    # -- protocol ----------------------------------------------------------------------
    def open(self, position: Position | None) -> None:
        """Start at ``position`` (None: every file from its beginning)."""
        files = (position or {}).get("files", {})
        self._state = {str(k): dict(v) for k, v in files.items()}
        self._close_reader()
        self._chunk = None
        self._discover()
        self._opened = True

    @property
    def position(self) -> Position:
        """Where reading resumes: per file the next offset and line, and whether it is done."""
        return {"files": copy.deepcopy(self._state)}

    def poll(
        self, max_rows: int, timeout: float, until: Position | None = None
    ) -> SourceBatch | None:
        """Return up to ``max_rows`` rows of one file (with ``until``: only rows before it)."""
        if not self._opened:
            self.open(None)
        if until is not None and until.get("files", {}) == self._state:
            return SourceBatch(pa.table({}), RAW_FORMATS[self.format], copy.deepcopy(until))
        deadline = time.monotonic() + timeout
        while True:
            batch = self._poll_once(max(1, max_rows), until)
            remaining = deadline - time.monotonic()
            if batch is not None or until is not None or remaining <= 0 or not self._may_grow():
                return batch
            time.sleep(min(self.options.poll_interval, remaining))
            self._discover()

    def _may_grow(self) -> bool:
        """True when new files may still appear (a glob or a directory)."""
        path, is_glob = self._pattern()
        return is_glob or path.is_dir()

    @property
    def exhausted(self) -> bool:
        """True when every file found is read to its end."""
        if not self._opened:
            return False
        self._discover()
        pending = self._chunk is not None and self._chunk.remaining > 0
        return not pending and self._next_file() is None

    def close(self) -> None:
        """Close the open file."""
        self._close_reader()
        self._chunk = None

    def lag(self) -> dict[str, Any]:
        """Bytes still to read per unfinished JSON/CSV file (Parquet: not reported)."""
        if self.format == "parquet":
            return {}
        backlog = {}
        for file in self._files:
            state = self._state.get(file, {})
            if not state.get("done") and Path(file).exists():
                backlog[file] = {"bytes": Path(file).stat().st_size - state.get("offset", 0)}
        return backlog

    # -- reading -----------------------------------------------------------------------
    def _next_file(self) -> str | None:
        return next((f for f in self._files if not self._state.get(f, {}).get("done")), None)

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _target(self, file: str, until: Position | None) -> float | None:
        """Offset in ``file`` that ``until`` stops at (inf: the whole file; None: none)."""
        if until is None:
            return float("inf")
        mark = until.get("files", {}).get(file)
        if mark is None:
            return None
        return float("inf") if mark.get("done") else float(mark["offset"])

    def _fill(self, until: Position | None) -> Chunk | None:
        """The buffered chunk if it has rows left, else the next chunk that may be read."""
        while self._chunk is None or self._chunk.remaining == 0:
            if self._chunk is not None:
                self._finish_chunk(self._chunk)
                self._chunk = None
            file = self._next_file()
            if file is None or self._target(file, until) is None:
                return None
            state = self._state.get(file, {"offset": 0, "line": 1, "done": False})
            if self._target(file, until) == state["offset"]:
                return None
            if self._reader is None or self._reader.path != file:
                self._close_reader()
                self._reader = open_reader(self.format, file, state, self.options)
            self._chunk = self._reader.read()
        return self._chunk

    def _finish_chunk(self, chunk: Chunk) -> None:
        """Move the file's position past the whole chunk (trailing blank lines included)."""
        self._state[chunk.file] = {
            "offset": chunk.end_offset,
            "line": chunk.end_line,
            "done": chunk.eof,
        }
        if chunk.eof:
            self._close_reader()

    def _poll_once(self, max_rows: int, until: Position | None) -> SourceBatch | None:
        chunk = self._fill(until)
        if chunk is None:
            return None
        target = self._target(chunk.file, until)
        assert target is not None
        stop = (
            chunk.rows
            if target == float("inf")
            else int(np.searchsorted(chunk.ends, target, side="right"))
        )
        take = min(max_rows, stop - chunk.start)
        if take <= 0:
            return None
        last = chunk.start + take
        data = chunk.table.slice(chunk.start, take)
        chunk.start = last
        self._state[chunk.file] = {
            "offset": int(chunk.ends[last - 1]),
            "line": int(chunk.next_lines[last - 1]),
            "done": False,
        }
        mark = until["files"][chunk.file] if until is not None else None
        if mark is not None and self._only_blank_before(chunk.file, chunk.ends[last - 1], mark):
            self._state[chunk.file] = dict(mark)  # replay ends exactly where the epoch ended
            if chunk.remaining == 0:
                self._chunk = None
        elif chunk.remaining == 0:
            self._finish_chunk(chunk)
            self._chunk = None
        return SourceBatch(data=data, raw_format=RAW_FORMATS[self.format], position=self.position)

    def _only_blank_before(self, file: str, offset: int, mark: dict[str, Any]) -> bool:
        """True when nothing but blank lines lies between ``offset`` and the ``mark``."""
        end = os.path.getsize(file) if mark.get("done") else int(mark["offset"])
        if self.format == "parquet" or end - offset > _BLANK_GAP_LIMIT:
            return bool(offset == end)
        if end < offset:
            return False
        with open(file, "rb") as handle:
            handle.seek(offset)
            gap = handle.read(end - offset)
        return not gap.strip(b"\r\n" if self.format == "csv" else b" \t\r\n")
