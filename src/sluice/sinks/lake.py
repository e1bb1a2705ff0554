"""The ``lake`` sink: appends each epoch to a Delta table, exactly once per epoch.

Idempotency uses Delta app transactions: every commit records, for each of its marks, the
transaction ``(app_id="sluice:{stream}:{table}", version=epoch)`` atomically with the data
(``stream`` is the pipeline, or ``pipeline#topic/partition`` for a partition task), so an
epoch the table already holds (or any earlier one) is skipped on replay.

Options (beside ``type`` and ``table``):

* ``partition_by``: a column or list of columns; ``none`` (or ``[]``) for no partitions.
  Default: ``event_date``, a ``date32`` column derived from the pipeline's ``event_time``
  column (UTC date) when the first batch has that column, else no partitions. An existing
  table keeps the partitioning it was created with.

* ``compact_every``: after this many commits (default 100; 0 = never) the sink compacts the
  table's small files and writes a Delta log checkpoint, in a background thread, so that a
  table taking an epoch every 100 ms does not slow down as it ages.
* ``log_retention``: how long Delta log entries older than the last log checkpoint are
  kept (a duration such as ``0s``, ``1h``, ``30d``; default ``0s``). Each commit lists the
  log folder, so a log of thousands of entries makes every commit slower; the table's data
  and its exactly-once marks are in the checkpoints, and Sluice reads no older versions.
  Set a longer retention to keep time travel to older versions for other tools.

The sink keeps the table's snapshot in memory, and on a local table the log is read again
only when another commit landed since (the log entry after the last one it knows exists: a
compaction, another writer) or a commit of its own failed. A remote table is read again
before every write.

On a local table that needs no schema change, an append bypasses delta-rs: the sink
writes the Parquet file(s) and the log entry itself (``sluice.sinks.lake_append``), so an
epoch does not pay delta-rs's write plan and snapshot rebuild (about 10 ms of CPU). Its
own commits then only advance the version and the exactly-once marks it keeps in memory;
the snapshot object is brought up to date when another commit lands or before a
delta-rs write.

New columns are merged into the table schema (nullable); columns whose name starts with
``__`` (internal bookkeeping) are not written; all-null columns of Arrow type ``null`` are
left out until they carry a typed value (Delta has no null type).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from sluice.config.models import SinkConfig
from sluice.core.errors import ConfigError, SinkError, TransientSinkError
from sluice.core.types import parse_duration
from sluice.sinks.base import Marks, Sink, SinkContext
from sluice.sinks.lake_append import commit_entry, direct_append_ok, split_partitions, write_files
from sluice.storage.lake_tables import (
    COMMIT_LOST,
    DELTA_LOG,
    LOG_GAP,
    is_remote,
    listing_retry,
    missing_bucket,
    open_delta,
    storage_options,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable

EVENT_DATE = "event_date"
_NO_PARTITIONS = {"", "none", "null", "false"}
COMPACT_EVERY = 100
RETENTION = "delta.logRetentionDuration"
COMMIT_ATTEMPTS = 16  # direct appends that lost their version to another writer, then give up
log = logging.getLogger("sluice.sinks")


def parse_partition_by(value: Any) -> list[str] | None:
    """Normalise the ``partition_by`` option: a list of columns, [] for none, None = default."""
    if value is None:
        return []
    if isinstance(value, str):
        return [] if value.strip().lower() in _NO_PARTITIONS else [value]
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"partition_by must be a column name or a list of them, got {value!r}")


def lake_ready(table: pa.Table) -> pa.Table:
    """Drop ``__``-prefixed and null-typed columns, which Delta does not store."""
    keep = [
        field.name
        for field in table.schema
        if not field.name.startswith("__") and not pa.types.is_null(field.type)
    ]
    return table if len(keep) == table.num_columns else table.select(keep)


def with_event_date(table: pa.Table, event_time: str | None) -> pa.Table:
    """Add the ``event_date`` column (UTC date of ``event_time``) unless it is there."""
    if EVENT_DATE in table.column_names:
        return table
    column = table.column(event_time) if event_time in table.column_names else None
    if column is not None and (pa.types.is_timestamp(column.type) or pa.types.is_date(column.type)):
        if pa.types.is_timestamp(column.type) and column.type.tz is not None:
            column = column.cast(pa.timestamp(column.type.unit))  # wall clock in UTC
        dates = pc.cast(column, pa.date32())
    else:
        dates = pa.nulls(table.num_rows, pa.date32())
    return table.append_column(pa.field(EVENT_DATE, pa.date32()), dates)


def _same_schema(data: pa.Table, delta: DeltaTable | None) -> bool:
    """True when ``data`` has the table's schema exactly: the write needs no schema merge."""
    if delta is None:
        return False
    return data.schema.equals(pa.schema(delta.schema().to_arrow()), check_metadata=False)


class LakeSink(Sink):
    """Appends epochs to the Delta table ``settings.lake_path(config.table)``."""

    def __init__(self, config: SinkConfig, context: SinkContext) -> None:
        super().__init__(config, context)
        if not config.table:
            raise ConfigError("a lake sink needs a table name", key="table")
        self.table_name = config.table
        self.uri = context.settings.lake_path(config.table)
        self.app_id = self.app_id_of(context.pipeline)
        options = config.options
        self._partition_option = (
            parse_partition_by(options["partition_by"]) if "partition_by" in options else None
        )
        self._delta: DeltaTable | None = None
        self._stale = True  # the handle may have missed a commit: read the log again
        # the newest table version known (the handle's, or a direct append's after it), the
        # marks of direct appends the handle may not hold yet, and whether they may be used
        self._version = -1
        self._marks: dict[str, int] = {}
        self._held: dict[str, int] = {}  # the handle's marks, read once per snapshot
        self._direct: bool | None = None
        self._schema: pa.Schema | None = None
        self.compact_every = int(options.get("compact_every", COMPACT_EVERY))
        retention = parse_duration(str(options.get("log_retention", "0s"))).total_seconds()
        self.log_retention = f"interval {int(retention)} seconds"
        self._commits = 0
        self._cleanup_due = False  # a compaction wrote a log checkpoint since the last cleanup
        self._maintenance: threading.Thread | None = None
        self._committing = threading.Lock()  # held while a direct append creates its entry

    def app_id_of(self, stream: str) -> str:
        """The Delta app-transaction id of ``stream``'s writes to this table."""
        return f"sluice:{stream}:{self.table_name}"

    def write(self, table: pa.Table, epoch: int | Marks) -> bool:
        """Append ``table`` as ``epoch`` in one Delta commit; False if already written."""
        marks = self.marks(epoch)
        if table.num_rows == 0:
            return True
        try:
            return self._write(table, marks)
        except FileNotFoundError:
            # a log entry this handle's snapshot still needed was cleaned up meanwhile (by
            # a compaction's log checkpoint): read the table from its checkpoint, once more
            self._forget()
            try:
                return self._write(table, marks)
            except FileNotFoundError as exc:
                raise TransientSinkError(f"lake table {self.table_name!r}: {exc}") from exc

    def _write(self, table: pa.Table, marks: dict[str, int]) -> bool:
        # a direct append's files and partition columns, kept for a retry at the next version
        written: tuple[list[str], list[dict[str, Any]]] | None = None
        for _ in range(COMMIT_ATTEMPTS):
            delta = self._refresh()
            if delta is not None and self._holds_any(delta, marks):
                return False
            data, partitions = self._prepare(lake_ready(table), delta)
            direct = self._direct_data(data, delta) if delta is not None else None
            parts = split_partitions(direct, partitions) if direct is not None else None
            if parts is None:
                self._commit(data, partitions, marks, delta)
                return True
            # the files stay valid while the table's schema (else parts is None above) and
            # partition columns do
            if written is None or written[0] != partitions:
                written = (partitions, self._write_files(parts))
            if self._append(written[1], partitions, marks):
                return True
            self._stale = True  # another writer took the version: read its commit, retry
        raise TransientSinkError(
            f"lake table {self.table_name!r}: {COMMIT_ATTEMPTS} commits lost to other writers"
        )

    def _holds_any(self, delta: DeltaTable, marks: dict[str, int]) -> bool:
        return any(self._mark(delta, stream) >= epoch for stream, epoch in marks.items())

    def _mark(self, delta: DeltaTable, stream: str) -> int:
        """The last epoch of ``stream`` in the table (-1 if none)."""
        app_id = self.app_id_of(stream)
        held = self._held.get(app_id)
        if held is None:
            version = delta.transaction_version(app_id)
            held = self._held[app_id] = version if version is not None else -1
        return max(held, self._marks.get(app_id, -1))

    def last_epoch(self) -> int | None:
        """The last epoch this pipeline committed to the table (None if none)."""
        delta = self._refresh()
        if delta is None:
            return None
        epoch = self._mark(delta, self.context.pipeline)
        return epoch if epoch >= 0 else None

    def _direct_data(self, data: pa.Table, delta: DeltaTable) -> pa.Table | None:
        """``data`` in the table's column order when it may be appended without delta-rs
        (see ``lake_append``), else None."""
        if is_remote(self.uri) or not self.compact_every:  # the compactions checkpoint the log
            return None
        if self._direct is None:
            self._direct = direct_append_ok(delta)
            self._schema = pa.schema(delta.schema().to_arrow())
        schema = self._schema
        if not self._direct or schema is None or sorted(data.column_names) != sorted(schema.names):
            return None
        if data.column_names != schema.names:
            data = data.select(schema.names)
        return data if data.schema.equals(schema, check_metadata=False) else None

    def _write_files(self, parts: list[tuple[dict[str, str], pa.Table]]) -> list[dict[str, Any]]:
        """Write ``parts`` as the table's Parquet files; their ``add`` actions."""
        try:
            return write_files(self.uri.removeprefix("file://"), parts)
        except OSError as exc:
            raise self._store_error(exc) from exc

    def _append(
        self, actions: list[dict[str, Any]], partitions: list[str], marks: dict[str, int]
    ) -> bool:
        """Commit the files of ``actions`` as the next version; False if another writer
        committed that version first."""
        root = self.uri.removeprefix("file://")
        transactions = {self.app_id_of(stream): epoch for stream, epoch in marks.items()}
        self._stale = True  # until this commit is known to have landed
        try:
            with self._committing:
                if not commit_entry(root, self._version + 1, actions, transactions, partitions):
                    return False
        except OSError as exc:
            raise self._store_error(exc) from exc
        self._stale = False
        self._version += 1
        self._marks.update(transactions)
        self._committed()
        return True

    def close(self) -> None:
        """Wait for a running compaction and forget the cached table handle."""
        if self._maintenance is not None:
            self._maintenance.join()
            self._maintenance = None
        self._forget()
        self._stale = True

    def _forget(self) -> None:
        """Drop the handle and what was known with it (read the table from scratch)."""
        self._delta = None
        self._version = -1
        self._marks = {}
        self._held = {}
        self._direct = None

    def _refresh(self) -> DeltaTable | None:
        """The table's snapshot: the one in memory unless the log moved on since."""
        if self._delta is not None and not self._stale and not self._log_moved():
            return self._delta
        try:
            if self._delta is not None:
                try:
                    listing_retry(self._delta.update_incremental)
                except Exception:  # log entries it needs were cleaned up: read the checkpoint
                    self._forget()
            if self._delta is None:
                self._delta = open_delta(self.uri)
        except OSError as exc:
            raise self._store_error(exc) from exc
        self._stale = False
        self._direct = None  # the protocol, settings or schema may have changed
        self._held = {}
        self._version = self._delta.version() if self._delta is not None else -1
        return self._delta

    def _store_error(self, exc: Exception) -> SinkError:
        """Permanent when the bucket does not exist (retrying cannot help), else transient."""
        bucket = missing_bucket(self.uri)
        if bucket is not None:
            return SinkError(
                f"lake table {self.table_name!r}: the bucket {bucket!r} does not exist "
                f"(lake {self.context.settings.lake_root}); create it first"
            )
        return TransientSinkError(f"lake table {self.table_name!r}: {exc}")

    def _prepare(self, table: pa.Table, delta: DeltaTable | None) -> tuple[pa.Table, list[str]]:
        if delta is not None:
            partitions = list(delta.metadata().partition_columns)
        elif self._partition_option is not None:
            partitions = self._partition_option
        else:
            has_time = self.context.event_time in table.column_names
            partitions = [EVENT_DATE] if has_time or EVENT_DATE in table.column_names else []
        if EVENT_DATE in partitions:
            table = with_event_date(table, self.context.event_time)
        missing = [p for p in partitions if p not in table.column_names]
        if missing:
            raise SinkError(
                f"lake table {self.table_name!r} is partitioned by {missing} "
                f"but the batch has no such column"
            )
        return table, partitions

    def _commit(
        self,
        data: pa.Table,
        partitions: list[str],
        marks: dict[str, int],
        delta: DeltaTable | None,
    ) -> None:
        from deltalake import (
            CommitProperties,
            PostCommitHookProperties,
            Transaction,
            write_deltalake,
        )
        from deltalake.exceptions import CommitFailedError, DeltaError, SchemaMismatchError

        self._stale = True  # until this commit is known to have landed
        if delta is not None and delta.version() < self._version:
            # direct appends since: delta-rs commits after them
            listing_retry(delta.update_incremental)
        try:
            write_deltalake(
                delta if delta is not None else self.uri,
                data,
                mode="append",
                schema_mode=None if _same_schema(data, delta) else "merge",
                partition_by=partitions or None,
                storage_options=storage_options(self.uri) if delta is None else None,
                configuration={RETENTION: self.log_retention} if delta is None else None,
                commit_properties=CommitProperties(
                    app_transactions=[
                        Transaction(self.app_id_of(stream), epoch)
                        for stream, epoch in sorted(marks.items())
                    ]
                ),
                # the log is cleaned by _cleanup, never while a compaction reads it
                post_commithook_properties=PostCommitHookProperties(cleanup_expired_logs=False),
            )
        except FileNotFoundError:
            raise  # see write()
        except CommitFailedError as exc:
            raise TransientSinkError(f"lake table {self.table_name!r}: {exc}") from exc
        except OSError as exc:
            raise self._store_error(exc) from exc
        except SchemaMismatchError as exc:
            raise SinkError(f"lake table {self.table_name!r}: schema mismatch: {exc}") from exc
        except DeltaError as exc:
            raise SinkError(f"lake table {self.table_name!r}: {exc}") from exc
        if delta is None:
            self._delta = open_delta(self.uri)
        self._stale = False
        self._direct = None  # the write may have merged the schema
        self._held = {}
        self._version = self._delta.version() if self._delta is not None else -1
        self._committed()

    def _committed(self) -> None:
        """After each commit of this sink: log cleanup and compaction when due."""
        self._commits += 1
        if self._cleanup_due and not (self._maintenance and self._maintenance.is_alive()):
            self._cleanup()
        if self.compact_every and self._commits % self.compact_every == 0:
            self._start_maintenance()

    def _cleanup(self) -> None:
        """Drop log entries before the last checkpoint (past the retention), from this
        handle, which holds the newest version: a handle behind it could need them."""
        self._cleanup_due = False
        if self._delta is None:
            return
        try:
            self._delta.cleanup_metadata()
        except Exception as exc:  # the entries stay; the next compaction tries again
            log.warning("cleaning the log of lake table %r failed: %s", self.table_name, exc)

    def _log_moved(self) -> bool:
        """True when the table has a commit after the newest one known (always, remote)."""
        if is_remote(self.uri):
            return True
        entry = f"{self._version + 1:020d}.json"
        return os.path.exists(os.path.join(self.uri.removeprefix("file://"), DELTA_LOG, entry))

    def _start_maintenance(self) -> None:
        """Compact small files and checkpoint the Delta log in the background (one at a time)."""
        if self._maintenance is not None and self._maintenance.is_alive():
            return
        self._maintenance = threading.Thread(
            target=self._maintain, name=f"sluice-compact-{self.table_name}", daemon=True
        )
        self._maintenance.start()

    def _maintain(self) -> None:
        from deltalake import PostCommitHookProperties

        try:
            table = listing_retry(lambda: open_delta(self.uri), guard=self._committing)
            if table is None:
                return
            hooks = PostCommitHookProperties(cleanup_expired_logs=False)
            # each step lists the log while this sink's appends go on: see listing_retry
            guard = self._committing  # the last attempt holds back the appends
            listing_retry(
                lambda: table.optimize.compact(post_commithook_properties=hooks),
                attempts=3,
                guard=guard,
                races=(LOG_GAP, COMMIT_LOST),  # appends took every version it tried
            )
            if table.metadata().configuration.get(RETENTION) != self.log_retention:
                listing_retry(
                    lambda: table.alter.set_table_properties({RETENTION: self.log_retention}),
                    guard=guard,
                )
            listing_retry(table.create_checkpoint, guard=guard)
            self._cleanup_due = True
        except Exception as exc:  # a failed compaction only leaves the table as it was
            log.warning("compacting lake table %r failed: %s", self.table_name, exc)


def write_lake_table(
    context: SinkContext, table_name: str, table: pa.Table, epoch: int | Marks
) -> bool:
    """Write a side output or dead-letter batch to the lake table ``table_name`` (one-shot)."""
    sink = LakeSink(SinkConfig(type="lake", table=table_name), context)
    try:
        return sink.write(table, epoch)
    finally:
        sink.close()
